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
	memo   map[string]manifestRefs // by manifest digest
	failed map[string]bool         // manifests that would not parse
}

// manifestRefs is what a manifest references: config and layers, or for
// an index its manifests.
type manifestRefs struct {
	digests []string
	index   bool
}

// maxCoverMemo bounds the memory of parsed manifests; content-addressed
// entries never go stale, so a full memo is simply forgotten.
const maxCoverMemo = 1024

func newGrants(w *Worker) *grants {
	return &grants{w: w, memo: map[string]manifestRefs{}, failed: map[string]bool{}}
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
	// Only a manifest this worker fetches itself is worth waiting for: a
	// grant for a function it does not host, or for another image of it,
	// will never be covered here, and must not hold the caller.
	if !g.w.hostsGranted(gr) {
		return g.refuse(r, "not_hosted", fmt.Errorf("%w: this VM hosts no function %s with the image of %s's grant", grant.ErrWrongDigest, gr.Function, gr.VM))
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

// references returns the digests manifest m references, and for an index
// those of its manifests too, up to depth levels down, or false if m is
// not complete in the cache. A manifest of an index that is not here
// covers nothing more: this worker could not serve its blobs anyway.
func (g *grants) references(m string, depth int) ([]string, bool) {
	g.mu.Lock()
	refs, ok := g.memo[m]
	bad := g.failed[m]
	g.mu.Unlock()
	if bad {
		return nil, true
	}
	if !ok {
		var err error
		refs, err = g.w.readCachedManifest(m)
		switch {
		case errors.Is(err, errNotCached):
			return nil, false
		case errors.Is(err, errNoManifest):
			g.remember(m, manifestRefs{}, true) // content-addressed: for good
			return nil, true
		case err != nil:
			return nil, true // a read error: covers nothing, this time
		}
		g.remember(m, refs, false)
	}
	out := slices.Clone(refs.digests)
	if refs.index && depth > 0 {
		for _, c := range refs.digests {
			if sub, ok := g.references(c, depth-1); ok {
				out = append(out, sub...)
			}
		}
	}
	return out, true
}

func (g *grants) remember(m string, refs manifestRefs, failed bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.memo)+len(g.failed) >= maxCoverMemo {
		clear(g.memo)
		clear(g.failed)
	}
	if failed {
		g.failed[m] = true
	} else {
		g.memo[m] = refs
	}
}

var (
	errNotCached  = errors.New("not complete in the cache")
	errNoManifest = errors.New("not a manifest")
)

// readCachedManifest parses manifest m from the cache and returns what it
// references. Only a blob this worker knows as a manifest is read.
func (w *Worker) readCachedManifest(m string) (manifestRefs, error) {
	w.mu.Lock()
	info := w.known[m]
	w.mu.Unlock()
	if info == nil {
		return manifestRefs{}, errNotCached
	}
	if !info.manifest || info.size > upstream.MaxManifestSize {
		return manifestRefs{}, fmt.Errorf("blob %s: %w", m, errNoManifest)
	}
	b, ok := w.cache.Lookup(m)
	if !ok {
		return manifestRefs{}, errNotCached
	}
	defer b.Release()
	if !b.Complete() {
		return manifestRefs{}, errNotCached
	}
	raw := make([]byte, b.Size())
	if _, err := b.ReadAt(raw, 0); err != nil && !errors.Is(err, io.EOF) {
		return manifestRefs{}, err
	}
	parsed, err := upstream.ParseManifest(raw, info.mediaType)
	if err != nil {
		return manifestRefs{}, fmt.Errorf("blob %s: %w: %w", m, errNoManifest, err)
	}
	refs := manifestRefs{index: parsed.IsIndex()}
	if refs.index {
		for _, d := range parsed.Manifests {
			refs.digests = append(refs.digests, d.Digest.String())
		}
		return refs, nil
	}
	refs.digests = append(refs.digests, parsed.Config.Digest.String())
	for _, l := range parsed.Layers {
		refs.digests = append(refs.digests, l.Digest.String())
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
	b, err := w.acquire(d, info)
	if err != nil {
		return err
	}
	defer b.Release()
	return b.Wait(ctx)
}

// hostsGranted reports whether this worker hosts gr's function pinned to
// a manifest the grant names.
func (w *Worker) hostsGranted(gr grant.Grant) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	f, ok := w.fns[gr.Function]
	if !ok {
		return false
	}
	h, err := digest.Parse(f.a.Digest)
	return err == nil && gr.Covers(h)
}
