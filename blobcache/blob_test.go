package blobcache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

const testBS = 1024

// errAny stands for any error in tables.
var errAny = errors.New("any error")

func TestAcquire(t *testing.T) {
	c := openCache(t, t.TempDir(), Options{BlockSize: testBS})
	rng := rand.New(rand.NewPCG(1, 1))
	ct := newContent(rng, 3*testBS+7)
	held := mustAcquire(t, c, ct)
	defer held.Release()
	empty := sha256Digest(nil)

	tests := []struct {
		name    string
		digest  string
		size    int64
		wantErr error // nil: success; errAny: any error
		blocks  int
		done    bool
	}{
		{"new", sha256Digest([]byte("x")), 1, nil, 1, false},
		{"existing", ct.digest, int64(len(ct.data)), nil, 4, false},
		{"size mismatch", ct.digest, int64(len(ct.data)) + 1, ErrSizeMismatch, 0, false},
		{"invalid digest", "sha256:xyz", 1, ErrInvalidDigest, 0, false},
		{"negative size", sha256Digest([]byte("y")), -1, errAny, 0, false},
		{"too many blocks", sha256Digest([]byte("y")), (maxBlocks + 1) * testBS, errAny, 0, false},
		{"most blocks", sha256Digest([]byte("y")), maxBlocks * testBS, nil, maxBlocks, false},
		{"empty blob", empty, 0, nil, 0, true},
		{"empty size, other digest", sha256Digest([]byte("z")), 0, ErrCorrupt, 0, false},
		{"exact blocks", sha256Digest(make([]byte, 2*testBS)), 2 * testBS, nil, 2, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := c.Acquire(tt.digest, tt.size)
			if tt.wantErr != nil {
				if err == nil || tt.wantErr != errAny && !errors.Is(err, tt.wantErr) {
					t.Fatalf("Acquire = %v, want %v", err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.digest) {
					t.Errorf("error %q does not name the digest", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Acquire: %v", err)
			}
			defer b.Release()
			if b.Blocks() != tt.blocks || b.Complete() != tt.done || b.Digest() != tt.digest || b.Size() != tt.size {
				t.Errorf("blob %s: blocks %d complete %v size %d; want %d %v %d", b.Digest(), b.Blocks(), b.Complete(), b.Size(), tt.blocks, tt.done, tt.size)
			}
		})
	}
}

func TestWriteBlock(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 2))
	ct := newContent(rng, 2*testBS+100) // last block 100 bytes
	type step struct {
		block   int
		r       io.Reader
		wantErr bool
		wantHas bool
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"full block", []step{{0, bytes.NewReader(ct.block(testBS, 0)), false, true}}},
		{"short last block", []step{{2, bytes.NewReader(ct.block(testBS, 2)), false, true}}},
		{"short read", []step{{1, bytes.NewReader(ct.block(testBS, 1)[:testBS-1]), true, false}}},
		{"reader error", []step{{1, iotest.ErrReader(errors.New("boom")), true, false}}},
		{"one byte at a time", []step{{1, iotest.OneByteReader(bytes.NewReader(ct.block(testBS, 1))), false, true}}},
		{"negative index", []step{{-1, bytes.NewReader(nil), true, false}}},
		{"index past end", []step{{3, bytes.NewReader(ct.block(testBS, 0)), true, false}}},
		{"present is a no-op", []step{
			{0, bytes.NewReader(ct.block(testBS, 0)), false, true},
			{0, bytes.NewReader(bytes.Repeat([]byte{0xff}, testBS)), false, true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := openCache(t, t.TempDir(), Options{BlockSize: testBS})
			b := mustAcquire(t, c, ct)
			defer b.Release()
			for _, s := range tt.steps {
				err := b.WriteBlock(s.block, s.r)
				if (err != nil) != s.wantErr {
					t.Fatalf("WriteBlock(%d) = %v, want error %v", s.block, err, s.wantErr)
				}
				if err != nil && !strings.Contains(err.Error(), ct.digest) {
					t.Errorf("error %q does not name the digest", err)
				}
				if got := b.Has(s.block); got != s.wantHas {
					t.Fatalf("Has(%d) = %v, want %v", s.block, got, s.wantHas)
				}
			}
			// Present blocks hold the right bytes, whatever came after.
			for i := range b.Blocks() {
				if !b.Has(i) {
					continue
				}
				off, n := b.BlockRange(i)
				got := make([]byte, n)
				if _, err := b.ReadAt(got, off); err != nil && err != io.EOF {
					t.Fatalf("ReadAt block %d: %v", i, err)
				}
				if !bytes.Equal(got, ct.block(testBS, i)) {
					t.Errorf("block %d content differs", i)
				}
			}
		})
	}
}

// A present block's bytes are still consumed, so one stream can carry many.
func TestWriteBlockDrainsPresent(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	ct := newContent(rng, 3*testBS)
	c := openCache(t, t.TempDir(), Options{BlockSize: testBS})
	b := mustAcquire(t, c, ct)
	defer b.Release()
	mustWrite(t, b, ct, 0)
	stream := bytes.NewReader(ct.data)
	for i := range 3 {
		if err := b.WriteBlock(i, stream); err != nil {
			t.Fatalf("WriteBlock(%d): %v", i, err)
		}
	}
	if !b.Complete() || !bytes.Equal(readAll(t, b), ct.data) {
		t.Fatal("blob not complete and equal after streaming")
	}
}

