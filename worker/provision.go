package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/blobcache"
	"github.com/faasnet/faasnet/digest"
	"github.com/faasnet/faasnet/failover"
	"github.com/faasnet/faasnet/lazy"
	"github.com/faasnet/faasnet/peer"
	"github.com/faasnet/faasnet/upstream"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// provision brings f's image into the cache: resolve the image to its
// manifest (from the parent, or the registry at the root), fetch the
// manifest, then every blob, all through the tree. It holds references to
// the blobs while f is assigned so that eviction leaves them alone.
func (w *Worker) provision(ctx context.Context, f *function) {
	defer close(f.done)
	var held []*blobcache.Blob
	defer func() {
		for _, b := range held {
			b.Release()
		}
	}()
	w.setState(f, api.StateFetching, "")
	desc, err := w.resolve(ctx, f)
	if err != nil {
		return // ctx done
	}
	lim := w.cfg.Limits
	if err := checkSize(f.image, "manifest", desc.Size, lim.MaxManifestSize, "--max-manifest-size"); err != nil {
		w.setState(f, api.StateFailed, err.Error())
		return
	}
	mb, err := w.fetchWhole(ctx, f, desc.Digest)
	if err != nil {
		return
	}
	held = append(held, mb)
	m, err := readManifest(mb, desc.MediaType)
	if err != nil {
		w.setState(f, api.StateFailed, fmt.Sprintf("image %s: %v", f.image, err))
		return
	}
	if err := checkSize(f.image, "config "+m.config.Digest.String(), m.config.Size, lim.MaxConfigSize, "--max-config-size"); err != nil {
		w.setState(f, api.StateFailed, err.Error())
		return
	}
	spec, err := parseSpec(f.spec)
	if err != nil {
		w.setState(f, api.StateFailed, err.Error())
		return
	}
	w.phase(f, "manifest")

	repo, _ := w.repository(f.image)
	blobs := []string{desc.Digest}
	total := desc.Size
	w.mu.Lock()
	for _, d := range append([]v1.Descriptor{m.config}, m.layers...) {
		w.learn(f, d.Digest.String(), d.Size, string(d.MediaType), false, repo)
		blobs = append(blobs, d.Digest.String())
		total += d.Size
	}
	f.blobs, f.imageBytes = blobs, total
	w.ensureJob(m.config.Digest.String())
	lazyRun := spec.Readiness != nil && lazy.IsLazy(m.layers)
	for _, d := range m.layers {
		if lazyRun {
			info := w.known[d.Digest.String()]
			info.hold, info.lazy = true, true // fetched as the container reads
		} else {
			w.ensureJob(d.Digest.String())
		}
	}
	w.mu.Unlock()

	if spec.Readiness != nil {
		stop, err := w.runContainer(ctx, f, spec, m, &held)
		if err != nil {
			if ctx.Err() == nil {
				w.setState(f, api.StateFailed, limitError(f.image, err).Error())
			}
			return
		}
		defer stop()
	} else {
		for _, d := range blobs[1:] {
			b, err := w.waitComplete(ctx, f, d)
			if err != nil {
				return
			}
			held = append(held, b)
		}
	}
	if spec.Readiness == nil {
		w.noteBytesBeforeReady(f)
	}
	w.phase(f, "ready")
	w.setState(f, api.StateReady, "")
	w.log.Info("ready", "function", f.name, "image", f.image, "image_bytes", total,
		"took", time.Since(f.started).Round(time.Millisecond))
	<-ctx.Done()
}

// errNotPinned marks a resolve answer that names another manifest than the
// one the manager pinned.
var errNotPinned = errors.New("not the pinned manifest")

// imageRef is how the worker names a's image: by the digest the manager
// pinned it to, so the root fetches exactly that manifest whatever the tag
// names now, and a function pinned again to a moved tag is another image.
// Without a pin (a manager that does not pin) it is a.Image.
func imageRef(a api.Assignment) string {
	if a.Digest == "" {
		return a.Image
	}
	ref, err := name.ParseReference(a.Image, name.WeakValidation)
	if err != nil {
		return a.Image // refused when provisioning starts
	}
	return ref.Context().Name() + "@" + a.Digest
}

