package lazy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// faultyBlob serves a blob but misbehaves on reads of the data area (before
// the TOC), so that opening the layer still works.
type faultyBlob struct {
	b         BytesReader
	tocOffset int64
	corrupt   atomic.Int64  // this many data reads come back with a byte flipped (-1: all)
	block     chan struct{} // if not nil, data reads wait for it to close (or ctx)
	entered   chan struct{} // if not nil, told of each data read (when it has room)
	dataReads atomic.Int64
}

func (f *faultyBlob) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off >= f.tocOffset {
		return f.b.ReadAt(ctx, p, off)
	}
	f.dataReads.Add(1)
	select {
	case f.entered <- struct{}{}:
	default:
	}
	if f.block != nil {
		select {
		case <-f.block:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	n, err := f.b.ReadAt(ctx, p, off)
	if c := f.corrupt.Load(); n > 0 && (c < 0 || (c > 0 && f.corrupt.CompareAndSwap(c, c-1))) {
		p[min(n-1, 12)] ^= 0x5a // early in the deflate stream: everything after depends on it
	}
	return n, err
}

// openFaulty returns a reader over the test image whose layers are served
// by faultyBlobs, the merged tree, and the faulty blobs.
func openFaulty(t *testing.T, opts Options) (*reader, *node, []*faultyBlob) {
	t.Helper()
	blobs, digests := testBlobs(t)
	r := newReader(opts.withDefaults())
	t.Cleanup(r.close)
	var ixs []*Index
	var fbs []*faultyBlob
	for i, b := range blobs {
		ix, err := TOC(context.Background(), BytesReader(b), int64(len(b)), digests[i])
		if err != nil {
			t.Fatal(err)
		}
		fb := &faultyBlob{b: b, tocOffset: ix.TOCOffset()}
		ixs, fbs = append(ixs, ix), append(fbs, fb)
		r.layers = append(r.layers, layerSource{digest: digests[i], ix: ix, blob: r.counted(fb)})
	}
	root, err := merge(ixs)
	if err != nil {
		t.Fatal(err)
	}
	return r, root, fbs
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestCorruptChunksAreNeverReturned(t *testing.T) {
	for _, tc := range []struct {
		name         string
		corrupt      int64
		wantErr      bool
		wantFailures int64
	}{
		{"always corrupt", -1, true, 2},
		{"corrupt once, fine on retry", 1, false, 1},
		{"corrupt twice", 2, true, 2},
		{"never corrupt", 0, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, root, fbs := openFaulty(t, Options{Logger: quiet})
			fbs[0].corrupt.Store(tc.corrupt)
			big := root.lookup("data/big")
			dest := bytes.Repeat([]byte{0xee}, 1000)
			n, err := r.readFile(context.Background(), big, dest, 5)
			if tc.wantErr {
				if !errors.Is(err, errVerify) || n != 0 {
					t.Fatalf("read = %d, %v; want 0 bytes and a verification error", n, err)
				}
				if !bytes.Equal(dest, bytes.Repeat([]byte{0xee}, 1000)) {
					t.Error("a failed read wrote into the caller's buffer")
				}
			} else if err != nil || string(dest[:n]) != bigBody[5:1005] {
				t.Fatalf("read = %d, %v; want the file's bytes", n, err)
			}
			s := r.stats()
			if s.VerifyFailures != tc.wantFailures {
				t.Errorf("VerifyFailures = %d, want %d", s.VerifyFailures, tc.wantFailures)
			}
			if tc.wantErr && s.ReadErrors != 1 {
				t.Errorf("ReadErrors = %d, want 1", s.ReadErrors)
			}
			// What failed is not cached: once the source heals, reads work.
			fbs[0].corrupt.Store(0)
			if n, err := r.readFile(context.Background(), big, dest, 5); err != nil || string(dest[:n]) != bigBody[5:1005] {
				t.Errorf("read after healing = %d, %v", n, err)
			}
		})
	}
}

func TestReadTimeout(t *testing.T) {
	r, root, fbs := openFaulty(t, Options{Logger: quiet, ReadTimeout: 50 * time.Millisecond})
	fbs[0].block = make(chan struct{}) // layer 0 never answers
	n, err := r.readFile(context.Background(), root.lookup("data/big"), make([]byte, 10), 0)
	if !errors.Is(err, context.DeadlineExceeded) || n != 0 {
		t.Fatalf("read from a blob that never answers = %d, %v; want a deadline error", n, err)
	}
	if s := r.stats(); s.Timeouts != 1 {
		t.Errorf("Timeouts = %d, want 1", s.Timeouts)
	}
	// Other layers still serve.
	buf := make([]byte, 10)
	if n, err := r.readFile(context.Background(), root.lookup("opaque/new"), buf, 0); err != nil || string(buf[:n]) != "new" {
		t.Errorf("read of another layer's file = %q, %v", buf[:n], err)
	}
}

func TestConcurrentReadsShareOneFetch(t *testing.T) {
	r, root, fbs := openFaulty(t, Options{Logger: quiet})
	const readers = 5
	joined := make(chan struct{}, readers)
	r.joined = joined
	fbs[0].block = make(chan struct{})
	big := root.lookup("data/big")
	var wg sync.WaitGroup
	errs := make([]error, readers)
	for i := range readers {
		wg.Go(func() {
			buf := make([]byte, 100)
			n, err := r.readFile(context.Background(), big, buf, int64(i*100))
			if err == nil && string(buf[:n]) != bigBody[i*100:i*100+100] {
				err = fmt.Errorf("wrong bytes")
			}
			errs[i] = err
		})
	}
	for range readers - 1 {
		<-joined
	}
	close(fbs[0].block)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("reader %d: %v", i, err)
		}
	}
	if got := fbs[0].dataReads.Load(); got != 1 {
		t.Errorf("%d blob reads for one chunk read by %d readers, want 1", got, readers)
	}
}

