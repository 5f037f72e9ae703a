package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/faasnet/faasnet/container"
	"github.com/faasnet/faasnet/lazy"
)

// Replay mode: on a 2-core machine, 32 Python containers and their FUSE
// file systems measure the CPU, not the network. So the reads the
// function's container makes of its lazy image before it answers are
// recorded once, on one VM (RecordReads), and then every VM of a run
// (RunOptions.Replay) reads exactly those byte ranges of the layer blobs
// through its worker's lazy path, the one a FUSE read takes (demanded from
// the tree parent, or the registry at a root), and counts as ready when
// they completed: no container, no mount. What the replay leaves out is the
// container's own time (starting, running Python, reading its files once
// fetched), the mount, and decompressing and verifying chunks.
//
// A whole fetch (registry with a Function) is ready once the image is in
// the VM's cache; the replay skips unpacking and starting it, which makes
// that baseline look faster than it is.

// A Recording is what a function's container read before it answered.
type Recording struct {
	Reads []lazy.BlobRead
	// Bytes is what the reads read; Fetched what the recording VM fetched
	// until its container answered (whole blocks, the manifest and the
	// config too); Took is its time from the scale request to its
	// container answering.
	Bytes, Fetched int64
	Took           time.Duration
	// Chain is the longest chain of reads that waited one for another
	// (lazy.Chain): fetches that no bandwidth overlaps.
	Chain int
}

// FetchChain is the longest chain of reads that wait one for another and
// fetch, with blocks of blockSize bytes: a read fetches when it needs a
// block that no read started before it needed; one that needs a block
// another read is fetching waits for that read. It is what a VM's start
// pays a request round trip for, one after the other, on top of moving the
// bytes (sim.Config.ReadChain); reads of blocks already fetched cost none.
func FetchChain(reads []lazy.BlobRead, blockSize int64) int {
	if blockSize <= 0 {
		return 0
	}
	type block struct {
		layer int
		i     int64
	}
	fetcher := map[block]int{}
	return lazy.LongestChain(reads, func(i, waited int, depths []int) int {
		r := reads[i]
		d, fetches := waited, false
		if r.Len > 0 {
			for b := r.Off / blockSize; b <= (r.Off+r.Len-1)/blockSize; b++ {
				k := block{r.Layer, b}
				if f, ok := fetcher[k]; ok {
					d = max(d, depths[f])
					continue
				}
				fetcher[k], fetches = i, true
			}
		}
		if fetches {
			d++
		}
		return d
	})
}

// RecordReads runs the function's container on one VM that fetches from
// the registry (OnDemand) and records the reads its lazy mount made of the
// layer blobs until the container answered.
func (h *Harness) RecordReads(ctx context.Context, timeout time.Duration) (*Recording, error) {
	if h.spec == nil {
		return nil, errors.New("recording reads needs a function to run (Options.Function)")
	}
	rec := &recorder{}
	res, err := h.Run(ctx, OnDemand{}, 1, RunOptions{Timeout: timeout, record: rec})
	if err != nil {
		return nil, fmt.Errorf("recording the function's reads: %w", err)
	}
	if res.Failed > 0 {
		return nil, fmt.Errorf("recording the function's reads: the VM failed: %s %s", res.Err, res.Reports[0].Err)
	}
	reads := rec.result()
	if len(reads) == 0 {
		return nil, errors.New("recording the function's reads: the container read nothing of its image")
	}
	return &Recording{Reads: reads, Bytes: lazy.ReadBytes(reads), Fetched: res.Reports[0].BytesBeforeReady, Took: res.Makespan, Chain: lazy.Chain(reads)}, nil
}

// recorder runs a real container (runc over a lazy mount) and keeps the
// reads its mount made until the container answered.
type recorder struct {
	mu    sync.Mutex
	reads []lazy.BlobRead
}

func (r *recorder) result() []lazy.BlobRead {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reads
}

// runner returns a worker's container starter (worker.Config.RunContainer)
// that records.
func (r *recorder) runner(dir, vm string, log *slog.Logger) func(context.Context, container.Function) (func(context.Context) error, error) {
	host := container.New(container.Config{Dir: dir, VM: vm, Logger: log})
	return func(ctx context.Context, f container.Function) (func(context.Context) error, error) {
		if len(f.Layers) == 0 {
			return nil, fmt.Errorf("recording reads: function %s has no lazy layers", f.Name)
		}
		if err := host.Cleanup(ctx); err != nil {
			return nil, err
		}
		var log lazy.ReadLog
		f.Layers = log.Record(f.Layers)
		run, err := host.Run(ctx, f)
		if err != nil {
			return nil, err
		}
		r.mu.Lock()
		r.reads = log.Reads()
		r.mu.Unlock()
		return run.Stop, nil
	}
}

// replayRunner returns a worker's container starter that replays reads
// instead: through the lazy layers' blob readers (the worker's tree path),
// or nothing for an image already fetched whole. It logs how long the reads
// took, so that a slow start can be told from a slow read path (the
// simulator's per-read cost is checked against it).
func replayRunner(reads []lazy.BlobRead, log *slog.Logger) func(context.Context, container.Function) (func(context.Context) error, error) {
	return func(ctx context.Context, f container.Function) (func(context.Context) error, error) {
		if len(f.Layers) > 0 {
			var t readTimes
			start := time.Now()
			if _, err := lazy.Replay(ctx, t.wrap(f.Layers), reads); err != nil {
				return nil, fmt.Errorf("function %s: %w", f.Name, err)
			}
			n, sum, slowest := t.stats()
			if log != nil && n > 0 {
				log.Info("replayed reads", "function", f.Name, "reads", n, "took", time.Since(start).Round(time.Millisecond),
					"mean_read", (sum / time.Duration(n)).Round(time.Microsecond), "slowest_read", slowest.Round(time.Millisecond))
			}
		}
		if f.Phase != nil {
			f.Phase("replayed")
		}
		return func(context.Context) error { return nil }, nil
	}
}

// readTimes times the reads made through the blob readers it wraps.
type readTimes struct {
	mu      sync.Mutex
	n       int
	sum     time.Duration
	slowest time.Duration
}

func (t *readTimes) wrap(layers []lazy.Layer) []lazy.Layer {
	out := slices.Clone(layers)
	for i := range out {
		out[i].Blob = timedBlob{out[i].Blob, t}
	}
	return out
}

func (t *readTimes) add(d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n++
	t.sum += d
	t.slowest = max(t.slowest, d)
}

func (t *readTimes) stats() (int, time.Duration, time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n, t.sum, t.slowest
}

type timedBlob struct {
	lazy.BlobReader
	t *readTimes
}

func (b timedBlob) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	start := time.Now()
	n, err := b.BlobReader.ReadAt(ctx, p, off)
	b.t.add(time.Since(start))
	return n, err
}
