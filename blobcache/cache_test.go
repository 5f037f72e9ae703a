package blobcache

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
)

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

func hexOf(ct content) string { return ct.digest[len("sha256:"):] }

func TestRestart(t *testing.T) {
	rng := rand.New(rand.NewPCG(20, 20))
	verified, partial := newContent(rng, 3*testBS+5), newContent(rng, 4*testBS)
	dir := t.TempDir()
	c := openCache(t, dir, Options{BlockSize: testBS})
	b := mustAcquire(t, c, verified)
	fill(t, b, verified)
	b.Release()
	b = mustAcquire(t, c, partial)
	mustWrite(t, b, partial, 0)
	mustWrite(t, b, partial, 2)
	b.Release() // the last reference flushes the bitmap
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	// Garbage of every kind the cache must remove.
	sha := filepath.Join(dir, "blobs", "sha256")
	orphan := newContent(rng, 10)
	garbage := map[string]bool{ // path -> is a directory
		filepath.Join(dir, "blobs", "junk"):              false,
		filepath.Join(dir, "blobs", "md5"):               true,
		filepath.Join(sha, "not-a-digest"):               false,
		filepath.Join(sha, hexOf(partial)+".tmp"):        false,
		filepath.Join(sha, hexOf(verified)+".partial"):   false, // beside a verified blob
		filepath.Join(sha, hexOf(orphan)+".partial"):     false, // no bitmap
		filepath.Join(sha, hexOf(orphan)[1:]+"0.bitmap"): false, // no data
		filepath.Join(sha, "sub"):                        true,
	}
	for p, isDir := range garbage {
		var err error
		if isDir {
			err = os.MkdirAll(filepath.Join(p, "x"), 0o755)
		} else {
			err = os.WriteFile(p, []byte("junk"), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}

	c = openCache(t, dir, Options{BlockSize: testBS})
	if got, want := listDir(t, filepath.Join(dir, "blobs")), []string{"sha256"}; !slices.Equal(got, want) {
		t.Errorf("blobs/ holds %v, want %v", got, want)
	}
	want := []string{hexOf(partial) + ".bitmap", hexOf(partial) + ".partial", hexOf(verified)}
	slices.Sort(want)
	if got := listDir(t, sha); !slices.Equal(got, want) {
		t.Errorf("blobs/sha256 holds %v, want %v", got, want)
	}
	<-c.checked // the kept blob is verified again
	s := c.Stats()
	if s.Blobs != 2 || s.Verified != 1 || s.Bytes != int64(len(verified.data)+len(partial.data)) {
		t.Errorf("Stats after reopen = %+v", s)
	}

	vb, ok := c.Lookup(verified.digest)
	if !ok || !vb.Complete() || !bytes.Equal(readAll(t, vb), verified.data) {
		t.Fatal("verified blob not kept")
	}
	vb.Release()
	pb, ok := c.Lookup(partial.digest)
	if !ok {
		t.Fatal("partial blob not kept")
	}
	defer pb.Release()
	if got, want := pb.Missing(), []int{1, 3}; !slices.Equal(got, want) || pb.Complete() {
		t.Fatalf("partial blob: Missing %v, Complete %v; want %v, false", got, pb.Complete(), want)
	}
	off, _ := pb.BlockRange(2)
	got := make([]byte, testBS)
	if _, err := pb.ReadAt(got, off); err != nil || !bytes.Equal(got, partial.block(testBS, 2)) {
		t.Fatalf("kept block 2: %v or wrong bytes", err)
	}
	mustWrite(t, pb, partial, 3)
	mustWrite(t, pb, partial, 1)
	if !pb.Complete() || !bytes.Equal(readAll(t, pb), partial.data) {
		t.Fatal("partial blob not complete and equal after refill")
	}
	if s := c.Stats(); s.Hits != 1 || s.Misses != 1 {
		t.Errorf("Stats hits %d misses %d, want 1 and 1", s.Hits, s.Misses)
	}
}

// A blob keeps the block size it was created with: across a restart with
// another default, and when acquired again with another size, so that its
// present blocks count for what they are.
func TestRestartOtherBlockSize(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 21))
	verified, partial := newContent(rng, 3*testBS), newContent(rng, 4*testBS)
	dir := t.TempDir()
	c := openCache(t, dir, Options{BlockSize: testBS})
	b := mustAcquire(t, c, verified)
	fill(t, b, verified)
	b.Release()
	b = mustAcquire(t, c, partial)
	mustWrite(t, b, partial, 0)
	b.Release()
	c.Close()

	c = openCache(t, dir, Options{BlockSize: 2 * testBS})
	b, err := c.AcquireBlocks(partial.digest, int64(len(partial.data)), 4*testBS)
	if err != nil {
		t.Fatal(err)
	}
	if b.BlockSize() != testBS || b.Blocks() != 4 || !b.Has(0) || b.Has(1) {
		t.Fatalf("partial blob after restart: block size %d, %d blocks, has 0 %v, has 1 %v; want %d, 4, true, false",
			b.BlockSize(), b.Blocks(), b.Has(0), b.Has(1), testBS)
	}
	fill(t, b, partial)
	if !b.Complete() || !bytes.Equal(readAll(t, b), partial.data) {
		t.Fatal("partial blob not complete and equal after refill")
	}
	b.Release()
	b, ok := c.Lookup(verified.digest)
	if !ok || !b.Complete() || b.Blocks() != 2 || !bytes.Equal(readAll(t, b), verified.data) {
		t.Fatal("verified blob not kept under a new block size")
	}
	b.Release()
}

