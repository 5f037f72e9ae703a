package lazy

import (
	"context"
	"testing"
)

// BenchmarkFetchChunk measures the cost of a cache miss: decompressing and
// verifying one chunk of incompressible data (the blob is in memory).
func BenchmarkFetchChunk(b *testing.B) {
	blobs, digests := testBlobs(b)
	ix, err := TOC(context.Background(), BytesReader(blobs[0]), int64(len(blobs[0])), digests[0])
	if err != nil {
		b.Fatal(err)
	}
	big, err := ix.file("data/big")
	if err != nil {
		b.Fatal(err)
	}
	c := &big.chunks[1]
	b.SetBytes(c.size)
	for b.Loop() {
		if _, err := fetchChunk(context.Background(), BytesReader(blobs[0]), c); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadCached measures a 128 KiB read (the kernel's usual request)
// served from cached chunks.
func BenchmarkReadCached(b *testing.B) {
	blobs, digests := testBlobs(b)
	r := newReader(Options{}.withDefaults())
	defer r.close()
	ix, err := TOC(context.Background(), BytesReader(blobs[0]), int64(len(blobs[0])), digests[0])
	if err != nil {
		b.Fatal(err)
	}
	r.layers = []layerSource{{digest: digests[0], ix: ix, blob: BytesReader(blobs[0])}}
	root, err := merge([]*Index{ix})
	if err != nil {
		b.Fatal(err)
	}
	n := root.lookup("data/big")
	buf := make([]byte, 128<<10)
	b.SetBytes(int64(len(buf)))
	for b.Loop() {
		if _, err := r.readFile(context.Background(), n, buf, 100_000); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkTOC measures opening a layer: footer, TOC, checks.
func BenchmarkTOC(b *testing.B) {
	blobs, digests := testBlobs(b)
	for b.Loop() {
		if _, err := TOC(context.Background(), BytesReader(blobs[1]), int64(len(blobs[1])), digests[1]); err != nil {
			b.Fatal(err)
		}
	}
}
