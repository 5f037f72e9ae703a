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
// of zeros each: about a thousandth of its unpacked size compressed. It is
// a series of gzip members (readers join them into one stream, as RFC 1952
// allows), one per tar header and per MiB of zeros; the MiB's member is
// compressed once and repeated, so a bomb of any size is made in
// milliseconds, even under the race detector.
func GzipBomb(files int, size int64) (v1.Layer, error) {
	var buf bytes.Buffer
	mib, err := gzipMember(make([]byte, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("imagegen: gzip bomb: %w", err)
	}
	zeros := func(n int64) error {
		for ; n >= 1<<20; n -= 1 << 20 {
			buf.Write(mib)
		}
		if n == 0 {
			return nil
		}
		m, err := gzipMember(make([]byte, n))
		buf.Write(m)
		return err
	}
	for i := range files {
		var hdr bytes.Buffer
		h := fileHeader(fmt.Sprintf("bomb/%d", i), 0o644, size)
		if err := tar.NewWriter(&hdr).WriteHeader(&h); err != nil { // writes the header block at once
			return nil, fmt.Errorf("imagegen: gzip bomb: %w", err)
		}
		m, err := gzipMember(hdr.Bytes())
		if err != nil {
			return nil, fmt.Errorf("imagegen: gzip bomb: %w", err)
		}
		buf.Write(m)
		if err := zeros(size + (-size)&511); err != nil { // the file and its padding to a block
			return nil, fmt.Errorf("imagegen: gzip bomb: %w", err)
		}
	}
	if err := zeros(2 * 512); err != nil { // the end of the archive
		return nil, fmt.Errorf("imagegen: gzip bomb: %w", err)
	}
	return bytesLayer(buf.Bytes())
}

// gzipMember is b compressed as one gzip member.
func gzipMember(b []byte) ([]byte, error) {
	var out bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&out, gzip.BestCompression)
	if _, err := zw.Write(b); err != nil {
		return nil, err
	}
	err := zw.Close()
	return out.Bytes(), err
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
