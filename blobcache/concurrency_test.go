package blobcache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

// safety bounds a test that would otherwise hang on a bug; it is never what
// a test waits for.
const safety = 30 * time.Second

// Readers read random ranges through Reader, and through WaitBlock+ReadAt,
// while writers fill the blob in random order; every byte read must be right.
func TestCutThrough(t *testing.T) {
	seeds := uint64(12)
	if testing.Short() {
		seeds = 4
	}
	for seed := range seeds {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 100))
			ct := newContent(rng, 1+rng.IntN(64*testBS))
			c := openCache(t, t.TempDir(), Options{BlockSize: testBS})
			b := mustAcquire(t, c, ct)
			defer b.Release()
			ctx, cancel := context.WithTimeout(context.Background(), safety)
			defer cancel()

			var wg sync.WaitGroup
			errs := make(chan error, 64)
			for range 6 { // range readers
				off := rng.Int64N(b.Size())
				n := rng.Int64N(b.Size() - off + 1)
				bufLen := 1 + rng.IntN(3*testBS)
				r, err := b.Reader(ctx, off, n)
				if err != nil {
					t.Fatalf("Reader(%d, %d): %v", off, n, err)
				}
				wg.Go(func() {
					defer r.Close()
					got, err := io.ReadAll(bufio(r, bufLen))
					if err != nil {
						errs <- fmt.Errorf("reader [%d,+%d): %w", off, n, err)
					} else if !bytes.Equal(got, ct.data[off:off+n]) {
						errs <- fmt.Errorf("reader [%d,+%d): wrong bytes", off, n)
					}
				})
			}
			for range 3 { // block waiters
				order := rng.Perm(b.Blocks())
				wg.Go(func() {
					for _, i := range order {
						if err := b.WaitBlock(ctx, i); err != nil {
							errs <- err
							return
						}
						off, n := b.BlockRange(i)
						got := make([]byte, n)
						if _, err := b.ReadAt(got, off); err != nil && err != io.EOF {
							errs <- fmt.Errorf("ReadAt block %d: %w", i, err)
							return
						}
						if !bytes.Equal(got, ct.block(testBS, i)) {
							errs <- fmt.Errorf("block %d: wrong bytes", i)
							return
						}
					}
				})
			}
			wg.Go(func() {
				if err := b.Wait(ctx); err != nil {
					errs <- fmt.Errorf("Wait: %w", err)
				}
			})
			// Two writers over random orders that overlap in their last two
			// thirds, so that duplicate writes of a block race.
			perm := rng.Perm(b.Blocks())
			for w := range 2 {
				order := perm[w*len(perm)/3:]
				wg.Go(func() {
					for _, i := range order {
						if err := b.WriteBlock(i, bytes.NewReader(ct.block(testBS, i))); err != nil {
							errs <- fmt.Errorf("WriteBlock(%d): %w", i, err)
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if !b.Complete() {
				t.Fatal("blob not complete")
			}
		})
	}
}

// bufio reads from r in chunks of at most n bytes, to exercise partial reads.
func bufio(r io.Reader, n int) io.Reader { return &chunked{r, n} }

type chunked struct {
	r io.Reader
	n int
}

func (c *chunked) Read(p []byte) (int, error) { return c.r.Read(p[:min(len(p), c.n)]) }

// A wrong block fails verification: waiters and started readers get
// ErrCorrupt, every block is dropped, and a refill verifies.
func TestCorruption(t *testing.T) {
	rng := rand.New(rand.NewPCG(8, 8))
	ct := newContent(rng, 4*testBS-10)
	c := openCache(t, t.TempDir(), Options{BlockSize: testBS})
	b := mustAcquire(t, c, ct)
	defer b.Release()
	ctx, cancel := context.WithTimeout(context.Background(), safety)
	defer cancel()

	waiting := make(chan struct{}, 100)
	testHookWaiting = func() {
		select {
		case waiting <- struct{}{}:
		default:
		}
	}
	defer func() { testHookWaiting = nil }()
	waitErr := make(chan error, 1)
	go func() { waitErr <- b.Wait(ctx) }()
	<-waiting // Wait is blocked before any block arrives

	started, err := b.Reader(ctx, 0, b.Size())
	if err != nil {
		t.Fatal(err)
	}
	defer started.Close()
	// fresh has returned nothing when the blocks drop, so it waits for the
	// refill. Block 2 is right in both fills, so whichever it reads is right.
	fresh, err := b.Reader(ctx, 2*testBS, testBS)
	if err != nil {
		t.Fatal(err)
	}
	freshGot := make(chan []byte, 1)
	go func() {
		defer fresh.Close()
		got, err := io.ReadAll(fresh)
		if err != nil {
			t.Errorf("fresh reader: %v", err)
		}
		freshGot <- got
	}()

	mustWrite(t, b, ct, 0)
	if _, err := io.ReadFull(started, make([]byte, testBS)); err != nil {
		t.Fatalf("read block 0: %v", err)
	}
	bad := bytes.Clone(ct.block(testBS, 1))
	bad[17] ^= 1
	if err := b.WriteBlock(1, bytes.NewReader(bad)); err != nil {
		t.Fatalf("WriteBlock(1, bad): %v", err)
	}
	mustWrite(t, b, ct, 3)
	err = b.WriteBlock(2, bytes.NewReader(ct.block(testBS, 2)))
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("completing WriteBlock = %v, want ErrCorrupt", err)
	}
	if err := <-waitErr; !errors.Is(err, ErrCorrupt) {
		t.Errorf("Wait = %v, want ErrCorrupt", err)
	}
	if _, err := started.Read(make([]byte, 10)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Read after the drop by a started reader = %v, want ErrCorrupt", err)
	}
	if b.Complete() || len(b.Missing()) != b.Blocks() {
		t.Fatalf("after failure: Complete %v, Missing %v; want false, all", b.Complete(), b.Missing())
	}
	if s := c.Stats(); s.VerifyFailures != 1 || s.Verified != 0 {
		t.Errorf("Stats = %+v, want 1 failure, 0 verified", s)
	}
	if _, err := b.ReadAt(make([]byte, 1), 0); !errors.Is(err, ErrNotPresent) {
		t.Errorf("ReadAt after drop = %v, want ErrNotPresent", err)
	}

	for _, i := range rng.Perm(b.Blocks()) {
		mustWrite(t, b, ct, i)
	}
	if !b.Complete() || !bytes.Equal(readAll(t, b), ct.data) {
		t.Fatal("refill not complete and equal")
	}
	if got := <-freshGot; !bytes.Equal(got, ct.block(testBS, 2)) {
		t.Error("fresh reader: wrong bytes")
	}
	if err := b.Wait(ctx); err != nil {
		t.Errorf("Wait after refill: %v", err)
	}
	if s := c.Stats(); s.VerifyFailures != 1 || s.Verified != 1 {
		t.Errorf("Stats = %+v, want 1 failure, 1 verified", s)
	}
}

