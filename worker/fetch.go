package worker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/blobcache"
	"github.com/faasnet/faasnet/failover"
	"github.com/faasnet/faasnet/peer"
	"github.com/google/go-containerregistry/pkg/name"
)

// blobInfo is what the worker knows about a blob of one of its images.
// Guarded by Worker.mu except the counters.
type blobInfo struct {
	size int64
	// blockSize is what the cache cuts the blob into: the block of the
	// assignment that made it known (0: the cache's own), so that parent
	// and child number the blocks of a stripe alike. Set once.
	blockSize int64
	mediaType string
	manifest  bool            // fetched from the registry's manifest endpoint
	repo      name.Repository // where the registry keeps it
	fns       map[string]bool // live functions whose image holds it
	readers   int             // children reading it through the peer server
	lastErr   error           // the fetch's last failure, shown in status while waiting
	// hold defers background streaming of a lazy layer until this VM's
	// container answered: a child's streaming request must not pull the
	// whole layer ahead of the container's own reads.
	hold bool
	// lazy marks a layer a lazy container reads on demand: its background
	// streaming yields to demands. Other blobs (manifests, configs, layers
	// fetched whole) are waited for by a start and never yield: a child
	// in another stripe tree can demand from this VM before its own config
	// is here, and a config waiting for demands to calm down held the VM's
	// start back for as long as its subtree kept reading.
	lazy       bool
	fromParent atomic.Int64
	fromReg    atomic.Int64
}

// needed reports whether a function or a child still needs the blob: a
// fetch stops once neither does. Called with w.mu held.
func (info *blobInfo) needed() bool { return len(info.fns) > 0 || info.readers > 0 }

// learn records a blob of f's image (f nil: of no function); it wakes
// requests waiting for it. A function already dropped is not recorded: its
// provisioning may still be winding down. Called with w.mu held.
func (w *Worker) learn(f *function, digest string, size int64, mediaType string, manifest bool, repo name.Repository) *blobInfo {
	info := w.known[digest]
	if info == nil {
		info = &blobInfo{size: size, mediaType: mediaType, manifest: manifest, repo: repo, fns: map[string]bool{}}
		if f != nil {
			info.blockSize = f.a.BlockSize
		}
		w.known[digest] = info
		close(w.changed)
		w.changed = make(chan struct{})
	}
	if f != nil && w.fns[f.name] == f {
		info.fns[f.name] = true
	}
	return info
}

// acquire takes a reference to the cached blob of info, created in info's
// blocks if the cache lacks it.
func (w *Worker) acquire(digest string, info *blobInfo) (*blobcache.Blob, error) {
	return w.cache.AcquireBlocks(digest, info.size, info.blockSize)
}

// job fetches one blob into the cache until it is complete and verified, or
// nothing needs it any more. One job per digest, shared by every function
// and child that needs it.
type job struct {
	digest string
	info   *blobInfo
	cancel context.CancelFunc
	// fo is the fetch's record of its parent in each stripe, for w.policy;
	// only runJob's goroutines use it, stripe s its fo[s].
	fo []failover.State
}

// ensureJob starts fetching digest unless a fetch is running, the blob is
// not needed, or the worker is stopping. Called with w.mu held.
func (w *Worker) ensureJob(digest string) {
	if _, ok := w.jobs[digest]; ok || w.ctx == nil || w.ctx.Err() != nil {
		return
	}
	info := w.known[digest]
	if info == nil || !info.needed() {
		return
	}
	ctx, cancel := context.WithCancel(w.ctx)
	j := &job{digest: digest, info: info, cancel: cancel}
	w.jobs[digest] = j
	w.bg.Go(func() {
		defer cancel()
		w.runJob(ctx, j)
		w.mu.Lock()
		if w.jobs[digest] == j {
			delete(w.jobs, digest)
		}
		w.mu.Unlock()
	})
}

// stopUnneeded stops the fetch of digest once no function and no child
// needs the blob: a VM released from a function (scale-in, a new image)
// must not go on pulling it from its former parent or the registry. The job
// is forgotten at once, so that a new need starts a new one while the old
// winds down. Called with w.mu held.
func (w *Worker) stopUnneeded(digest string) {
	j := w.jobs[digest]
	if j == nil || j.info.needed() {
		return
	}
	j.cancel()
	delete(w.jobs, digest)
	w.log.Debug("fetch stopped: no function or child needs the blob", "digest", digest)
}

// parentChoice is the tree parent a fetch of a blob should use now.
type parentChoice struct {
	parent  *api.Peer     // nil: none (this VM is a root)
	grant   string        // the function's grant, shown to the parent
	changed chan struct{} // closed when the function's parent changes
}

