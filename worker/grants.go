package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/faasnet/faasnet/digest"
	"github.com/faasnet/faasnet/grant"
	"github.com/faasnet/faasnet/peer"
	"github.com/faasnet/faasnet/upstream"
	"github.com/google/go-containerregistry/pkg/name"
)

// grants is the peer server's Authorizer on a secure worker: a VM may read
// a blob only with a grant of the manager that names it (the caller's
// certificate) and covers the blob: the granted manifest itself, or a blob
// that manifest references (for an index, its manifests and theirs), as
// read from the manifest in this worker's cache, whose bytes were checked
// against the granted digest. Every refusal is immediate; only a granted
// manifest that this worker has not fetched yet is waited for, as any
// content not known yet is.
type grants struct {
	w *Worker

	mu     sync.Mutex
	blobs  map[string][]string // manifest digest -> the digests it references
	failed map[string]bool     // manifests that would not parse
}

// maxCoverMemo bounds the memory of parsed manifests; content-addressed
// entries never go stale, so a full memo is simply forgotten.
const maxCoverMemo = 1024

func newGrants(w *Worker) *grants {
	return &grants{w: w, blobs: map[string][]string{}, failed: map[string]bool{}}
}

// callerGrant returns the request's grant, checked against the CA key,
// the time and the caller's VM, or counts and logs the refusal.
func (g *grants) callerGrant(r *http.Request) (grant.Grant, error) {
	vals := r.Header.Values(grant.Header)
	var gr grant.Grant
	var err error
	reason := ""
	switch len(vals) {
	case 0:
		reason, err = "no_grant", errors.New("no grant")
	case 1:
		gr, err = grant.Check(vals[0], g.w.cfg.Security.CA.PublicKey, time.Now(), identity(r.Context()).VM)
		if err != nil {
			reason = grant.Reason(err)
		}
	default:
		reason, err = "malformed", fmt.Errorf("%w: %d grant headers", grant.ErrMalformed, len(vals))
	}
	if err != nil {
		return gr, g.refuse(r, reason, err)
	}
	return gr, nil
}

func (g *grants) refuse(r *http.Request, reason string, err error) error {
	g.w.refused(r, reason, err)
	return fmt.Errorf("%w: %w", peer.ErrForbidden, err)
}

// AuthorizeBlob lets a blob through if the caller's grant covers it.
func (g *grants) AuthorizeBlob(r *http.Request, d string) error {
	gr, err := g.callerGrant(r)
	if err != nil {
		return err
	}
	h, err := digest.Parse(d)
	if err != nil {
		return g.refuse(r, "malformed", err)
	}
	if gr.Covers(h) {
		return nil
	}
	ctx, cancel := context.WithTimeout(r.Context(), knownWait)
	defer cancel()
	for {
		covered, pending := g.covers(gr, d)
		switch {
		case covered:
			return nil
		case pending == "":
			return g.refuse(r, "wrong_digest", fmt.Errorf("%w: blob %s is in no manifest of %s's grant for %s", grant.ErrWrongDigest, d, gr.VM, gr.Function))
		}
		if err := g.w.waitCached(ctx, pending); err != nil {
			if r.Context().Err() != nil {
				return r.Context().Err()
			}
			return fmt.Errorf("the manifest %s of the caller's grant is not here yet: %w", pending, peer.ErrNotFound)
		}
	}
}

// AuthorizeResolve refuses at once a caller without a valid grant, and one
// asking for an image by a digest its grant does not name.
func (g *grants) AuthorizeResolve(r *http.Request, image string) error {
	gr, err := g.callerGrant(r)
	if err != nil {
		return err
	}
	ref, err := name.ParseReference(image, name.WeakValidation)
	if err != nil {
		return nil // the Resolver answers what it does not know
	}
	if dr, ok := ref.(name.Digest); ok {
		h, err := digest.Parse(dr.DigestStr())
		if err != nil || !gr.Covers(h) {
			return g.refuse(r, "wrong_digest", fmt.Errorf("%w: image %s is not %s's grant for %s", grant.ErrWrongDigest, image, gr.VM, gr.Function))
		}
	}
	return nil
}