// checkPinned refuses a manifest descriptor that is not a's pinned one,
// naming where it came from.
func checkPinned(a api.Assignment, d peer.Descriptor, from string) error {
	if a.Digest == "" || d.Digest == a.Digest {
		return nil
	}
	return fmt.Errorf("%s resolved %s to manifest %s, but the manager pinned it to %s: %w", from, a.Image, d.Digest, a.Digest, errNotPinned)
}

// resolve finds the manifest of f's image: from the parent if f has one
// (so only the root talks to the registry), else from the registry. A
// failing parent is handled by the failover policy, as blob fetches are. A
// parent whose answer is not the pinned manifest is refused (its answer is
// never fetched) and, like a parent that served corrupt bytes, not asked
// again: the registry resolves.
func (w *Worker) resolve(ctx context.Context, f *function) (peer.Descriptor, error) {
	w.mu.Lock()
	pinned := f.a.Digest // fixed for f's lifetime: a new one restarts f
	w.mu.Unlock()
	if pinned != "" {
		if _, err := digest.Parse(pinned); err != nil {
			w.setState(f, api.StateFailed, fmt.Sprintf("image %s: pinned digest: %v", f.image, err))
			return peer.Descriptor{}, err
		}
	}
	var st failover.State
	for {
		w.mu.Lock()
		a, changed := f.a, f.parentChanged
		ref := imageRef(a)
		d, ok := w.images[ref]
		w.mu.Unlock()
		if ok {
			// Remembered from another function of the image: claim the
			// manifest as f's too, or that function's release would stop
			// the fetch f waits for.
			repo, err := w.repository(ref)
			if err != nil {
				return d, err
			}
			w.mu.Lock()
			w.learn(f, d.Digest, d.Size, d.MediaType, true, repo)
			w.mu.Unlock()
			return d, nil
		}
		parent, from := addrOf(a.Parent), a.Parent
		var err error
		if !w.policy.UseRegistry(&st, parent) {
			d, err = w.peers.Resolve(toParent(ctx, *a.Parent, a.Grant), parent, ref)
			if err == nil {
				err = checkPinned(a, d, "parent "+peerName(a.Parent))
			}
			if err == nil {
				return w.rememberImage(f, ref, d, nil)
			}
			if errors.Is(err, errNotPinned) {
				w.metrics.notPinned.Inc()
				w.log.Warn("refusing the parent's manifest: it is not the pinned one", "function", f.name,
					"parent", peerName(a.Parent), "answered", d.Digest, "pinned", a.Digest)
			}
		} else {
			parent, from = "", nil
			var im upstream.Image
			im, err = w.reg.Resolve(ctx, ref)
			if err == nil {
				d = peer.Descriptor{Digest: im.Descriptor.Digest.String(), Size: im.Descriptor.Size, MediaType: string(im.Descriptor.MediaType)}
				if err = checkPinned(a, d, "the registry"); err != nil {
					// Fetched by the pinned digest, so that names an
					// index, not a platform's manifest: nothing to retry.
					w.setState(f, api.StateFailed, fmt.Sprintf("resolving %s: %v (pin a platform manifest, not an index)", a.Image, err))
					return peer.Descriptor{}, err
				}
				return w.rememberImage(f, ref, d, im.RawManifest)
			}
		}
		if ctx.Err() != nil {
			return peer.Descriptor{}, ctx.Err()
		}
		state := api.StateFetching
		if errors.Is(err, upstream.ErrNotFound) || errors.Is(err, upstream.ErrUnauthorized) {
			state = api.StateFailed
		}
		w.setState(f, state, fmt.Sprintf("resolving %s: %v", ref, err))
		outcome, retryAfter := w.outcome(ctx, from, err)
		dec := w.policy.Next(&st, failover.Attempt{Parent: parent, Outcome: outcome, RetryAfter: retryAfter, At: time.Now()})
		if dec.Action == failover.Repair {
			w.kickHeartbeat()
		}
		if !pause(ctx, dec, changed) {
			return peer.Descriptor{}, ctx.Err()
		}
	}
}

