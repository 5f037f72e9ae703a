package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/faasnet/faasnet/blobcache"
	"github.com/faasnet/faasnet/peer"
	"github.com/faasnet/faasnet/stripe"
)

// On-demand fetching: a container blocked on a read (through the lazy
// filesystem), or a child that demands a range, needs a few blocks now. They
// are fetched with a ranged request of their own, marked as demand so that
// the parent fetches them ahead too, and background streaming pauses at the
// next block boundary until no demand is in flight.

// demand fetches the missing blocks covering [off, off+n) of digest and
// returns once they are in the cache. A failing parent is not waited for: a
// container is blocked, so the registry serves the bytes at once.
func (w *Worker) demand(ctx context.Context, digest string, off, n int64) error {
	return w.demandFrom(ctx, digest, off, n, false)
}

// demandFrom is demand, straight from the registry if fromRegistry.
func (w *Worker) demandFrom(ctx context.Context, digest string, off, n int64, fromRegistry bool) error {
	w.mu.Lock()
	info := w.known[digest]
	w.mu.Unlock()
	if info == nil {
		return fmt.Errorf("blob %s is not part of any image this VM hosts", digest)
	}
	if off < 0 || n < 0 || off+n > info.size {
		return fmt.Errorf("blob %s: range %d+%d is outside its %d bytes", digest, off, n, info.size)
	}
	if n == 0 {
		return nil
	}
	b, err := w.acquire(digest, info)
	if err != nil {
		return err
	}
	defer b.Release()
	bs := b.BlockSize()
	from, to := int(off/bs), int((off+n-1)/bs)+1
	if next := b.NextMissing(from); next < 0 || next >= to {
		return nil
	}
	w.beginDemand()
	defer w.endDemand()
	w.metrics.demands.Inc()
	j := &job{digest: digest, info: info}
	for {
		mine, others := w.claim(digest, b, from, to)
		if len(mine) == 0 && len(others) == 0 {
			return nil
		}
		for _, run := range runs(mine) {
			err := w.demandRun(ctx, j, b, run[0], run[1], fromRegistry)
			if err != nil {
				w.unclaim(digest, mine)
				return err
			}
		}
		w.unclaim(digest, mine)
		// Blocks another demand was fetching: wait for it, then look again
		// (if it failed, they are still missing and this call claims them).
		for _, ch := range others {
			select {
			case <-ch:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
}

// demandRun fetches blocks [from, to) now, each from the parent in its
// stripe (all from the one parent without stripes), or at once from the
// registry if that parent fails or fromRegistry.
func (w *Worker) demandRun(ctx context.Context, j *job, b *blobcache.Blob, from, to int, fromRegistry bool) error {
	ctx = peer.WithDemand(ctx)
	k := w.stripes(j, b)
	if k == 1 {
		return w.demandStripe(ctx, j, b, from, to, 0, fromRegistry)
	}
	// The stripes side by side, each block from its stripe's parent.
	errs := make([]error, k)
	var wg sync.WaitGroup
	for s := range k {
		wg.Go(func() {
			for i := from; i < to && errs[s] == nil; i++ {
				if stripe.Of(int64(i), k) == s && !b.Has(i) {
					errs[s] = w.demandStripe(ctx, j, b, i, i+1, s, fromRegistry)
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// demandStripe fetches blocks [from, to), all of stripe s, from the parent
// in that stripe, or the registry.
func (w *Worker) demandStripe(ctx context.Context, j *job, b *blobcache.Blob, from, to, s int, fromRegistry bool) error {
	src := w.pickSource(j, s)
	if src.parent != nil && !fromRegistry {
		err := w.fill(ctx, j, b, w.parentSource(j, src), from, to)
		if err == nil || ctx.Err() != nil {
			return err
		}
		w.log.Warn("demand from the parent failed; the registry serves it", "digest", j.digest, "parent", peerName(src.parent), "err", err)
		w.kickHeartbeat()
	}
	err := w.fill(ctx, j, b, w.registrySource(j), from, to)
	if errors.Is(err, blobcache.ErrCorrupt) {
		// The blob's last block arrived and the whole failed its digest:
		// everything is dropped; fetch the window again from the registry.
		w.metrics.verifyFailures.Inc()
		err = w.fill(ctx, j, b, w.registrySource(j), from, to)
	}
	return err
}

// claim marks the missing blocks of [from, to) that no other demand is
// fetching as this caller's, and returns them with the completion channels
// of the blocks others are fetching: concurrent demands (a container's read
// and a child's) fetch each block once.
func (w *Worker) claim(digest string, b *blobcache.Blob, from, to int) (mine []int, others []chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := w.inflight[digest]
	if m == nil {
		m = map[int]chan struct{}{}
		w.inflight[digest] = m
	}
	for i := from; i < to; i++ {
		if b.Has(i) {
			continue
		}
		if ch, ok := m[i]; ok {
			others = append(others, ch)
			continue
		}
		m[i] = make(chan struct{})
		mine = append(mine, i)
	}
	if len(m) == 0 {
		delete(w.inflight, digest)
	}
	return mine, others
}

func (w *Worker) unclaim(digest string, blocks []int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := w.inflight[digest]
	for _, i := range blocks {
		close(m[i])
		delete(m, i)
	}
	if len(m) == 0 {
		delete(w.inflight, digest)
	}
}

// runs groups sorted block numbers into [first, end) runs.
func runs(blocks []int) [][2]int {
	var out [][2]int
	for _, i := range blocks {
		if n := len(out); n > 0 && out[n-1][1] == i {
			out[n-1][1] = i + 1
			continue
		}
		out = append(out, [2]int{i, i + 1})
	}
	return out
}

func (w *Worker) beginDemand() {
	w.mu.Lock()
	if w.demands == 0 {
		w.demandIdle = make(chan struct{})
	}
	w.demands++
	w.mu.Unlock()
}

func (w *Worker) endDemand() {
	w.mu.Lock()
	if w.demands--; w.demands == 0 {
		close(w.demandIdle)
	}
	w.mu.Unlock()
}

// demanding reports whether demands are in flight.
func (w *Worker) demanding() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.demands > 0
}

// yieldToDemand blocks background streaming while demands are in flight.
func (w *Worker) yieldToDemand(ctx context.Context) error {
	w.mu.Lock()
	idle, busy := w.demandIdle, w.demands > 0
	w.mu.Unlock()
	if !busy {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// servedBlob is a blob served to a child: a demanded range is fetched ahead
// of background streaming.
type servedBlob struct {
	*blobcache.Blob
	w *Worker
}

func (s servedBlob) Reader(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	if peer.IsDemand(ctx) && !s.Complete() {
		s.w.bg.Go(func() {
			if err := s.w.demand(ctx, s.Digest(), off, n); err != nil && ctx.Err() == nil {
				s.w.log.Warn("child's demand failed", "digest", s.Digest(), "err", err)
			}
		})
	}
	return s.Blob.Reader(ctx, off, n)
}

// lazyBlob reads a layer blob for the lazy filesystem: it demands the bytes
// and reads them from the cache once verified blocks are there.
type lazyBlob struct {
	w      *Worker
	digest string
}

func (l lazyBlob) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	w := l.w
	w.mu.Lock()
	info := w.known[l.digest]
	w.mu.Unlock()
	if info == nil {
		return 0, fmt.Errorf("blob %s is not known", l.digest)
	}
	if off >= info.size {
		return 0, io.EOF
	}
	n := min(int64(len(p)), info.size-off)
	if err := w.demand(ctx, l.digest, off, n); err != nil {
		return 0, err
	}
	b, ok := w.cache.Lookup(l.digest)
	if !ok {
		return 0, fmt.Errorf("blob %s left the cache", l.digest)
	}
	defer b.Release()
	got, err := b.ReadAt(p[:n], off)
	if err == nil && n < int64(len(p)) {
		err = io.EOF
	}
	return got, err
}

// Refetch drops the cached blocks that cover [off, off+n), which held a chunk
// that failed verification, and fetches them again: from the parent, or from
// the registry if fromOrigin (lazy.Refetcher). Without it, a retry of the
// chunk would read the same bad blocks, now and after a restart.
func (l lazyBlob) Refetch(ctx context.Context, off, n int64, fromOrigin bool) error {
	w := l.w
	w.mu.Lock()
	info := w.known[l.digest]
	w.mu.Unlock()
	if info == nil {
		return fmt.Errorf("blob %s is not known", l.digest)
	}
	if off < 0 || n <= 0 || off > info.size-n {
		return fmt.Errorf("blob %s: range %d+%d is outside its %d bytes", l.digest, off, n, info.size)
	}
	b, err := w.acquire(l.digest, info)
	if err != nil {
		return err
	}
	defer b.Release()
	bs := b.BlockSize()
	if err := b.Drop(int(off/bs), int((off+n-1)/bs)+1); err != nil {
		return fmt.Errorf("blob %s: dropping the blocks of bytes [%d, %d): %w", l.digest, off, off+n, err)
	}
	w.metrics.verifyFailures.Inc()
	w.log.Warn("lazy chunk failed verification: dropped its blocks, fetching them again",
		"digest", l.digest, "offset", off, "length", n, "from_registry", fromOrigin)
	return w.demandFrom(ctx, l.digest, off, n, fromOrigin)
}