// AuthorizeManifest lets a resolve answer through only if the grant names
// the manifest.
func (g *grants) AuthorizeManifest(r *http.Request, d peer.Descriptor) error {
	gr, err := g.callerGrant(r)
	if err != nil {
		return err
	}
	h, err := digest.Parse(d.Digest)
	if err != nil || !gr.Covers(h) {
		return g.refuse(r, "wrong_digest", fmt.Errorf("%w: manifest %s is not in %s's grant for %s", grant.ErrWrongDigest, d.Digest, gr.VM, gr.Function))
	}
	return nil
}

// covers reports whether a manifest of gr references d, or else a granted
// manifest not in the cache yet that might.
func (g *grants) covers(gr grant.Grant, d string) (covered bool, pending string) {
	for _, m := range gr.Digests {
		refs, ok := g.references(m.String(), 1)
		if !ok {
			if pending == "" {
				pending = m.String()
			}
			continue
		}
		if slices.Contains(refs, d) {
			return true, ""
		}
	}
	return false, pending
}

// references returns the digests manifest m references, and those of the
// manifests it references up to depth levels down (an index's manifests),
// or false if m is not complete in the cache. A child manifest of an index
// that is not here covers nothing more: this worker could not serve its
// blobs anyway.
func (g *grants) references(m string, depth int) ([]string, bool) {
	g.mu.Lock()
	refs, ok := g.blobs[m]
	bad := g.failed[m]
	g.mu.Unlock()
	if bad {
		return nil, true
	}
	if !ok {
		parsed, err := g.w.readCachedManifest(m)
		switch {
		case errors.Is(err, errNotCached):
			return nil, false
		case err != nil:
			g.remember(m, nil, true)
			return nil, true
		}
		refs = parsed
		g.remember(m, refs, false)
	}
	out := slices.Clone(refs)
	if depth > 0 {
		for _, c := range refs {
			if sub, ok := g.references(c, depth-1); ok {
				out = append(out, sub...)
			}
		}
	}
	return out, true
}

func (g *grants) remember(m string, refs []string, failed bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.blobs)+len(g.failed) >= maxCoverMemo {
		clear(g.blobs)
		clear(g.failed)
	}
	if failed {
		g.failed[m] = true
	} else {
		g.blobs[m] = refs
	}
}

var errNotCached = errors.New("not complete in the cache")

// readCachedManifest parses manifest m from the cache and returns the
// digests it references: config and layers, or an index's manifests. Only
// a blob this worker knows as a manifest is read.
func (w *Worker) readCachedManifest(m string) ([]string, error) {
	w.mu.Lock()
	info := w.known[m]
	w.mu.Unlock()
	if info == nil {
		return nil, errNotCached
	}
	if !info.manifest || info.size > upstream.MaxManifestSize {
		return nil, fmt.Errorf("blob %s is not a manifest", m)
	}
	b, ok := w.cache.Lookup(m)
	if !ok {
		return nil, errNotCached
	}
	defer b.Release()
	if !b.Complete() {
		return nil, errNotCached
	}
	raw := make([]byte, b.Size())
	if _, err := b.ReadAt(raw, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	parsed, err := upstream.ParseManifest(raw, info.mediaType)
	if err != nil {
		return nil, err
	}
	var refs []string
	if parsed.IsIndex() {
		for _, d := range parsed.Manifests {
			refs = append(refs, d.Digest.String())
		}
		return refs, nil
	}
	refs = append(refs, parsed.Config.Digest.String())
	for _, l := range parsed.Layers {
		refs = append(refs, l.Digest.String())
	}
	return refs, nil
}

// waitCached waits until blob d is known and complete in the cache, or
// ctx is done.
func (w *Worker) waitCached(ctx context.Context, d string) error {
	info, err := w.waitKnown(ctx, d)
	if err != nil {
		return err
	}
	b, err := w.cache.Acquire(d, info.size)
	if err != nil {
		return err
	}
	defer b.Release()
	return b.Wait(ctx)
}