// Blobs of one cache cut into blocks of different sizes fill and read
// independently, each in its own blocks.
func TestAcquireBlocks(t *testing.T) {
	rng := rand.New(rand.NewPCG(22, 22))
	c := openCache(t, t.TempDir(), Options{BlockSize: testBS})
	tests := []struct {
		name       string
		size, bs   int
		wantBS     int64
		wantBlocks int
	}{
		{"default", 3*testBS + 1, 0, testBS, 4},
		{"smaller", 3*testBS + 1, testBS / 4, testBS / 4, 13},
		{"larger", 3*testBS + 1, 2 * testBS, 2 * testBS, 2},
		{"one block", testBS / 2, 4 * testBS, 4 * testBS, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ct := newContent(rng, tt.size)
			b, err := c.AcquireBlocks(ct.digest, int64(tt.size), int64(tt.bs))
			if err != nil {
				t.Fatal(err)
			}
			defer b.Release()
			if b.BlockSize() != tt.wantBS || b.Blocks() != tt.wantBlocks {
				t.Fatalf("block size %d, %d blocks; want %d, %d", b.BlockSize(), b.Blocks(), tt.wantBS, tt.wantBlocks)
			}
			// In reverse, so that the hash catches up from the file.
			for i := b.Blocks() - 1; i >= 0; i-- {
				mustWrite(t, b, ct, i)
			}
			if !b.Complete() || !bytes.Equal(readAll(t, b), ct.data) {
				t.Fatal("not complete and equal after filling")
			}
			// Acquired again with another block size: its own stays.
			again, err := c.AcquireBlocks(ct.digest, int64(tt.size), int64(tt.bs)+testBS)
			if err != nil {
				t.Fatal(err)
			}
			defer again.Release()
			if again.BlockSize() != tt.wantBS {
				t.Errorf("acquired again: block size %d, want %d", again.BlockSize(), tt.wantBS)
			}
		})
	}
	for _, bs := range []int64{-1, maxBlockSize + 1} {
		if _, err := c.AcquireBlocks(newContent(rng, 10).digest, 10, bs); err == nil {
			t.Errorf("AcquireBlocks with block size %d: no error", bs)
		}
	}
}

