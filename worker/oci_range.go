package worker

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/faasnet/faasnet/lazy"
	"github.com/faasnet/faasnet/ociserve"
)

// Parts of blobs for the local runtime: a lazy snapshotter (stargz) asks a
// layer's size with HEAD, then ranges as its files are read, and must not
// wait for the whole layer. A range of an eStargz layer is a demand, fetched
// through the tree ahead of background streaming as the lazy filesystem's
// reads are, and each span of it is checked against the layer's TOC before
// it goes out (lazy.RangeVerifier says what that proves). A range of
// another blob, or one the TOC cannot vouch for, waits for the whole blob,
// verified by its digest.

// maxVerifiers bounds the layers whose TOC the endpoint keeps parsed.
const maxVerifiers = 64

// errNotLazy marks a blob that is not an eStargz layer of the image.
var errNotLazy = errors.New("not an eStargz layer")

// rangeContent is the local runtime endpoint's content: content, plus
// parts of blobs before they are complete (ociserve.RangeContent).
type rangeContent struct {
	content
	mu        sync.Mutex
	verifiers map[string]*lazy.RangeVerifier // by layer digest
	tocFailed map[string]bool                // layers whose TOC was fetched again

	waiting chan<- struct{} // tests: told when a blob request waits in matchBlob
}

func newRangeContent(w *Worker) *rangeContent {
	return &rangeContent{content: content{w}, verifiers: map[string]*lazy.RangeVerifier{}, tocFailed: map[string]bool{}}
}

// learnWait bounds how long a blob request waits for a function whose
// manifest is served to learn the blobs the manifest lists.
const learnWait = 5 * time.Second

// matchBlob is match for a blob. The manifest is served as soon as it is
// verified, a moment before the function records the blobs it lists, and a
// runtime asks for them at once: while a function of repo has not recorded
// its blobs, it waits for it (up to learnWait), polling, since recording
// blobs already known for another function signals nothing.
func (c *rangeContent) matchBlob(ctx context.Context, ns, repo, digest string) (string, error) {
	var deadline <-chan time.Time
	for {
		if image, ok := c.match(ns, repo, digest); ok {
			return image, nil
		}
		if !c.learning(ns, repo) {
			return "", ociserve.ErrNotFound
		}
		if deadline == nil {
			t := time.NewTimer(learnWait)
			defer t.Stop()
			deadline = t.C
		}
		if c.waiting != nil {
			select {
			case c.waiting <- struct{}{}:
			default:
			}
		}
		poll := time.NewTimer(10 * time.Millisecond)
		select {
		case <-poll.C:
		case <-deadline:
			poll.Stop()
			return "", ociserve.ErrNotFound
		case <-ctx.Done():
			poll.Stop()
			return "", ctx.Err()
		}
	}
}

// learning reports whether a function of repo (from registry ns, if set)
// has its image's manifest but has not recorded its blobs yet.
func (c *rangeContent) learning(ns, repo string) bool {
	w := c.w
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, f := range w.fns {
		ref, err := name.ParseReference(f.a.Image, name.WeakValidation)
		if err != nil || ref.Context().RepositoryStr() != repo || (ns != "" && ns != ref.Context().RegistryStr()) {
			continue
		}
		if _, ok := w.images[imageRef(f.a)]; ok && len(f.blobs) == 0 {
			return true
		}
	}
	return false
}

// Blob is content.Blob, once the function knows its blobs.
func (c *rangeContent) Blob(ctx context.Context, ns, repo, digest string) (io.ReadSeekCloser, error) {
	if _, err := c.matchBlob(ctx, ns, repo, digest); err != nil {
		return nil, err
	}
	return c.content.Blob(ctx, ns, repo, digest)
}

// BlobSize is the blob's size as the manifest gives it: known before any
// of its bytes.
func (c *rangeContent) BlobSize(ctx context.Context, ns, repo, digest string) (int64, error) {
	if _, err := c.matchBlob(ctx, ns, repo, digest); err != nil {
		return 0, err
	}
	c.w.mu.Lock()
	info := c.w.known[digest]
	c.w.mu.Unlock()
	if info == nil {
		return 0, ociserve.ErrNotFound
	}
	return info.size, nil
}

// BlobRange serves [off, off+n) of the blob: from the cache if the blob is
// complete, verified span by span if it is an eStargz layer, and otherwise
// once the whole blob is complete.
func (c *rangeContent) BlobRange(ctx context.Context, ns, repo, digest string, off, n int64) (io.ReadCloser, error) {
	image, err := c.matchBlob(ctx, ns, repo, digest)
	if err != nil {
		return nil, err
	}
	if b, ok := c.w.cache.Lookup(digest); ok {
		if b.Complete() {
			return &blobFile{io.NewSectionReader(b, off, n), b.Release}, nil
		}
		b.Release()
	}
	r, err := c.verifiedRange(ctx, image, digest, off, n)
	if err == nil || ctx.Err() != nil || errors.Is(err, lazy.ErrVerify) {
		return r, err
	}
	if !errors.Is(err, errNotLazy) && !errors.Is(err, lazy.ErrUnverifiable) {
		c.w.log.Warn("local runtime: a range of a lazy layer cannot be verified yet; it waits for the whole layer",
			"digest", digest, "offset", off, "length", n, "err", err)
	}
	c.w.mu.Lock()
	c.w.ensureJob(digest) // a lazy layer may be held back for reads
	c.w.mu.Unlock()
	blob, err := c.Blob(ctx, ns, repo, digest)
	if err != nil {
		return nil, err
	}
	if _, err := blob.Seek(off, io.SeekStart); err != nil {
		blob.Close()
		return nil, fmt.Errorf("blob %s: seeking to %d: %w", digest, off, err)
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(blob, n), blob}, nil
}