func TestCloseStopsFetches(t *testing.T) {
	r, root, fbs := openFaulty(t, Options{Logger: quiet, ReadTimeout: time.Hour})
	fbs[0].block = make(chan struct{})
	fbs[0].entered = make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		_, err := r.readFile(context.Background(), root.lookup("data/big"), make([]byte, 10), 0)
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("read ended before it fetched: %v", err)
	case <-fbs[0].entered:
	}
	r.close() // must not wait for the hour
	if err := <-done; err == nil {
		t.Error("read succeeded from a closed reader")
	}
}

func TestLRU(t *testing.T) {
	c := newLRU(10)
	k := func(i int) chunkKey { return chunkKey{blobOff: int64(i)} }
	c.add(k(1), make([]byte, 4))
	c.add(k(2), make([]byte, 4))
	if _, ok := c.get(k(1)); !ok { // 1 is now the most recent
		t.Fatal("1 missing")
	}
	c.add(k(3), make([]byte, 4)) // 12 > 10: evicts 2
	if _, ok := c.get(k(2)); ok {
		t.Error("least recently used entry not evicted")
	}
	for _, i := range []int{1, 3} {
		if _, ok := c.get(k(i)); !ok {
			t.Errorf("%d evicted", i)
		}
	}
	c.add(k(4), make([]byte, 11)) // larger than the cache: not kept
	if _, ok := c.get(k(4)); ok || c.bytes() != 8 {
		t.Errorf("oversized entry kept; cache holds %d bytes", c.bytes())
	}
}

