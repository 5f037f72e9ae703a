package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"sync/atomic"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/blobcache"
	"github.com/faasnet/faasnet/bwlimit"
	"github.com/faasnet/faasnet/peer"
	"github.com/google/go-containerregistry/pkg/name"
)

// blobInfo is what the worker knows about a blob of one of its images.
// Guarded by Worker.mu except the counters.
type blobInfo struct {
	size      int64
	mediaType string
	manifest  bool            // fetched from the registry's manifest endpoint
	repo      name.Repository // where the registry keeps it
	fns       map[string]bool // functions whose image holds it
	lastErr   error           // the fetch's last failure, shown in status while waiting
	// hold defers background streaming of a lazy layer until this VM's
	// container answered: a child's streaming request must not pull the
	// whole layer ahead of the container's own reads.
	hold       bool
	fromParent atomic.Int64
	fromReg    atomic.Int64
}

// learn records a blob of f's image; it wakes requests waiting for it.
// Called with w.mu held.
func (w *Worker) learn(fn, digest string, size int64, mediaType string, manifest bool, repo name.Repository) *blobInfo {
	info := w.known[digest]
	if info == nil {
		info = &blobInfo{size: size, mediaType: mediaType, manifest: manifest, repo: repo, fns: map[string]bool{}}
		w.known[digest] = info
		close(w.changed)
		w.changed = make(chan struct{})
	}
	if fn != "" {
		info.fns[fn] = true
	}
	return info
}

// job fetches one blob into the cache until it is complete and verified.
// One job per digest, shared by every function and child that needs it.
type job struct {
	digest string
	info   *blobInfo
	done   chan struct{}

	distrust   bool      // the tree served bad bytes: use the registry
	failedAddr string    // the parent that last failed
	failedAt   time.Time // when it started failing
}

// ensureJob starts fetching digest unless a fetch is running or the blob is
// complete. Called with w.mu held.
func (w *Worker) ensureJob(digest string) {
	if _, ok := w.jobs[digest]; ok || w.ctx == nil || w.ctx.Err() != nil {
		return
	}
	info := w.known[digest]
	j := &job{digest: digest, info: info, done: make(chan struct{})}
	w.jobs[digest] = j
	go func() {
		defer close(j.done)
		w.runJob(w.ctx, j)
		w.mu.Lock()
		delete(w.jobs, digest)
		w.mu.Unlock()
	}()
}

// source is where the next attempt fetches from.
type source struct {
	parent  *api.Peer     // nil: the registry
	changed chan struct{} // closed when the function's parent changes
}

// pickSource chooses the parent of a function that needs the blob; if no
// function has a parent (this VM is a root) or the tree failed, the registry.
func (w *Worker) pickSource(j *job) source {
	w.mu.Lock()
	defer w.mu.Unlock()
	names := make([]string, 0, len(j.info.fns))
	for fn := range j.info.fns {
		names = append(names, fn)
	}
	sort.Strings(names)
	var src source
	for _, fn := range names {
		f := w.fns[fn]
		if f == nil {
			continue
		}
		if src.changed == nil {
			src.changed = f.parentChanged
		}
		if f.a.Parent != nil {
			p := *f.a.Parent
			return source{parent: &p, changed: f.parentChanged}
		}
	}
	return src
}

var errStalled = errors.New("no data within the stall timeout")

// errSlowParent is a stall of a parent that still answers its health check:
// it may be waiting for its own parent, so it is kept for a while.
var errSlowParent = errors.New("parent alive but delivering nothing")