// pickSource chooses the parent in stripe s of a function that needs the
// blob; nil if no function has one (this VM is the stripe's root).
func (w *Worker) pickSource(j *job, s int) parentChoice {
	w.mu.Lock()
	defer w.mu.Unlock()
	var src parentChoice
	for _, fn := range j.info.names() {
		f := w.fns[fn]
		if f == nil {
			continue
		}
		if src.changed == nil {
			src.changed = f.parentChanged
		}
		if ps := f.a.StripeParents(); s < len(ps) && ps[s] != nil {
			p := *ps[s]
			return parentChoice{parent: &p, grant: f.a.Grant, changed: f.parentChanged}
		}
	}
	return src
}

// stripes is how many stripe trees the blob comes down: those of the first
// function (by name) that needs it; 1 for a manifest, which the registry
// sends whole, and for a blob of one block.
func (w *Worker) stripes(j *job, b *blobcache.Blob) int {
	if j.info.manifest || b.Blocks() < 2 {
		return 1
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, fn := range j.info.names() {
		if f := w.fns[fn]; f != nil {
			return len(f.a.StripeParents())
		}
	}
	return 1
}

// names are the functions that need the blob, in order. Called with w.mu
// held.
func (info *blobInfo) names() []string {
	names := make([]string, 0, len(info.fns))
	for fn := range info.fns {
		names = append(names, fn)
	}
	sort.Strings(names)
	return names
}

var errStalled = errors.New("no data within the stall timeout")

// runJob fetches until the blob is complete. With k stripes, block i comes
// down stripe i mod k (package stripe): k fetches run side by side, each
// from the VM's parent in its stripe (or the registry where the VM is that
// stripe's root), so that each parent sends 1/k of the blob and every VM
// uploads about what it downloads. A change of k (a function redefined)
// restarts them.
func (w *Worker) runJob(ctx context.Context, j *job) {
	b, err := w.acquire(j.digest, j.info)
	if err != nil {
		w.jobFailed(j, fmt.Errorf("cache: %w", err))
		return
	}
	defer b.Release()
	for !b.Complete() && ctx.Err() == nil {
		k := w.stripes(j, b)
		if len(j.fo) < k {
			j.fo = append(j.fo, make([]failover.State, k-len(j.fo))...)
		}
		if k == 1 {
			w.runStripe(ctx, j, b, 0, 1)
			continue
		}
		var wg sync.WaitGroup
		for s := range k {
			wg.Go(func() { w.runStripe(ctx, j, b, s, k) })
		}
		wg.Wait()
	}
}

// runStripe fetches stripe s of k until it is complete, or k changes: each
// attempt asks the failover policy for the source, fills every missing
// block of the stripe from it, and lets the policy decide what comes next.
func (w *Worker) runStripe(ctx context.Context, j *job, b *blobcache.Blob, s, k int) {
	fo := &j.fo[s]
	for ctx.Err() == nil {
		before := stripeMissing(b, s, k)
		if before == 0 || w.stripes(j, b) != k {
			return
		}
		choice := w.pickSource(j, s)
		src := w.chooseSource(j, fo, choice)
		err := w.fillStripe(ctx, j, b, src, s, k)
		if ctx.Err() != nil {
			return
		}
		parent := addrOf(src.Parent())
		outcome, retryAfter := w.outcome(ctx, src.Parent(), err)
		d := w.policy.Next(fo, failover.Attempt{
			Parent:     parent,
			Outcome:    outcome,
			Progress:   stripeMissing(b, s, k) != before,
			RetryAfter: retryAfter,
			At:         time.Now(),
		})
		w.noteAttempt(j, src, outcome, err, d)
		if !pause(ctx, d, choice.changed) {
			return
		}
	}
}

// fillStripe fetches the missing blocks of stripe s of k from src: the
// whole blob at once with one stripe; from a parent, the stripe in one
// stream (peer.StripeHeader); from the registry, block by block.
func (w *Worker) fillStripe(ctx context.Context, j *job, b *blobcache.Blob, src source, s, k int) error {
	if k == 1 {
		return w.fill(ctx, j, b, src, 0, b.Blocks())
	}
	first := nextInStripe(b, s, k, 0)
	if first < 0 {
		return nil
	}
	if p, ok := src.(parentSource); ok {
		return w.streamStripe(ctx, j, b, p, s, k, first)
	}
	for i := first; i >= 0; i = nextInStripe(b, s, k, i+k) {
		if err := w.fill(ctx, j, b, src, i, i+1); err != nil {
			return err
		}
	}
	return nil
}

// streamStripe streams blocks first, first+k, ... of stripe s from the
// parent in one answer and writes those still missing, cut-through like
// fillRun. A stream that delivers nothing for StallTimeout is cut and
// reported as errStalled.
func (w *Worker) streamStripe(ctx context.Context, j *job, b *blobcache.Blob, p parentSource, s, k, first int) error {
	_, block := b.BlockRange(0)
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	watchdog := time.AfterFunc(w.cfg.StallTimeout, func() { cancel(errStalled) })
	defer watchdog.Stop()
	st := peer.Stripe{S: s, K: k, Block: block, From: first}
	body, err := p.peers.OpenStripe(toParent(sctx, p.parent, p.grant), p.parent.Addr, j.digest, st, b.Size())
	if err != nil {
		return stallOr(sctx, err)
	}
	defer body.Close()
	r := &idleReader{r: body, watchdog: watchdog, timeout: w.cfg.StallTimeout}
	for i := first; i < b.Blocks(); i += k {
		if err := w.yieldStream(ctx, j, r); err != nil {
			return err
		}
		_, bn := b.BlockRange(i)
		if b.Has(i) {
			if _, err := io.CopyN(io.Discard, r, bn); err != nil {
				return stallOr(sctx, err)
			}
			continue
		}
		j.info.fromParent.Add(bn)
		if err := b.WriteBlock(i, io.LimitReader(r, bn)); err != nil {
			j.info.fromParent.Add(-bn)
			return stallOr(sctx, err)
		}
		w.metrics.bytesIn(true, bn)
	}
	return nil
}

// nextInStripe is the first block at or after from that b lacks and that
// comes down stripe s of k (i mod k = s: stripe.Of); -1 if none. from is
// 0 or a block of the stripe.
func nextInStripe(b *blobcache.Blob, s, k, from int) int {
	from = max(from, s)
	for i := from; i < b.Blocks(); i += k {
		if !b.Has(i) {
			return i
		}
	}
	return -1
}

// stripeMissing counts the blocks of stripe s of k that b lacks.
func stripeMissing(b *blobcache.Blob, s, k int) int {
	n := 0
	for i := nextInStripe(b, s, k, 0); i >= 0; i = nextInStripe(b, s, k, i+k) {
		n++
	}
	return n
}

// chooseSource is the source of j's next attempt: the parent, unless the
// policy gave up on it (or there is none).
func (w *Worker) chooseSource(j *job, fo *failover.State, choice parentChoice) source {
	if w.policy.UseRegistry(fo, addrOf(choice.parent)) {
		return w.registrySource(j)
	}
	return w.parentSource(j, choice)
}

// outcome classifies the error of an attempt at parent (nil: the registry)
// for the failover policy. A stalled parent is probed: alive, it is merely
// slow (waiting for its own parent). A parent that refuses (403: it does
// not take this VM's grant, or is not who it should be) has failed, like
// one that is down: the manager is asked for another.
func (w *Worker) outcome(ctx context.Context, parent *api.Peer, err error) (failover.Outcome, time.Duration) {
	var se *peer.StatusError
	switch {
	case err == nil:
		return failover.Done, 0
	case errors.Is(err, blobcache.ErrCorrupt), errors.Is(err, errNotPinned):
		return failover.Corrupt, 0
	case parent == nil:
		return failover.Failed, 0
	case errors.As(err, &se) && se.StatusCode == http.StatusServiceUnavailable:
		return failover.Busy, se.RetryAfter
	case errors.Is(err, errStalled) && w.alive(ctx, parent):
		return failover.Slow, 0
	}
	return failover.Failed, 0
}

// noteAttempt logs and reports an attempt that did not complete the blob.
func (w *Worker) noteAttempt(j *job, src source, outcome failover.Outcome, err error, d failover.Decision) {
	if err == nil {
		return
	}
	from := peerName(src.Parent())
	switch outcome {
	case failover.Corrupt:
		w.metrics.verifyFailures.Inc()
		w.log.Warn("blob failed verification: dropped, fetching it again", "digest", j.digest, "source", from)
	case failover.Busy:
		w.log.Info("parent busy; waiting for it", "digest", j.digest, "parent", from, "wait", d.Delay, "err", err)
	case failover.Slow:
		w.log.Info("parent alive but delivering nothing; trying it again", "digest", j.digest, "parent", from)
	default:
		w.log.Warn("fetch failed", "digest", j.digest, "source", from, "next", d.Action, "err", err)
	}
	if d.Action == failover.Repair {
		w.kickHeartbeat()
	}
	w.jobFailed(j, err)
}

// pause carries out a decision's wait: for its delay, or until the parent
// changes. It reports false if ctx ended first.
func pause(ctx context.Context, d failover.Decision, parentChanged <-chan struct{}) bool {
	if d.Action == failover.Go {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d.Delay)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-parentChanged:
	case <-t.C:
	}
	return true
}