// Property: with a peer writing wrong bytes concurrently with a good source,
// a blob that becomes complete always holds the right content.
func TestNeverVerifiedWrong(t *testing.T) {
	seeds := uint64(10)
	if testing.Short() {
		seeds = 3
	}
	for seed := range seeds {
		rng := rand.New(rand.NewPCG(seed, 9))
		ct := newContent(rng, 1+rng.IntN(16*testBS))
		dir := t.TempDir()
		c := openCache(t, dir, Options{BlockSize: testBS})
		b := mustAcquire(t, c, ct)
		n := b.Blocks()
		badOrder := append(rng.Perm(n), rng.Perm(n)...)
		var wg sync.WaitGroup
		wg.Go(func() { // the bad peer
			for _, i := range badOrder {
				bad := bytes.Clone(ct.block(testBS, i))
				bad[len(bad)/2]++
				b.WriteBlock(i, bytes.NewReader(bad)) // errors expected
			}
		})
		goodErr := make(chan error, 1)
		goodSeed := rng.Uint64()
		wg.Go(func() { // the good source: fills what is missing until complete
			rng := rand.New(rand.NewPCG(goodSeed, 0))
			for !b.Complete() {
				miss := b.Missing()
				if len(miss) == 0 {
					// Someone is verifying; wait for the outcome.
					if err := b.Verify(); err != nil && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrNotPresent) {
						goodErr <- err
						return
					}
					continue
				}
				rng.Shuffle(len(miss), func(i, j int) { miss[i], miss[j] = miss[j], miss[i] })
				for _, i := range miss {
					err := b.WriteBlock(i, bytes.NewReader(ct.block(testBS, i)))
					if err != nil && !errors.Is(err, ErrCorrupt) {
						goodErr <- err
						return
					}
				}
			}
		})
		wg.Wait()
		close(goodErr)
		if err := <-goodErr; err != nil {
			t.Fatalf("seed %d: good writer: %v", seed, err)
		}
		if !bytes.Equal(readAll(t, b), ct.data) {
			t.Fatalf("seed %d: complete blob has wrong content (%d failures)", seed, c.Stats().VerifyFailures)
		}
		b.Release()
		c.Close()
		// And what is on disk under the final name is right too.
		c2 := openCache(t, dir, Options{BlockSize: testBS, Rehash: true})
		b2, ok := c2.Lookup(ct.digest)
		if !ok || !b2.Complete() {
			t.Fatalf("seed %d: verified blob lost on reopen with Rehash", seed)
		}
		b2.Release()
		c2.Close()
	}
}