// runJob fetches until the blob is complete, switching sources on failure.
func (w *Worker) runJob(ctx context.Context, j *job) {
	b, err := w.cache.Acquire(j.digest, j.info.size)
	if err != nil {
		w.jobFailed(j, fmt.Errorf("cache: %w", err))
		return
	}
	defer b.Release()
	backoff := 200 * time.Millisecond
	var slowSince time.Time
	for !b.Complete() && ctx.Err() == nil {
		src := w.pickSource(j)
		useRegistry := src.parent == nil || j.distrust
		if !useRegistry && src.parent.Addr == j.failedAddr && time.Since(j.failedAt) > w.cfg.ParentTimeout {
			useRegistry = true // the tree has not been repaired in time
		}
		var err error
		progress := b.NextMissing(0)
		if useRegistry {
			err = w.fetchFromRegistry(ctx, j, b)
		} else {
			err = w.fetchFromParent(ctx, j, b, src.parent)
		}
		if b.NextMissing(0) != progress {
			slowSince = time.Time{} // it delivered something this time
		}
		if errors.Is(err, errSlowParent) {
			// Keep a slow parent, but not forever: one that delivers
			// nothing for ParentTimeout counts as failed.
			if slowSince.IsZero() {
				slowSince = time.Now()
			}
			if time.Since(slowSince) < w.cfg.ParentTimeout {
				continue
			}
			err = fmt.Errorf("parent %s delivered nothing for %v: %w", peerName(src.parent), time.Since(slowSince).Round(time.Second), errStalled)
		}
		if err == nil || !errors.Is(err, errStalled) {
			slowSince = time.Time{}
		}
		switch {
		case err == nil:
			backoff = 200 * time.Millisecond
			j.failedAddr = ""
			continue
		case ctx.Err() != nil:
			return
		case errors.Is(err, blobcache.ErrCorrupt):
			w.metrics.verifyFailures.Inc()
			w.log.Warn("blob failed verification: dropped, fetching it again from the registry",
				"digest", j.digest, "source", sourceName(src, useRegistry))
			j.distrust = true
			continue
		case !useRegistry:
			if j.failedAddr != src.parent.Addr {
				j.failedAddr, j.failedAt = src.parent.Addr, time.Now()
			}
			w.log.Warn("parent failed; asking the manager", "digest", j.digest, "parent", peerName(src.parent), "err", err)
			w.kickHeartbeat()
		default:
			w.log.Warn("registry fetch failed", "digest", j.digest, "err", err)
		}
		w.jobFailed(j, err)
		// Wait for a new parent, or retry after a pause.
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-src.changed:
		case <-t.C:
		}
		t.Stop()
		backoff = min(2*backoff, 2*time.Second)
	}
}

func sourceName(s source, registry bool) string {
	if registry {
		return "registry"
	}
	return peerName(s.parent)
}

func (w *Worker) jobFailed(j *job, err error) {
	w.mu.Lock()
	j.info.lastErr = err
	w.mu.Unlock()
	w.markReport()
}

// fetchFromParent streams the missing blocks from the parent. A parent that
// errs is probed: if it is alive and merely slow (waiting for its own
// parent), the caller retries it; otherwise it counts as failed.
func (w *Worker) fetchFromParent(ctx context.Context, j *job, b *blobcache.Blob, p *api.Peer) error {
	return w.parentWindow(ctx, j, b, p, 0, b.Blocks())
}

// parentWindow fetches the missing blocks in [from, to) from the parent.
func (w *Worker) parentWindow(ctx context.Context, j *job, b *blobcache.Blob, p *api.Peer, from, to int) error {
	err := w.fillWindow(ctx, b, j, from, to, true, func(ctx context.Context, off, n int64) (io.ReadCloser, error) {
		return w.peers.Open(ctx, p.Addr, j.digest, off, n)
	})
	if err == nil || errors.Is(err, blobcache.ErrCorrupt) || ctx.Err() != nil {
		return err
	}
	if errors.Is(err, errStalled) && w.alive(ctx, p.Addr) {
		return errSlowParent
	}
	return fmt.Errorf("parent %s: %w", peerName(p), err)
}

// alive probes a peer's /healthz.
func (w *Worker) alive(ctx context.Context, addr string) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/healthz", nil)
	if err != nil {
		return false
	}
	resp, err := w.peers.HTTP.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// fetchFromRegistry fetches the missing blocks from the registry (manifests
// whole, from the manifest endpoint).
func (w *Worker) fetchFromRegistry(ctx context.Context, j *job, b *blobcache.Blob) error {
	return w.registryWindow(ctx, j, b, 0, b.Blocks())
}

// registryWindow fetches the missing blocks in [from, to) from the registry.
func (w *Worker) registryWindow(ctx context.Context, j *job, b *blobcache.Blob, from, to int) error {
	if j.info.manifest {
		raw, _, err := w.reg.FetchManifest(ctx, j.info.repo, j.digest)
		if err != nil {
			return err
		}
		return w.writeAll(b, raw, j)
	}
	return w.fillWindow(ctx, b, j, from, to, false, func(ctx context.Context, off, n int64) (io.ReadCloser, error) {
		rc, err := w.reg.OpenBlob(ctx, j.info.repo, j.digest, off, n)
		if err != nil {
			return nil, err
		}
		return readCloser{bwlimit.NewReader(ctx, rc, w.down), rc}, nil
	})
}

