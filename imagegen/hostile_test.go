package imagegen

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/faasnet/faasnet/lazy"
)

func TestGzipBombIsSmall(t *testing.T) {
	l, err := GzipBomb(4, 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	size, _ := l.Size()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	n, err := io.Copy(io.Discard, rc)
	if err != nil {
		t.Fatal(err)
	}
	if n < 16<<20 || size*500 > n {
		t.Errorf("bomb: %d bytes compressed, %d unpacked; want 16 MiB unpacked at a ratio over 500", size, n)
	}
}

// TestHugeChunk reads the layer's TOC: valid within a span limit above the
// gap, refused below it.
func TestHugeChunk(t *testing.T) {
	const gap = 1 << 20
	add, err := HugeChunk(gap)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := add.Layer.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	blob, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	toc := add.Annotations[lazy.TOCDigestAnnotation]
	if _, err := lazy.ReadTOC(context.Background(), lazy.BytesReader(blob), int64(len(blob)), toc, lazy.Limits{MaxChunkSpan: 2 * gap}); err != nil {
		t.Fatalf("TOC within the span: %v", err)
	}
	_, err = lazy.ReadTOC(context.Background(), lazy.BytesReader(blob), int64(len(blob)), toc, lazy.Limits{MaxChunkSpan: gap})
	if !errors.Is(err, lazy.ErrLimit) {
		t.Fatalf("TOC over the span: %v, want lazy.ErrLimit", err)
	}
}
