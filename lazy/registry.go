package lazy

import (
	"context"
	"fmt"
	"io"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/faasnet/faasnet/upstream"
)

// RegistryBlob is a BlobReader that reads a blob straight from its registry,
// one Range request per read: the "on-demand from the registry" baseline,
// and what a function tree's root does for blocks nobody has.
type RegistryBlob struct {
	reg    *upstream.Registry
	repo   name.Repository
	digest string
}

// NewRegistryBlob returns a reader of the blob with the given digest in repo.
func NewRegistryBlob(reg *upstream.Registry, repo name.Repository, digest string) *RegistryBlob {
	return &RegistryBlob{reg: reg, repo: repo, digest: digest}
}

// ReadAt implements BlobReader.
func (b *RegistryBlob) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	rc, err := b.reg.OpenBlob(ctx, b.repo, b.digest, off, int64(len(p)))
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	n, err := io.ReadFull(rc, p)
	if err != nil {
		return n, fmt.Errorf("lazy: reading %d bytes at %d of blob %s: %w", len(p), off, b.digest, err)
	}
	return n, nil
}