func TestMountRefusesBadLayers(t *testing.T) {
	blobs, digests := testBlobs(t)
	good := Layer{Digest: "l0", Size: int64(len(blobs[0])), TOCDigest: digests[0], Blob: BytesReader(blobs[0])}
	noTOC, wrongTOC, noBlob := good, good, good
	noTOC.TOCDigest = ""
	wrongTOC.TOCDigest = digests[1]
	noBlob.Blob = nil
	for _, tc := range []struct {
		name   string
		layers []Layer
		want   string
	}{
		{"no layers", nil, "no layers"},
		{"no TOC digest", []Layer{good, noTOC}, "no TOC digest"},
		{"no blob", []Layer{noBlob}, "no blob reader"},
		{"wrong TOC digest", []Layer{good, wrongTOC}, "TOC digest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// These fail before anything is mounted: no FUSE needed.
			fsys, err := Mount(context.Background(), t.TempDir(), tc.layers, Options{Logger: quiet})
			if err == nil {
				fsys.Close()
				t.Fatal("Mount accepted bad layers")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

// keepingBlob keeps every range it reads, like the worker's block cache: a
// second read of a range returns the kept bytes. It reads through relay, and
// from origin when a Refetch asks for it.
type keepingBlob struct {
	relay, origin BlobReader
	mu            sync.Mutex
	kept          map[int64][]byte // by offset
	refetches     []bool           // fromOrigin of each Refetch
}

func (k *keepingBlob) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if b, ok := k.kept[off]; ok && len(b) >= len(p) {
		return copy(p, b), nil
	}
	n, err := k.relay.ReadAt(ctx, p, off)
	if err == nil {
		k.kept[off] = bytes.Clone(p[:n])
	}
	return n, err
}

func (k *keepingBlob) Refetch(ctx context.Context, off, n int64, fromOrigin bool) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.refetches = append(k.refetches, fromOrigin)
	src := k.relay
	if fromOrigin {
		src = k.origin
	}
	b := make([]byte, n)
	if err := readFull(ctx, src, b, off); err != nil {
		return err
	}
	k.kept[off] = b
	return nil
}

// A chunk that fails verification is not read again from where it is kept:
// it is fetched again, from the relay once, then from the origin.
func TestBadChunksAreRefetched(t *testing.T) {
	tests := []struct {
		name           string
		relayCorrupt   int64 // data reads the relay corrupts (-1: all)
		originCorrupt  bool
		wantErr        bool
		wantRefetches  []bool
		wantVerifyFail int64
	}{
		{"relay always corrupt", -1, false, false, []bool{false, true}, 2},
		{"relay corrupt once", 1, false, false, []bool{false}, 1},
		{"origin corrupt too", -1, true, true, []bool{false, true}, 3},
		{"nothing corrupt", 0, false, false, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			blobs, digests := testBlobs(t)
			r := newReader(Options{Logger: quiet}.withDefaults())
			t.Cleanup(r.close)
			var ixs []*Index
			var kbs []*keepingBlob
			for i, b := range blobs {
				ix, err := TOC(context.Background(), BytesReader(b), int64(len(b)), digests[i])
				if err != nil {
					t.Fatal(err)
				}
				relay := &faultyBlob{b: b, tocOffset: ix.TOCOffset()}
				var origin BlobReader = BytesReader(b)
				if i == 0 {
					relay.corrupt.Store(tt.relayCorrupt)
					if tt.originCorrupt {
						bad := &faultyBlob{b: b, tocOffset: ix.TOCOffset()}
						bad.corrupt.Store(-1)
						origin = bad
					}
				}
				kb := &keepingBlob{relay: relay, origin: origin, kept: map[int64][]byte{}}
				ixs, kbs = append(ixs, ix), append(kbs, kb)
				r.layers = append(r.layers, layerSource{digest: digests[i], ix: ix, blob: r.counted(kb), refetch: kb})
			}
			root, err := merge(ixs)
			if err != nil {
				t.Fatal(err)
			}
			dest := make([]byte, 1000)
			n, err := r.readFile(context.Background(), root.lookup("data/big"), dest, 5)
			if tt.wantErr {
				if !errors.Is(err, errVerify) || n != 0 {
					t.Fatalf("read = %d, %v; want a verification error", n, err)
				}
			} else if err != nil || string(dest[:n]) != bigBody[5:1005] {
				t.Fatalf("read = %d, %v; want the file's bytes", n, err)
			}
			if got := kbs[0].refetches; fmt.Sprint(got) != fmt.Sprint(tt.wantRefetches) {
				t.Errorf("Refetch calls (fromOrigin) %v, want %v", got, tt.wantRefetches)
			}
			if got := r.stats().VerifyFailures; got != tt.wantVerifyFail {
				t.Errorf("VerifyFailures %d, want %d", got, tt.wantVerifyFail)
			}
		})
	}
}