// writePartial lays out a partial blob by hand, as a crash would leave it.
func writePartial(t *testing.T, dir string, ct content, data []byte, present []int) {
	t.Helper()
	sha := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(sha, 0o755); err != nil {
		t.Fatal(err)
	}
	n := (len(ct.data) + testBS - 1) / testBS
	bits := make([]byte, (n+7)/8)
	for _, i := range present {
		set(bits, i)
	}
	if err := os.WriteFile(filepath.Join(sha, hexOf(ct)+partialSuffix), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(sha, hexOf(ct)+bitmapSuffix), encodeBitmap(testBS, int64(len(ct.data)), bits), 0o644); err != nil {
		t.Fatal(err)
	}
}

// A partial blob whose last block arrived before a crash, but which was not
// marked verified, is verified by Open: kept if right, emptied if wrong.
func TestRestartFullUnverified(t *testing.T) {
	rng := rand.New(rand.NewPCG(22, 22))
	right, wrong := newContent(rng, 3*testBS-1), newContent(rng, 2*testBS)
	dir := t.TempDir()
	writePartial(t, dir, right, right.data, []int{0, 1, 2})
	bad := bytes.Clone(wrong.data)
	bad[0]++
	writePartial(t, dir, wrong, bad, []int{0, 1})

	c := openCache(t, dir, Options{BlockSize: testBS})
	b, ok := c.Lookup(right.digest)
	if !ok || !b.Complete() || !bytes.Equal(readAll(t, b), right.data) {
		t.Fatal("full partial blob not verified at open")
	}
	b.Release()
	b, ok = c.Lookup(wrong.digest)
	if !ok || b.Complete() || len(b.Missing()) != 2 {
		t.Fatalf("wrong full partial blob: found %v; want kept with all blocks missing", ok)
	}
	fill(t, b, wrong)
	if !b.Complete() {
		t.Fatal("wrong blob not complete after refill")
	}
	b.Release()
	if s := c.Stats(); s.VerifyFailures != 1 || s.Verified != 2 {
		t.Errorf("Stats = %+v, want 1 failure, 2 verified", s)
	}
}

// Malformed bitmaps and data files are dropped.
func TestRestartBadPartial(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 23))
	ct := newContent(rng, 3*testBS)
	good := encodeBitmap(testBS, int64(len(ct.data)), []byte{0b001})
	tests := []struct {
		name   string
		bitmap []byte
		data   []byte
	}{
		{"bad magic", append([]byte("XXBMAP1\n"), good[8:]...), ct.data},
		{"short header", good[:10], ct.data},
		{"other size", encodeBitmap(testBS, int64(len(ct.data))+1, []byte{1}), ct.data},
		{"bits past end", encodeBitmap(testBS, int64(len(ct.data)), []byte{0b1001}), ct.data},
		{"too many bytes", append(bytes.Clone(good), 0), ct.data},
		{"data size differs", good, ct.data[:10]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writePartial(t, dir, ct, tt.data, nil)
			sha := filepath.Join(dir, "blobs", "sha256")
			if err := os.WriteFile(filepath.Join(sha, hexOf(ct)+bitmapSuffix), tt.bitmap, 0o644); err != nil {
				t.Fatal(err)
			}
			c := openCache(t, dir, Options{BlockSize: testBS})
			if _, ok := c.Lookup(ct.digest); ok {
				t.Error("blob with a bad partial kept")
			}
			if got := listDir(t, sha); len(got) != 0 {
				t.Errorf("files left: %v", got)
			}
		})
	}
}

