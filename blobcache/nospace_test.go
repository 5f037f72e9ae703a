package blobcache

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"syscall"
	"testing"

	"github.com/faasnet/faasnet/internal/testenv"
)

// tinyFS mounts a tmpfs of size bytes, so that the disk really fills. It
// skips the test without root, and fails it under CI=true.
func tinyFS(t *testing.T, size string) string {
	t.Helper()
	testenv.NeedRoot(t)
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		if testenv.InCI() {
			t.Fatalf("cannot mount a tmpfs on %s (needs CAP_SYS_ADMIN): %v", dir, err)
		}
		t.Skipf("cannot mount a tmpfs on %s (needs CAP_SYS_ADMIN): %v; skipping", dir, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// A full disk fails the write with ErrNoSpace and leaves the block missing;
// the cache keeps working, and once a blob is no longer in use it is evicted
// to make room.
func TestNoSpace(t *testing.T) {
	dir := tinyFS(t, "1m")
	const bs = 64 << 10
	rng := rand.New(rand.NewPCG(40, 40))
	inUse, big := newContent(rng, 512<<10), newContent(rng, 2<<20)
	c := openCache(t, dir, Options{BlockSize: bs})
	y := mustAcquire(t, c, inUse)
	fill(t, y, inUse)
	x := mustAcquire(t, c, big)
	defer x.Release()

	full := -1
	for i := range x.Blocks() {
		err := x.WriteBlock(i, bytes.NewReader(big.block(bs, i)))
		if err == nil {
			continue
		}
		if !errors.Is(err, ErrNoSpace) || !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("WriteBlock(%d) on a full disk = %v, want ErrNoSpace and ENOSPC", i, err)
		}
		full = i
		break
	}
	if full <= 0 {
		t.Fatalf("the disk never filled (first failure at block %d)", full)
	}
	if x.Has(full) || x.NextMissing(0) != full {
		t.Fatalf("block %d marked after ENOSPC", full)
	}
	// Everything else still works.
	if !bytes.Equal(readAll(t, y), inUse.data) {
		t.Error("blob in use unreadable after ENOSPC")
	}
	got := make([]byte, bs)
	if _, err := x.ReadAt(got, 0); err != nil || !bytes.Equal(got, big.block(bs, 0)) {
		t.Errorf("ReadAt block 0 after ENOSPC: %v", err)
	}
	if s := c.Stats(); s.Evictions != 0 || s.Blobs != 2 {
		t.Errorf("Stats after ENOSPC = %+v", s)
	}

	// Once y is unused, the next write evicts it and goes through.
	y.Release()
	if err := x.WriteBlock(full, bytes.NewReader(big.block(bs, full))); err != nil {
		t.Fatalf("WriteBlock(%d) after freeing space: %v", full, err)
	}
	if s := c.Stats(); s.Evictions != 1 || s.Blobs != 1 {
		t.Errorf("Stats after reclaim = %+v, want 1 eviction, 1 blob", s)
	}
	if _, ok := c.Lookup(inUse.digest); ok {
		t.Error("reclaimed blob still cached")
	}
}
