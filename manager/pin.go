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

// An ImageSizer is a Pinner that also tells the size of the image it pins:
// its config and layers in bytes, and its number of layers. The manager
// picks a function's block size from them (stripe.BlockFor); a Pinner that
// is not one leaves the default block.
type ImageSizer interface {
	PinSize(ctx context.Context, image string) (Pinned, error)
}

// Pinned is what an ImageSizer found: the manifest digest, the bytes of
// the config and layers, and the number of layers.
type Pinned struct {
	Digest string
	Size   int64
	Layers int
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

// PinSize implements ImageSizer.
func (p RegistryPinner) PinSize(ctx context.Context, image string) (Pinned, error) {
	im, err := p.Registry.Resolve(ctx, image)
	if err != nil {
		return Pinned{}, err
	}
	out := Pinned{Digest: im.Descriptor.Digest.String(), Size: im.Manifest.Config.Size, Layers: len(im.Manifest.Layers)}
	for _, l := range im.Manifest.Layers {
		out.Size += l.Size
	}
	return out, nil
}

// pinTimeout bounds the registry round trips of one definition, well within
// the API server's write timeout.
const pinTimeout = 20 * time.Second

// pin returns the digest image is pinned to: the reference's own digest if
// it has one (the registry is not asked), else what the Pinner resolves. A
// registry that does not have the image is the caller's mistake (400); one
// that cannot be reached or errs is a bad gateway (502).
func (m *Manager) pin(ctx context.Context, image string) (string, error) {
	p, err := m.pinSized(ctx, image)
	return p.Digest, err
}

// pinSized is pin that also returns the image's size where the Pinner is
// an ImageSizer and was asked (Size and Layers 0 otherwise).
func (m *Manager) pinSized(ctx context.Context, image string) (Pinned, error) {
	ref, err := name.ParseReference(image, name.WeakValidation)
	if err != nil {
		return Pinned{}, badRequest("image %q: %v", image, err)
	}
	if d, ok := ref.(name.Digest); ok {
		h, err := digest.Parse(d.DigestStr())
		if err != nil {
			return Pinned{}, badRequest("image %q: %v", image, err)
		}
		return Pinned{Digest: h.String()}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, pinTimeout)
	defer cancel()
	var p Pinned
	if sz, ok := m.opts.Pinner.(ImageSizer); ok {
		p, err = sz.PinSize(ctx, image)
	} else {
		p.Digest, err = m.opts.Pinner.Pin(ctx, image)
	}
	switch {
	case errors.Is(err, upstream.ErrNotFound), errors.Is(err, upstream.ErrUnauthorized), errors.Is(err, upstream.ErrNoPlatform):
		return Pinned{}, badRequest("image %q cannot be pinned to a digest: %v", image, err)
	case err != nil:
		return Pinned{}, &Error{http.StatusBadGateway, fmt.Sprintf("image %q: the registry could not be asked for its digest: %v", image, err)}
	}
	h, err := digest.Parse(p.Digest)
	if err != nil {
		return Pinned{}, &Error{http.StatusBadGateway, fmt.Sprintf("image %q: the registry gave an invalid digest: %v", image, err)}
	}
	p.Digest = h.String()
	return p, nil
}

// PinFunc is a Pinner made of a function.
type PinFunc func(ctx context.Context, image string) (string, error)

// Pin implements Pinner.
func (f PinFunc) Pin(ctx context.Context, image string) (string, error) { return f(ctx, image) }
