package manager

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/faasnet/faasnet/digest"
	"github.com/faasnet/faasnet/upstream"
	"github.com/google/go-containerregistry/pkg/name"
)

// A Pinner resolves an image reference by tag to the digest of the manifest
// the function's VMs will run. The manager pins when a function is defined or
// updated, so that a tag moved in the registry later, or a VM that answers
// for another, changes nothing until an operator defines the function again.
type Pinner interface {
	// Pin returns the canonical manifest digest image names now. Errors
	// wrap upstream.ErrNotFound, ErrUnauthorized or ErrNoPlatform when the
	// registry answered so; anything else means it could not be asked.
	Pin(ctx context.Context, image string) (string, error)
}

// RegistryPinner pins through the manager's own registry access: the same
// client the root VMs use, so a tag naming an index is pinned to the
// manifest of the registry's platform (see upstream.WithPlatform).
type RegistryPinner struct{ Registry *upstream.Registry }

// Pin implements Pinner.
func (p RegistryPinner) Pin(ctx context.Context, image string) (string, error) {
	im, err := p.Registry.Resolve(ctx, image)
	if err != nil {
		return "", err
	}
	return im.Descriptor.Digest.String(), nil
}

// pinTimeout bounds the registry round trips of one definition, well within
// the API server's write timeout.
const pinTimeout = 20 * time.Second

// pin returns the digest image is pinned to: the reference's own digest if
// it has one (the registry is not asked), else what the Pinner resolves. A
// registry that does not have the image is the caller's mistake (400); one
// that cannot be reached or errs is a bad gateway (502).
func (m *Manager) pin(ctx context.Context, image string) (string, error) {
	ref, err := name.ParseReference(image, name.WeakValidation)
	if err != nil {
		return "", badRequest("image %q: %v", image, err)
	}
	if d, ok := ref.(name.Digest); ok {
		h, err := digest.Parse(d.DigestStr())
		if err != nil {
			return "", badRequest("image %q: %v", image, err)
		}
		return h.String(), nil
	}
	ctx, cancel := context.WithTimeout(ctx, pinTimeout)
	defer cancel()
	s, err := m.opts.Pinner.Pin(ctx, image)
	switch {
	case errors.Is(err, upstream.ErrNotFound), errors.Is(err, upstream.ErrUnauthorized), errors.Is(err, upstream.ErrNoPlatform):
		return "", badRequest("image %q cannot be pinned to a digest: %v", image, err)
	case err != nil:
		return "", &Error{http.StatusBadGateway, fmt.Sprintf("image %q: the registry could not be asked for its digest: %v", image, err)}
	}
	h, err := digest.Parse(s)
	if err != nil {
		return "", &Error{http.StatusBadGateway, fmt.Sprintf("image %q: the registry gave an invalid digest: %v", image, err)}
	}
	return h.String(), nil
}

// PinFunc is a Pinner made of a function.
type PinFunc func(ctx context.Context, image string) (string, error)

// Pin implements Pinner.
func (f PinFunc) Pin(ctx context.Context, image string) (string, error) { return f(ctx, image) }