type readCloser struct {
	io.Reader
	io.Closer
}

// writeAll stores a whole small blob held in memory: a manifest from the
// registry.
func (w *Worker) writeAll(b *blobcache.Blob, raw []byte, j *job) error {
	if int64(len(raw)) != b.Size() {
		return fmt.Errorf("blob %s: got %d bytes, want %d", b.Digest(), len(raw), b.Size())
	}
	for i := 0; i < b.Blocks(); i++ {
		off, n := b.BlockRange(i)
		if b.Has(i) {
			continue
		}
		j.info.fromReg.Add(n) // before the write, which may complete the blob
		if err := b.WriteBlock(i, bytes.NewReader(raw[off:off+n])); err != nil {
			j.info.fromReg.Add(-n)
			return err
		}
		w.metrics.bytesIn(false, n)
	}
	return nil
}

// opener opens bytes [off, off+n) of the blob at a source.
type opener func(ctx context.Context, off, n int64) (io.ReadCloser, error)

// fillWindow fetches each run of missing blocks in [from, to) with one
// ranged stream, writing blocks to the cache as they arrive, so that
// children reading the blob get every block as soon as it lands
// (cut-through).
func (w *Worker) fillWindow(ctx context.Context, b *blobcache.Blob, j *job, from, to int, fromParent bool, open opener) error {
	for i := b.NextMissing(from); i >= 0 && i < to; i = b.NextMissing(i) {
		end := i + 1
		for end < to && !b.Has(end) {
			end++
		}
		off, _ := b.BlockRange(i)
		lastOff, lastN := b.BlockRange(end - 1)
		if err := w.fillRun(ctx, b, j, i, end, off, lastOff+lastN-off, fromParent, open); err != nil {
			return err
		}
		i = end
		if i >= to {
			break
		}
	}
	return nil
}

// fillRun streams blocks [first, end) and writes them. A stream that
// delivers nothing for StallTimeout is cut and reported as errStalled.
func (w *Worker) fillRun(ctx context.Context, b *blobcache.Blob, j *job, first, end int, off, n int64, fromParent bool, open opener) error {
	count := &j.info.fromReg
	if fromParent {
		count = &j.info.fromParent
	}
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	watchdog := time.AfterFunc(w.cfg.StallTimeout, func() { cancel(errStalled) })
	defer watchdog.Stop()
	body, err := open(sctx, off, n)
	if err != nil {
		return stallOr(sctx, err)
	}
	defer body.Close()
	r := &idleReader{r: body, watchdog: watchdog, timeout: w.cfg.StallTimeout}
	demand := peer.IsDemand(ctx)
	for k := first; k < end; k++ {
		if !demand {
			if err := w.yieldToDemand(ctx); err != nil {
				return err
			}
		}
		_, bn := b.BlockRange(k)
		if b.Has(k) {
			// An on-demand fetch got here first: skip the copy, and do not
			// count it as fetched twice.
			if _, err := io.CopyN(io.Discard, r, bn); err != nil {
				return stallOr(sctx, err)
			}
			continue
		}
		// Count first: the last block completes the blob, and a status
		// report made at that moment must include it.
		count.Add(bn)
		if err := b.WriteBlock(k, io.LimitReader(r, bn)); err != nil {
			count.Add(-bn)
			return stallOr(sctx, err)
		}
		w.metrics.bytesIn(fromParent, bn)
	}
	return nil
}

// stallOr reports errStalled if the watchdog cut the stream.
func stallOr(ctx context.Context, err error) error {
	if errors.Is(context.Cause(ctx), errStalled) {
		return errStalled
	}
	return err
}

// idleReader resets the stall watchdog whenever data arrives.
type idleReader struct {
	r        io.Reader
	watchdog *time.Timer
	timeout  time.Duration
}

func (r *idleReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if n > 0 {
		r.watchdog.Reset(r.timeout)
	}
	return n, err
}