// Waiters stop with ctx's error and with ErrClosed.
func TestWaitEnds(t *testing.T) {
	rng := rand.New(rand.NewPCG(10, 10))
	ct := newContent(rng, 2*testBS)
	c := openCache(t, t.TempDir(), Options{BlockSize: testBS})
	b := mustAcquire(t, c, ct)
	defer b.Release()

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r, err := b.Reader(ctx, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Read(make([]byte, 1)); !errors.Is(err, context.Canceled) {
		t.Errorf("Read with canceled ctx = %v, want context.Canceled", err)
	}
	r.Close()
	if _, err := r.Read(make([]byte, 1)); !errors.Is(err, ErrReleased) {
		t.Errorf("Read after Close = %v, want ErrReleased", err)
	}
	if err := b.WaitBlock(ctx, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("WaitBlock with canceled ctx = %v, want context.Canceled", err)
	}

	waiting := make(chan struct{}, 100)
	testHookWaiting = func() {
		select {
		case waiting <- struct{}{}:
		default:
		}
	}
	defer func() { testHookWaiting = nil }()
	done := make(chan error, 1)
	go func() { done <- b.WaitBlock(context.Background(), 1) }()
	<-waiting
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Errorf("WaitBlock across Close = %v, want ErrClosed", err)
	}
	if err := b.WriteBlock(0, bytes.NewReader(ct.block(testBS, 0))); !errors.Is(err, ErrClosed) {
		t.Errorf("WriteBlock after Close = %v, want ErrClosed", err)
	}
	if _, err := c.Acquire(ct.digest, int64(len(ct.data))); !errors.Is(err, ErrClosed) {
		t.Errorf("Acquire after Close = %v, want ErrClosed", err)
	}
}

// Drop forgets blocks found bad before the blob is complete, persistently,
// without disturbing readers of other blocks; refilled, the blob verifies,
// which it would not if the running hash kept the dropped bytes.
func TestDrop(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	ct := newContent(rng, 6*testBS-3)
	dir := t.TempDir()
	c := openCache(t, dir, Options{BlockSize: testBS})
	b := mustAcquire(t, c, ct)
	ctx, cancel := context.WithTimeout(context.Background(), safety)
	defer cancel()

	// Blocks 0-3 arrive, block 2 wrong: the hash runs past it.
	bad := bytes.Clone(ct.block(testBS, 2))
	bad[5] ^= 0x40
	for i := range 4 {
		data := ct.block(testBS, i)
		if i == 2 {
			data = bad
		}
		if err := b.WriteBlock(i, bytes.NewReader(data)); err != nil {
			t.Fatalf("WriteBlock(%d): %v", i, err)
		}
	}
	// A reader of block 0, part-way through.
	other, err := b.Reader(ctx, 0, testBS)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	half := make([]byte, testBS/2)
	if _, err := io.ReadFull(other, half); err != nil {
		t.Fatal(err)
	}
	if err := b.Drop(2, 3); err != nil {
		t.Fatalf("Drop(2, 3): %v", err)
	}
	// A reader of the dropped block waits for it to come back.
	later, err := b.Reader(ctx, 2*testBS, 2*testBS)
	if err != nil {
		t.Fatal(err)
	}
	laterGot := make(chan []byte, 1)
	go func() {
		defer later.Close()
		got, err := io.ReadAll(later)
		if err != nil {
			t.Errorf("reader of the dropped range: %v", err)
		}
		laterGot <- got
	}()
	if b.Has(2) || !b.Has(1) || !b.Has(3) || b.NextMissing(0) != 2 {
		t.Fatalf("after Drop(2, 3): missing %v, want [2 4 5]", b.Missing())
	}
	if _, err := b.ReadAt(make([]byte, 1), 2*testBS); !errors.Is(err, ErrNotPresent) {
		t.Errorf("ReadAt of a dropped block = %v, want ErrNotPresent", err)
	}
	rest := make([]byte, testBS/2)
	if _, err := io.ReadFull(other, rest); err != nil || !bytes.Equal(append(half, rest...), ct.block(testBS, 0)) {
		t.Errorf("reader of another block disturbed by Drop: %v", err)
	}

	// The drop is on disk: a copy of the files, as a crash leaves them,
	// lacks block 2.
	crashed := copyPartial(t, c, b, ct)
	c2 := openCache(t, crashed, Options{BlockSize: testBS})
	b2, ok := c2.Lookup(ct.digest)
	if !ok {
		t.Fatal("copied partial blob not found")
	}
	if got := b2.Missing(); !slices.Equal(got, []int{2, 4, 5}) {
		t.Errorf("after reopening, missing %v, want [2 4 5]", got)
	}
	b2.Release()

	for _, i := range []int{4, 5, 2} {
		mustWrite(t, b, ct, i)
	}
	if !b.Complete() || !bytes.Equal(readAll(t, b), ct.data) {
		t.Fatalf("refilled blob: complete %v; want complete and right", b.Complete())
	}
	if got := <-laterGot; !bytes.Equal(got, ct.data[2*testBS:4*testBS]) {
		t.Error("reader waiting on the dropped block got the wrong bytes")
	}
	if err := b.Drop(0, 1); err == nil {
		t.Error("Drop on a complete blob succeeded")
	}
	if s := c.Stats(); s.VerifyFailures != 0 || !b.Has(0) {
		t.Errorf("after Drop on a complete blob: %+v, block 0 present %v", s, b.Has(0))
	}
	b.Release()
}