// rememberImage records the manifest descriptor of image, and stores the raw
// manifest if the registry gave it.
func (w *Worker) rememberImage(f *function, image string, d peer.Descriptor, raw []byte) (peer.Descriptor, error) {
	repo, err := w.repository(image)
	if err != nil {
		w.setState(f, api.StateFailed, fmt.Sprintf("image %s: %v", image, err))
		return d, err
	}
	w.mu.Lock()
	info := w.learn(f, d.Digest, d.Size, d.MediaType, true, repo)
	w.mu.Unlock()
	if raw != nil {
		// The root got the manifest with the resolve: store it, so that it
		// is not fetched a second time.
		b, err := w.acquire(d.Digest, info)
		if err == nil {
			err = w.writeAll(b, raw, &job{digest: d.Digest, info: info})
			b.Release()
		}
		if err != nil {
			w.setState(f, api.StateFetching, fmt.Sprintf("storing the manifest of %s: %v", image, errString(err)))
		}
	}
	w.mu.Lock()
	w.images[image] = d
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
	w.setState(f, api.StateFetching, "")
	return d, nil
}

// noteBytesBeforeReady records what f fetched until now.
func (w *Worker) noteBytesBeforeReady(f *function) {
	w.mu.Lock()
	defer w.mu.Unlock()
	f.bytesBeforeReady = 0
	for _, d := range f.blobs {
		if info := w.known[d]; info != nil {
			f.bytesBeforeReady += info.fromParent.Load() + info.fromReg.Load()
		}
	}
}

// repository is where the registry keeps image's blobs.
func (w *Worker) repository(image string) (name.Repository, error) {
	ref, err := w.reg.ParseReference(image)
	if err != nil {
		return name.Repository{}, err
	}
	return ref.Context(), nil
}

// fetchWhole makes sure digest is fetched and returns it complete.
func (w *Worker) fetchWhole(ctx context.Context, f *function, digest string) (*blobcache.Blob, error) {
	w.mu.Lock()
	w.ensureJob(digest)
	w.mu.Unlock()
	return w.waitComplete(ctx, f, digest)
}

// waitComplete waits until digest is complete and verified, reporting the
// fetch's trouble in f's status meanwhile. It returns a reference.
func (w *Worker) waitComplete(ctx context.Context, f *function, digest string) (*blobcache.Blob, error) {
	w.mu.Lock()
	info := w.known[digest]
	w.mu.Unlock()
	b, err := w.acquire(digest, info)
	if err != nil {
		w.setState(f, api.StateFailed, fmt.Sprintf("blob %s: %v", digest, errString(err)))
		return nil, err
	}
	for !b.Complete() {
		// Wake every second to surface the fetch's trouble in the status.
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		err := b.Wait(wctx)
		cancel()
		if ctx.Err() != nil {
			b.Release()
			return nil, ctx.Err()
		}
		if err != nil && !errors.Is(err, blobcache.ErrCorrupt) && !errors.Is(err, context.DeadlineExceeded) {
			w.setState(f, api.StateFetching, fmt.Sprintf("blob %s: %v", digest, errString(err)))
		}
		// Surface the fetch's last error while we wait; restart the job if
		// it ended without completing the blob (e.g. the disk was full).
		w.mu.Lock()
		lastErr := info.lastErr
		if !b.Complete() {
			w.ensureJob(digest)
		}
		w.mu.Unlock()
		if lastErr != nil && !b.Complete() {
			state := api.StateFetching
			if errors.Is(lastErr, blobcache.ErrNoSpace) {
				state = api.StateFailed // it keeps trying, but an operator must act
			}
			w.setState(f, state, fmt.Sprintf("blob %s: %s", digest, errString(lastErr)))
		}
	}
	return b, nil
}

// readManifest reads and parses a complete manifest blob.
func readManifest(b *blobcache.Blob, mediaType string) (manifestInfo, error) {
	if b.Size() > upstream.MaxManifestSize {
		return manifestInfo{}, fmt.Errorf("manifest of %d bytes is over the %d limit", b.Size(), upstream.MaxManifestSize)
	}
	raw := make([]byte, b.Size())
	if _, err := b.ReadAt(raw, 0); err != nil && !errors.Is(err, io.EOF) {
		return manifestInfo{}, err
	}
	m, err := upstream.ParseManifest(raw, mediaType)
	if err != nil {
		return manifestInfo{}, err
	}
	if m.IsIndex() {
		return manifestInfo{}, errors.New("the manifest is an index; expected a platform manifest")
	}
	return manifestInfo{raw: raw, mt: string(m.MediaType), config: m.Config, layers: m.Layers}, nil
}
