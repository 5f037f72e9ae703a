package imagegen

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"

	"github.com/containerd/stargz-snapshotter/estargz"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Hostile layers, for tests of what a worker refuses. Each is a valid layer
// that a registry stores and serves like any other.

// GzipBomb returns a gzip layer of files bomb/0, bomb/1, ... of size bytes
// of zeros each: about a thousandth of its unpacked size compressed.
func GzipBomb(files int, size int64) (v1.Layer, error) {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	tw := tar.NewWriter(zw)
	for i := range files {
		h := fileHeader(fmt.Sprintf("bomb/%d", i), 0o644, size)
		if err := tw.WriteHeader(&h); err != nil {
			return nil, fmt.Errorf("imagegen: gzip bomb: %w", err)
		}
		if _, err := io.CopyN(tw, zeroReader{}, size); err != nil {
			return nil, fmt.Errorf("imagegen: gzip bomb: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("imagegen: gzip bomb: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("imagegen: gzip bomb: %w", err)
	}
	return bytesLayer(buf.Bytes())
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// HugeChunk returns an eStargz layer, with the TOC digest annotation that
// marks it lazy, whose TOC is valid but for the span of its one chunk: the
// 5-byte file "f" has its chunk's gzip member followed by gap bytes of
// stored zeros, then the TOC. A reader takes a chunk from its member's start
// to the next member or the TOC, so reading "f" would allocate gap bytes at
// once.
func HugeChunk(gap int64) (mutate.Addendum, error) {
	const body = "hello"
	var blob bytes.Buffer
	member := func(level int, write func(io.Writer) error) error {
		zw, err := gzip.NewWriterLevel(&blob, level)
		if err != nil {
			return err
		}
		if err := write(zw); err != nil {
			return err
		}
		return zw.Close()
	}
	// The tar header, the file's content and the gap each in a gzip member
	// of their own, as eStargz lays out a file.
	tarPart := func(w io.Writer) error {
		tw := tar.NewWriter(w)
		h := fileHeader("f", 0o644, int64(len(body)))
		return tw.WriteHeader(&h) // writes the header block at once
	}
	var hdr bytes.Buffer
	if err := tarPart(&hdr); err != nil {
		return mutate.Addendum{}, fmt.Errorf("imagegen: huge chunk: %w", err)
	}
	if err := member(gzip.BestCompression, func(w io.Writer) error { _, err := w.Write(hdr.Bytes()); return err }); err != nil {
		return mutate.Addendum{}, fmt.Errorf("imagegen: huge chunk: %w", err)
	}
	chunkOff := int64(blob.Len())
	padded := make([]byte, 512) // the content padded to a tar block
	copy(padded, body)
	if err := member(gzip.BestCompression, func(w io.Writer) error { _, err := w.Write(padded); return err }); err != nil {
		return mutate.Addendum{}, fmt.Errorf("imagegen: huge chunk: %w", err)
	}
	if err := member(gzip.NoCompression, func(w io.Writer) error { _, err := io.CopyN(w, zeroReader{}, gap); return err }); err != nil {
		return mutate.Addendum{}, fmt.Errorf("imagegen: huge chunk: %w", err)
	}
	sum := sha256.Sum256([]byte(body))
	d := "sha256:" + hex.EncodeToString(sum[:])
	toc := &estargz.JTOC{Version: 1, Entries: []*estargz.TOCEntry{{
		Name: "f", Type: "reg", Mode: 0o644, Size: int64(len(body)), Offset: chunkOff, Digest: d, ChunkDigest: d,
	}}}
	tocDigest, err := estargz.NewGzipCompressor().WriteTOCAndFooter(&blob, int64(blob.Len()), toc, sha256.New())
	if err != nil {
		return mutate.Addendum{}, fmt.Errorf("imagegen: huge chunk: %w", err)
	}
	l, err := bytesLayer(blob.Bytes())
	if err != nil {
		return mutate.Addendum{}, err
	}
	return mutate.Addendum{Layer: l, Annotations: map[string]string{estargz.TOCJSONDigestAnnotation: tocDigest.String()}}, nil
}

// bytesLayer is an OCI gzip layer of the compressed bytes b, kept as they are.
func bytesLayer(b []byte) (v1.Layer, error) {
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("imagegen: layer: %w", err)
	}
	return l, nil
}