// A verified blob whose file changed while no cache had the directory is
// never served after a restart: its first Lookup or Acquire waits for it to
// be hashed again, and a mismatch drops it so that it is fetched again. With
// Rehash, Open hashes every blob before it returns; without, a background
// pass does, or the first user.
func TestReopenRehashes(t *testing.T) {
	tests := []struct {
		name     string
		rehash   bool
		corrupt  bool
		waitPass bool // let the background pass finish before the first Lookup
	}{
		{"intact", false, false, false},
		{"intact, after the background pass", false, false, true},
		{"intact, Rehash", true, false, false},
		{"corrupt, first Lookup checks", false, true, false},
		{"corrupt, after the background pass", false, true, true},
		{"corrupt, Rehash", true, true, false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(24, uint64(i)))
			ct := newContent(rng, 3*testBS+7)
			dir := t.TempDir()
			c := openCache(t, dir, Options{BlockSize: testBS})
			b := mustAcquire(t, c, ct)
			fill(t, b, ct)
			b.Release()
			c.Close()
			name := filepath.Join(dir, "blobs", "sha256", hexOf(ct))
			bad := bytes.Clone(ct.data)
			bad[testBS+3] ^= 0xff // same size, one byte off
			if tt.corrupt {
				if err := os.WriteFile(name, bad, 0o644); err != nil {
					t.Fatal(err)
				}
			}

			c = openCache(t, dir, Options{BlockSize: testBS, Rehash: tt.rehash})
			if tt.waitPass {
				<-c.checked
			}
			b, ok := c.Lookup(ct.digest)
			if ok {
				got := readAll(t, b)
				if bytes.Equal(got, bad) {
					t.Fatal("Lookup served the corrupted file under the blob's digest")
				}
				if !b.Complete() || !bytes.Equal(got, ct.data) {
					t.Errorf("Lookup: complete %v, content right %v; want a verified blob", b.Complete(), bytes.Equal(got, ct.data))
				}
				b.Release()
			}
			if ok == tt.corrupt {
				t.Fatalf("Lookup found the blob: %v, want %v", ok, !tt.corrupt)
			}
			<-c.checked
			s := c.Stats()
			if want := map[bool]int64{false: 0, true: 1}[tt.corrupt]; s.VerifyFailures != want {
				t.Errorf("VerifyFailures %d, want %d", s.VerifyFailures, want)
			}
			if !tt.corrupt {
				return
			}
			if _, err := os.Stat(name); !os.IsNotExist(err) {
				t.Errorf("corrupted file still on disk: %v", err)
			}
			if s.Blobs != 0 || s.Bytes != 0 {
				t.Errorf("Stats after the drop: %+v, want no blob", s)
			}
			// Dropped, it fills again as any new blob.
			b = mustAcquire(t, c, ct)
			defer b.Release()
			if b.Complete() || len(b.Missing()) != b.Blocks() {
				t.Fatalf("Acquire after the drop: complete %v, %d of %d blocks missing", b.Complete(), len(b.Missing()), b.Blocks())
			}
			fill(t, b, ct)
			if !b.Complete() || !bytes.Equal(readAll(t, b), ct.data) {
				t.Error("refetched blob not complete and right")
			}
		})
	}
}

// Concurrent first users of a blob kept from an earlier run hash it once,
// and none of them is served a corrupted one.
func TestReopenConcurrentLookups(t *testing.T) {
	rng := rand.New(rand.NewPCG(26, 26))
	good, bad := newContent(rng, 5*testBS), newContent(rng, 5*testBS)
	dir := t.TempDir()
	c := openCache(t, dir, Options{BlockSize: testBS})
	for _, ct := range []content{good, bad} {
		b := mustAcquire(t, c, ct)
		fill(t, b, ct)
		b.Release()
	}
	c.Close()
	if err := os.WriteFile(filepath.Join(dir, "blobs", "sha256", hexOf(bad)), good.data, 0o644); err != nil {
		t.Fatal(err)
	}
	c = openCache(t, dir, Options{BlockSize: testBS})
	const users = 8
	var wg sync.WaitGroup
	var served atomic.Int32
	for i := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ct := []content{good, bad}[i%2]
			var b *Blob
			if i%4 < 2 {
				var ok bool
				if b, ok = c.Lookup(ct.digest); !ok {
					return
				}
			} else {
				var err error
				if b, err = c.Acquire(ct.digest, int64(len(ct.data))); err != nil {
					t.Errorf("Acquire(%s): %v", ct.digest, err)
					return
				}
			}
			defer b.Release()
			if b.Complete() {
				served.Add(1)
				if got := readAll(t, b); !bytes.Equal(got, ct.data) {
					t.Errorf("served %s with the wrong content", ct.digest)
				}
			}
		}()
	}
	wg.Wait()
	if got := served.Load(); got != users/2 {
		t.Errorf("%d users were served a complete blob, want %d (the intact one's)", got, users/2)
	}
	if s := c.Stats(); s.VerifyFailures != 1 {
		t.Errorf("VerifyFailures %d, want 1: the corrupted blob is hashed once", s.VerifyFailures)
	}
}