func addrOf(p *api.Peer) string {
	if p == nil {
		return ""
	}
	return p.Addr
}

func (w *Worker) jobFailed(j *job, err error) {
	w.mu.Lock()
	j.info.lastErr = err
	w.mu.Unlock()
	w.markReport()
}

// alive probes a parent's /healthz.
func (w *Worker) alive(ctx context.Context, parent *api.Peer) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return w.peers.Healthy(toParent(ctx, *parent, ""), parent.Addr) == nil
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

// fill fetches each run of missing blocks in [from, to) from src with one
// ranged stream, writing blocks to the cache as they arrive, so that
// children reading the blob get every block as soon as it lands
// (cut-through).
func (w *Worker) fill(ctx context.Context, j *job, b *blobcache.Blob, src source, from, to int) error {
	if !peer.IsDemand(ctx) && src.Parent() == nil {
		return w.fillWindows(ctx, j, b, src, from, to)
	}
	for i := b.NextMissing(from); i >= 0 && i < to; i = b.NextMissing(i) {
		end := i + 1
		for end < to && !b.Has(end) {
			end++
		}
		off, _ := b.BlockRange(i)
		lastOff, lastN := b.BlockRange(end - 1)
		if err := w.fillRun(ctx, b, j, i, end, off, lastOff+lastN-off, src); err != nil {
			return err
		}
		i = end
		if i >= to {
			break
		}
	}
	return nil
}