func TestMissingAndReadAt(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	ct := newContent(rng, 5*testBS+1)
	c := openCache(t, t.TempDir(), Options{BlockSize: testBS})
	b := mustAcquire(t, c, ct)
	defer b.Release()
	for _, i := range []int{0, 1, 3, 5} {
		mustWrite(t, b, ct, i)
	}
	if got, want := b.Missing(), []int{2, 4}; !slices.Equal(got, want) {
		t.Errorf("Missing() = %v, want %v", got, want)
	}
	for _, tt := range []struct{ from, want int }{{-5, 2}, {0, 2}, {2, 2}, {3, 4}, {5, -1}, {99, -1}} {
		if got := b.NextMissing(tt.from); got != tt.want {
			t.Errorf("NextMissing(%d) = %d, want %d", tt.from, got, tt.want)
		}
	}

	tests := []struct {
		off     int64
		len     int
		wantN   int
		wantErr error
	}{
		{0, 2 * testBS, 2 * testBS, nil},
		{10, 3 * testBS, 2*testBS - 10, ErrNotPresent},
		{2 * testBS, 10, 0, ErrNotPresent},
		{3 * testBS, testBS, testBS, nil},
		{5 * testBS, 1, 1, nil},
		{5 * testBS, 10, 1, io.EOF},
		{5*testBS + 1, 1, 0, io.EOF},
	}
	for _, tt := range tests {
		p := make([]byte, tt.len)
		n, err := b.ReadAt(p, tt.off)
		if n != tt.wantN || !errors.Is(err, tt.wantErr) && !(err == nil && tt.wantErr == nil) {
			t.Errorf("ReadAt(%d bytes at %d) = %d, %v; want %d, %v", tt.len, tt.off, n, err, tt.wantN, tt.wantErr)
		}
		if !bytes.Equal(p[:n], ct.data[tt.off:tt.off+int64(n)]) {
			t.Errorf("ReadAt(%d bytes at %d): wrong bytes", tt.len, tt.off)
		}
	}
}

// Blocks arriving in any order, each once or several times, end verified and
// equal to the content.
func TestRandomOrderVerifies(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 5))
		ct := newContent(rng, 1+rng.IntN(20*testBS))
		c := openCache(t, t.TempDir(), Options{BlockSize: testBS})
		b := mustAcquire(t, c, ct)
		order := rng.Perm(b.Blocks())
		order = append(order, rng.Perm(b.Blocks())[:b.Blocks()/2]...) // duplicates
		for k, i := range order {
			if b.Complete() != (k >= b.Blocks()) {
				t.Fatalf("seed %d: Complete() = %v after %d writes of %d blocks", seed, b.Complete(), k, b.Blocks())
			}
			mustWrite(t, b, ct, i)
		}
		if !b.Complete() || !bytes.Equal(readAll(t, b), ct.data) {
			t.Fatalf("seed %d: blob not complete and equal", seed)
		}
		if _, err := os.Stat(c.path(b.e.d, "")); err != nil {
			t.Fatalf("seed %d: completion marker: %v", seed, err)
		}
		b.Release()
	}
}

func TestReleased(t *testing.T) {
	rng := rand.New(rand.NewPCG(6, 6))
	ct := newContent(rng, testBS)
	c := openCache(t, t.TempDir(), Options{BlockSize: testBS})
	b := mustAcquire(t, c, ct)
	b.Release()
	b.Release() // idempotent
	ctx := context.Background()
	checks := map[string]error{
		"WriteBlock": b.WriteBlock(0, bytes.NewReader(ct.data)),
		"WaitBlock":  b.WaitBlock(ctx, 0),
		"Wait":       b.Wait(ctx),
		"Verify":     b.Verify(),
	}
	_, checks["Reader"] = b.Reader(ctx, 0, 1)
	_, checks["ReadAt"] = b.ReadAt(make([]byte, 1), 0)
	for name, err := range checks {
		if !errors.Is(err, ErrReleased) {
			t.Errorf("%s after Release = %v, want ErrReleased", name, err)
		}
	}
	if s := c.Stats(); s.InUse != 0 {
		t.Errorf("InUse = %d after double Release, want 0", s.InUse)
	}
}

// A failure to write the completion marker leaves the blob incomplete, and
// Verify finishes it later.
func TestVerifyAfterFailedMarker(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	ct := newContent(rng, 3*testBS)
	c := openCache(t, t.TempDir(), Options{BlockSize: testBS})
	b := mustAcquire(t, c, ct)
	defer b.Release()
	if err := b.Verify(); !errors.Is(err, ErrNotPresent) {
		t.Fatalf("Verify on an empty blob = %v, want ErrNotPresent", err)
	}
	final := c.path(b.e.d, "")
	// A non-empty directory at the final name makes the rename fail.
	if err := os.MkdirAll(final+"/x", 0o755); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, b, ct, 0)
	mustWrite(t, b, ct, 1)
	if err := b.WriteBlock(2, bytes.NewReader(ct.block(testBS, 2))); err == nil || errors.Is(err, ErrCorrupt) {
		t.Fatalf("last WriteBlock with a blocked marker = %v, want a rename error", err)
	}
	if b.Complete() || !b.Has(2) {
		t.Fatalf("Complete() = %v, Has(2) = %v; want false, true", b.Complete(), b.Has(2))
	}
	if err := os.RemoveAll(final); err != nil {
		t.Fatal(err)
	}
	if err := b.Verify(); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !b.Complete() || !bytes.Equal(readAll(t, b), ct.data) {
		t.Fatal("blob not complete and equal after Verify")
	}
	if err := b.Verify(); err != nil {
		t.Fatalf("Verify on a complete blob: %v", err)
	}
}