// verifiedRange reads [off, off+n) of an eStargz layer through the tree on
// demand. The first span is verified before it returns, so that a range
// that cannot be served fails before any answer is sent.
func (c *rangeContent) verifiedRange(ctx context.Context, image, digest string, off, n int64) (io.ReadCloser, error) {
	v, err := c.verifier(ctx, image, digest)
	if err != nil {
		return nil, err
	}
	r, err := v.NewReader(ctx, lazyBlob{c.w, digest}, off, n)
	if err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(r, 64<<10)
	if _, err := br.Peek(1); err != nil {
		return nil, fmt.Errorf("blob %s, range %d+%d: %w", digest, off, n, err)
	}
	return io.NopCloser(br), nil
}

// verifier returns the range verifier of a layer of image, reading and
// checking its TOC through the tree the first time.
func (c *rangeContent) verifier(ctx context.Context, image, digest string) (*lazy.RangeVerifier, error) {
	c.mu.Lock()
	v := c.verifiers[digest]
	c.mu.Unlock()
	if v != nil {
		return v, nil
	}
	d, err := c.layer(ctx, image, digest)
	if err != nil {
		return nil, err
	}
	if !lazy.IsLazyLayer(d) {
		return nil, errNotLazy
	}
	lim := c.w.cfg.Limits.container().Lazy
	lb := lazyBlob{c.w, digest}
	ix, err := lazy.ReadTOC(ctx, lb, d.Size, d.Annotations[lazy.TOCDigestAnnotation], lim)
	if err != nil && ctx.Err() == nil && !errors.Is(err, lazy.ErrLimit) && c.firstTOCFailure(digest) {
		// The footer and TOC came through a parent that may have damaged
		// them, and are kept: fetch them again from the registry, once a
		// layer, so that a broken layer does not cost the registry a
		// fetch per range.
		c.w.log.Warn("local runtime: the TOC of a lazy layer failed; fetching it again from the registry", "digest", digest, "err", err)
		if rerr := refetchTOC(ctx, lb, d.Size, lim); rerr != nil {
			return nil, fmt.Errorf("layer %s: %w; fetching the TOC again: %w", digest, err, rerr)
		}
		ix, err = lazy.ReadTOC(ctx, lb, d.Size, d.Annotations[lazy.TOCDigestAnnotation], lim)
	}
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", digest, err)
	}
	v = lazy.NewRangeVerifier(ix, lim)
	c.mu.Lock()
	if len(c.verifiers) >= maxVerifiers {
		for k := range c.verifiers { // any one: they are rebuilt on demand
			delete(c.verifiers, k)
			break
		}
	}
	c.verifiers[digest] = v
	c.mu.Unlock()
	return v, nil
}

// firstTOCFailure reports whether the TOC of digest failed for the first
// time.
func (c *rangeContent) firstTOCFailure(digest string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tocFailed[digest] {
		return false
	}
	if len(c.tocFailed) >= maxVerifiers {
		clear(c.tocFailed)
	}
	c.tocFailed[digest] = true
	return true
}

// refetchTOC drops the footer and TOC of an eStargz blob of size bytes
// and fetches them again from the registry: the footer first, which says
// where the TOC starts.
func refetchTOC(ctx context.Context, lb lazyBlob, size int64, lim lazy.Limits) error {
	n := min(size, int64(estargz.FooterSize))
	if err := lb.Refetch(ctx, size-n, n, true); err != nil {
		return err
	}
	footer := make([]byte, n)
	if _, err := lb.ReadAt(ctx, footer, size-n); err != nil {
		return fmt.Errorf("reading the footer: %w", err)
	}
	_, tocOff, _, err := new(estargz.GzipDecompressor).ParseFooter(footer)
	if err != nil {
		return fmt.Errorf("footer: %w", err)
	}
	maxTOC := lim.MaxTOCSize
	if maxTOC <= 0 {
		maxTOC = lazy.DefaultMaxTOCSize
	}
	if tocOff < 0 || tocOff >= size-n || size-n-tocOff > maxTOC {
		return fmt.Errorf("footer puts the TOC at %d of %d bytes", tocOff, size)
	}
	return lb.Refetch(ctx, tocOff, size-n-tocOff, true)
}

// layer returns the descriptor of the blob digest in image's manifest;
// errNotLazy if it is not one of its layers (the config).
func (c *rangeContent) layer(ctx context.Context, image, digest string) (v1.Descriptor, error) {
	d, b, err := c.w.verifiedManifest(ctx, image)
	if err != nil {
		return v1.Descriptor{}, err
	}
	defer b.Release()
	m, err := readManifest(b, d.MediaType)
	if err != nil {
		return v1.Descriptor{}, fmt.Errorf("manifest of %s: %w", image, err)
	}
	for _, l := range m.layers {
		if l.Digest.String() == digest {
			return l, nil
		}
	}
	return v1.Descriptor{}, errNotLazy
}