// registryWindow bounds what a background stream from the registry asks
// for at once.
const registryWindow = 1 << 20

// fillWindows is fill for background streaming from the registry, where
// every byte fetched twice is egress paid twice. It asks for a window of
// missing blocks at a time and claims them as a demand does, so that a
// demand for one of them waits for the window (a moment) instead of
// fetching it again, and the next window leaves out what demands fetched
// meanwhile. It yields to demands between windows, never while holding a
// claim a demand may be waiting on.
func (w *Worker) fillWindows(ctx context.Context, j *job, b *blobcache.Blob, src source, from, to int) error {
	_, block := b.BlockRange(0)
	window := max(1, int(registryWindow/max(block, 1)))
	for i := b.NextMissing(from); i >= 0 && i < to; i = b.NextMissing(i) {
		if w.pausesForDemands(j) {
			if err := w.yieldToDemand(ctx); err != nil {
				return err
			}
		}
		end := min(i+window, to)
		mine, _ := w.claim(j.digest, b, i, end)
		for _, run := range runs(mine) {
			off, _ := b.BlockRange(run[0])
			lastOff, lastN := b.BlockRange(run[1] - 1)
			if err := w.fillRun(peer.WithDemand(ctx), b, j, run[0], run[1], off, lastOff+lastN-off, src); err != nil {
				w.unclaim(j.digest, mine)
				return err
			}
		}
		w.unclaim(j.digest, mine)
		if end >= to {
			break
		}
		i = end
	}
	return nil
}

// fillRun streams blocks [first, end) and writes them. A stream that
// delivers nothing for StallTimeout is cut and reported as errStalled.
func (w *Worker) fillRun(ctx context.Context, b *blobcache.Blob, j *job, first, end int, off, n int64, src source) error {
	fromParent := src.Parent() != nil
	count := &j.info.fromReg
	if fromParent {
		count = &j.info.fromParent
	}
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	watchdog := time.AfterFunc(w.cfg.StallTimeout, func() { cancel(errStalled) })
	defer watchdog.Stop()
	body, err := src.Open(sctx, off, n)
	if err != nil {
		return stallOr(sctx, err)
	}
	defer body.Close()
	r := &idleReader{r: body, watchdog: watchdog, timeout: w.cfg.StallTimeout}
	demand := peer.IsDemand(ctx)
	for k := first; k < end; k++ {
		if !demand {
			if err := w.yieldStream(ctx, j, r); err != nil {
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

// yieldStream pauses the background stream of a lazy layer (read through
// r) while demands are in flight, with its stall watchdog stopped: a stream
// this VM stopped reading is not a parent delivering nothing, and cutting
// it would only make the parent send its blocks again, or the registry.
func (w *Worker) yieldStream(ctx context.Context, j *job, r *idleReader) error {
	if !w.pausesForDemands(j) {
		return nil
	}
	r.watchdog.Stop()
	defer r.watchdog.Reset(r.timeout)
	return w.yieldToDemand(ctx)
}

// pausesForDemands reports whether j's background stream should wait for
// the demands in flight: only a lazy layer's does. A config or manifest
// never waits, since a child may be streaming it from this VM while its
// own demands keep this VM's demand count up.
func (w *Worker) pausesForDemands(j *job) bool {
	w.mu.Lock()
	lazy := j.info.lazy
	w.mu.Unlock()
	return lazy && w.demanding()
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
