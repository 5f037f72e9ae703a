// Package lazy gives on-demand access to container images in the eStargz
// format (package convert makes them): it indexes a layer blob by its table
// of contents (TOC), and mounts an image read-only through FUSE (Mount) so
// that a container can start before the image has arrived.
//
// An eStargz layer is a valid tar.gz whose regular files are cut into chunks,
// each compressed as its own gzip member, followed by a TOC that lists every
// entry with the blob offset and SHA-256 digest of each chunk, and a footer
// that locates the TOC. Opening a layer reads the footer and the TOC; reading
// a file reads only the gzip members that hold the chunks it covers, verifies
// each chunk against the TOC (which is verified against the digest in the
// image manifest), and never returns a byte that failed verification.
//
// Where the bytes come from is the caller's business: a BlobReader. The
// faasnet worker reads them through the function tree; NewRegistryBlob reads
// them from the registry with Range requests.
package lazy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/containerd/stargz-snapshotter/estargz"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Layer annotations that mark an eStargz layer in an image manifest, as
// stargz-snapshotter and containers/storage expect them.
const (
	// TOCDigestAnnotation is the digest of the layer's TOC JSON.
	TOCDigestAnnotation = estargz.TOCJSONDigestAnnotation
	// UncompressedSizeAnnotation is the size of the layer's tar.
	UncompressedSizeAnnotation = estargz.StoreUncompressedSizeAnnotation
)

// BlobReader reads byte ranges of a compressed layer blob. The worker's
// implementation fetches the blocks that cover the range through the
// function tree (or the registry), blocking until they arrive.
//
// ReadAt follows io.ReaderAt: it returns len(p) bytes, or fewer with an
// error. It must return promptly once ctx is done. It may be called
// concurrently.
type BlobReader interface {
	ReadAt(ctx context.Context, p []byte, off int64) (int, error)
}

// A Refetcher is a BlobReader that keeps what it reads, like the faasnet
// worker's block cache. Once a chunk has failed verification, reading it
// again would return the same bad bytes, so the reader calls Refetch first:
// it drops what is kept for [off, off+n) and fetches those bytes anew,
// returning once they are kept. fromOrigin asks for them from the blob's
// origin (the registry) rather than from a relay, such as a tree parent,
// that may have sent the bad ones.
type Refetcher interface {
	BlobReader
	Refetch(ctx context.Context, off, n int64, fromOrigin bool) error
}

// Layer is one eStargz layer of an image.
type Layer struct {
	// Digest is the blob's digest, for logs and errors.
	Digest string
	// Size is the blob's size in bytes.
	Size int64
	// TOCDigest is the layer's TOCDigestAnnotation. It is required: it is
	// what makes the chunk digests in the TOC trustworthy.
	TOCDigest string
	// Blob reads the blob's bytes. If it is a Refetcher, chunks that fail
	// verification are fetched again through it.
	Blob BlobReader
}

// IsLazyLayer reports whether the layer descriptor marks an eStargz layer
// (it carries TOCDigestAnnotation).
func IsLazyLayer(d v1.Descriptor) bool {
	return d.Annotations[TOCDigestAnnotation] != ""
}

// IsLazy reports whether an image, given its manifest's layer descriptors,
// can be mounted lazily: it has layers and all of them are eStargz.
func IsLazy(layers []v1.Descriptor) bool {
	for _, d := range layers {
		if !IsLazyLayer(d) {
			return false
		}
	}
	return len(layers) > 0
}

// LayerFromDescriptor returns the Layer that d describes, read through blob.
// It fails if d is not an eStargz layer.
func LayerFromDescriptor(d v1.Descriptor, blob BlobReader) (Layer, error) {
	if !IsLazyLayer(d) {
		return Layer{}, fmt.Errorf("lazy: layer %s has no %s annotation: not eStargz", d.Digest, TOCDigestAnnotation)
	}
	return Layer{Digest: d.Digest.String(), Size: d.Size, TOCDigest: d.Annotations[TOCDigestAnnotation], Blob: blob}, nil
}

// UncompressedSize returns the layer's UncompressedSizeAnnotation, if any.
func UncompressedSize(d v1.Descriptor) (int64, bool) {
	n, err := strconv.ParseInt(d.Annotations[UncompressedSizeAnnotation], 10, 64)
	return n, err == nil && n >= 0
}

// readFull reads len(p) bytes at off, also from a BlobReader that returns
// short reads without an error.
func readFull(ctx context.Context, r BlobReader, p []byte, off int64) error {
	for len(p) > 0 {
		n, err := r.ReadAt(ctx, p, off)
		if n < 0 || n > len(p) {
			return fmt.Errorf("blob reader returned %d bytes for a %d-byte read", n, len(p))
		}
		p, off = p[n:], off+int64(n)
		switch {
		case len(p) == 0:
			return nil
		case errors.Is(err, io.EOF):
			return io.ErrUnexpectedEOF
		case err != nil:
			return err
		case n == 0:
			if err := ctx.Err(); err != nil {
				return err
			}
			return io.ErrNoProgress
		}
	}
	return nil
}

// BytesReader is a BlobReader over a blob in memory.
type BytesReader []byte

// ReadAt implements BlobReader.
func (b BytesReader) ReadAt(_ context.Context, p []byte, off int64) (int, error) {
	if off < 0 || off > int64(len(b)) {
		return 0, fmt.Errorf("lazy: read at %d of a %d-byte blob", off, len(b))
	}
	n := copy(p, b[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
