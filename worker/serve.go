package worker

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/faasnet/faasnet/blobcache"
	"github.com/faasnet/faasnet/digest"
	"github.com/faasnet/faasnet/ociserve"
	"github.com/faasnet/faasnet/peer"
	"github.com/google/go-containerregistry/pkg/name"
)

// knownWait bounds how long a child's request for a blob or image the
// worker has not learnt of yet waits: the child may have parsed a manifest
// a moment before this worker did.
const knownWait = 10 * time.Second

// Open serves a blob to a child (peer.Source). A blob this worker is still
// receiving is served as it arrives; one it has not started is fetched
// upstream first.
func (w *Worker) Open(ctx context.Context, digest string) (peer.Blob, func(), error) {
	if b, ok := w.cache.Lookup(digest); ok {
		if b.Complete() {
			return b, b.Release, nil
		}
		// Partial: served through a reference taken below, with the job
		// it may need started.
		b.Release()
	}
	info, err := w.waitKnown(ctx, digest)
	if err != nil {
		return nil, nil, err
	}
	b, err := w.acquire(digest, info)
	if err != nil {
		return nil, nil, fmt.Errorf("blob %s: %w", digest, err)
	}
	w.mu.Lock()
	// The child needs the blob while it has it open: a fetch goes on for
	// it even if no function here needs the blob any more.
	info.readers++
	if !b.Complete() && !peer.IsDemand(ctx) && !info.hold {
		// A child streaming the blob: stream it here too. A demanded
		// range is fetched by the servedBlob's Reader instead, so lazy
		// images are not pulled whole by one child's read.
		w.ensureJob(digest)
	}
	w.mu.Unlock()
	release := func() {
		b.Release()
		w.mu.Lock()
		info.readers--
		w.stopUnneeded(digest)
		w.mu.Unlock()
	}
	return servedBlob{b, w}, release, nil
}

// waitKnown waits until digest is a blob of one of the worker's images.
func (w *Worker) waitKnown(ctx context.Context, digest string) (*blobInfo, error) {
	deadline := time.NewTimer(knownWait)
	defer deadline.Stop()
	for {
		w.mu.Lock()
		info, changed := w.known[digest], w.changed
		w.mu.Unlock()
		if info != nil {
			return info, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-deadline.C:
			return nil, fmt.Errorf("blob %s is not part of any image this VM hosts: %w", digest, peer.ErrNotFound)
		case <-changed:
		}
	}
}

// Resolve tells a child the manifest of an image this worker hosts
// (peer.Resolver), waiting for this worker's own resolution if needed.
func (w *Worker) Resolve(ctx context.Context, image string) (peer.Descriptor, error) {
	deadline := time.NewTimer(knownWait)
	defer deadline.Stop()
	for {
		w.mu.Lock()
		d, ok := w.images[image]
		hosted := false
		for _, f := range w.fns {
			hosted = hosted || imageRef(f.a) == image
		}
		changed := w.changed
		w.mu.Unlock()
		if ok {
			return d, nil
		}
		// A child may ask before this VM got its own assignment (the
		// manager pushes to both at once): wait for it a little.
		select {
		case <-ctx.Done():
			return peer.Descriptor{}, ctx.Err()
		case <-deadline.C:
			if !hosted {
				return peer.Descriptor{}, fmt.Errorf("image %s is not hosted here: %w", image, peer.ErrNotFound)
			}
			return peer.Descriptor{}, fmt.Errorf("image %s is not resolved yet: %w", image, peer.ErrNotFound)
		case <-changed:
		}
	}
}

// content serves the local container runtime (ociserve.Content): the
// images of the worker's functions, complete and verified blobs only.
type content struct{ w *Worker }

// match finds an image of the worker's functions for a runtime's request:
// same repository, the registry host if the runtime named one (?ns=), and
// the tag, or a digest of the image.
func (c content) match(ns, repo, reference string) (image string, ok bool) {
	w := c.w
	_, err := digest.Parse(reference)
	isDigest := err == nil
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, f := range w.fns {
		ref, err := name.ParseReference(f.a.Image, name.WeakValidation)
		if err != nil || ref.Context().RepositoryStr() != repo {
			continue
		}
		if ns != "" && ns != ref.Context().RegistryStr() {
			continue
		}
		key := imageRef(f.a)
		d := w.images[key]
		if reference == ref.Identifier() || reference == d.Digest {
			return key, true
		}
		if isDigest {
			for _, b := range f.blobs {
				if b == reference {
					return key, true
				}
			}
		}
	}
	return "", false
}

// Manifest serves an image's manifest once the image's manifest is verified.
func (c content) Manifest(ctx context.Context, ns, repo, reference string) (ociserve.Manifest, error) {
	image, ok := c.match(ns, repo, reference)
	if !ok {
		return ociserve.Manifest{}, ociserve.ErrNotFound
	}
	d, b, err := c.w.verifiedManifest(ctx, image)
	if err != nil {
		return ociserve.Manifest{}, err
	}
	defer b.Release()
	if n, max := b.Size(), c.w.cfg.Limits.MaxManifestSize; n > max {
		return ociserve.Manifest{}, fmt.Errorf("manifest %s of %d bytes is over the worker's limit of %d (--max-manifest-size)", d.Digest, n, max)
	}
	body := make([]byte, b.Size())
	if _, err := b.ReadAt(body, 0); err != nil && err != io.EOF {
		return ociserve.Manifest{}, err
	}
	return ociserve.Manifest{MediaType: d.MediaType, Digest: d.Digest, Body: body}, nil
}

// verifiedManifest returns the descriptor of image's remembered manifest
// and, once it is complete and verified, its blob (to Release);
// ociserve.ErrNotFound if the worker holds no such image.
func (w *Worker) verifiedManifest(ctx context.Context, image string) (peer.Descriptor, *blobcache.Blob, error) {
	w.mu.Lock()
	d, ok := w.images[image]
	w.mu.Unlock()
	if !ok {
		return d, nil, ociserve.ErrNotFound
	}
	b, ok := w.cache.Lookup(d.Digest)
	if !ok {
		return d, nil, ociserve.ErrNotFound
	}
	if err := b.Wait(ctx); err != nil {
		b.Release()
		return d, nil, err
	}
	return d, b, nil
}

// Blob serves a blob of a hosted image once it is complete and verified.
func (c content) Blob(ctx context.Context, ns, repo, digest string) (io.ReadSeekCloser, error) {
	if _, ok := c.match(ns, repo, digest); !ok {
		return nil, ociserve.ErrNotFound
	}
	b, ok := c.w.cache.Lookup(digest)
	if !ok {
		return nil, ociserve.ErrNotFound
	}
	if err := b.Wait(ctx); err != nil {
		b.Release()
		return nil, err
	}
	return &blobFile{io.NewSectionReader(b, 0, b.Size()), b.Release}, nil
}

type blobFile struct {
	*io.SectionReader
	release func()
}

func (f *blobFile) Close() error { f.release(); return nil }