// A crash keeps the blocks whose bits were flushed; the others are fetched
// again. Copying the files while the cache is open is what a crash leaves.
func TestCrashKeepsFlushedBlocks(t *testing.T) {
	rng := rand.New(rand.NewPCG(25, 25))
	ct := newContent(rng, 6*testBS)
	dir := t.TempDir()
	c := openCache(t, dir, Options{BlockSize: testBS})
	c.syncBytes = 2 * testBS
	b := mustAcquire(t, c, ct)
	defer b.Release()
	for _, i := range []int{4, 1, 0} { // flush after the second; the third waits
		mustWrite(t, b, ct, i)
	}
	crashed := copyPartial(t, c, b, ct)
	c2 := openCache(t, crashed, Options{BlockSize: testBS})
	b2, ok := c2.Lookup(ct.digest)
	if !ok {
		t.Fatal("partial blob lost")
	}
	defer b2.Release()
	if got, want := b2.Missing(), []int{0, 2, 3, 5}; !slices.Equal(got, want) {
		t.Errorf("after crash Missing() = %v, want %v", got, want)
	}
}

func TestLockDir(t *testing.T) {
	dir := t.TempDir()
	c := openCache(t, dir, Options{})
	if c2, err := Open(dir, Options{Logger: testLogger(t)}); err == nil {
		c2.Close()
		t.Fatal("second Open of one directory succeeded")
	}
	c.Close()
	c3 := openCache(t, dir, Options{})
	c3.Close()
}

func TestOpenOptions(t *testing.T) {
	for _, opts := range []Options{{BlockSize: -1}, {BlockSize: maxBlockSize + 1}, {MaxBytes: -1}} {
		if c, err := Open(t.TempDir(), opts); err == nil {
			c.Close()
			t.Errorf("Open with %+v succeeded", opts)
		}
	}
	c := openCache(t, t.TempDir(), Options{})
	if c.BlockSize() != DefaultBlockSize {
		t.Errorf("default BlockSize = %d", c.BlockSize())
	}
}

// FuzzDecodeBitmap checks that any bitmap file either is rejected or
// describes a consistent blob and encodes back to itself.
func FuzzDecodeBitmap(f *testing.F) {
	f.Add(encodeBitmap(testBS, 3*testBS, []byte{0b101}))
	f.Add(encodeBitmap(testBS, 0, nil))
	f.Add(encodeBitmap(7, 100, make([]byte, 2)))
	f.Add(encodeBitmap(0, 100, make([]byte, 2)))
	f.Add(encodeBitmap(maxBlockSize+1, 100, make([]byte, 1)))
	f.Add([]byte("FNBMAP1\n"))
	f.Fuzz(func(t *testing.T, buf []byte) {
		blockSize, size, bits, err := decodeBitmap(buf)
		if err != nil {
			return
		}
		if blockSize <= 0 || blockSize > maxBlockSize {
			t.Fatalf("block size %d accepted", blockSize)
		}
		n := (size + blockSize - 1) / blockSize
		if n > maxBlocks || int64(len(bits)) != (n+7)/8 {
			t.Fatalf("size %d, %d bytes of bits for block size %d", size, len(bits), blockSize)
		}
		if !bytes.Equal(encodeBitmap(blockSize, size, bits), buf) {
			t.Fatal("decoded bitmap does not encode back to its input")
		}
	})
}
