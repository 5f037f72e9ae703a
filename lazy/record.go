package lazy

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// A BlobRead is one read that a mount made of a layer blob: the footer, the
// TOC, or the gzip members of the chunks a file read needed.
type BlobRead struct {
	// Layer is the layer's index in the image, lowest first, so that a
	// replay may read the same ranges of another image with layers of the
	// same sizes.
	Layer int   `json:"layer"`
	Off   int64 `json:"off"`
	Len   int64 `json:"len"`
	// After is how many reads of the log had completed when this one
	// started: a replay starts it only once those have completed again,
	// which keeps the reads that depended on others after them and the
	// ones that ran together together.
	After int `json:"after"`
	// Done is the read's position in the order of completion.
	Done int `json:"done"`
}

// A ReadLog records what mounts read from their layer blobs, in the order
// the reads started, with what each waited for (BlobRead.After). Recording
// the reads a container makes before it answers, and replaying them with
// Replay through another VM's blob readers, moves exactly the same bytes
// through the same fetch path without running the container: the network
// part of a lazy start without the CPU part. The zero value is ready to use.
type ReadLog struct {
	mu    sync.Mutex
	reads []BlobRead
	done  int
}

// Record returns layers with each blob reader wrapped so that the reads
// through it, such as those of Mount, are logged. A blob reader that is a
// Refetcher stays one; refetches are not logged (they happen only after a
// chunk failed verification).
func (l *ReadLog) Record(layers []Layer) []Layer {
	out := make([]Layer, len(layers))
	for i, ly := range layers {
		rec := &recordingBlob{BlobReader: ly.Blob, log: l, layer: i}
		ly.Blob = rec
		if rf, ok := rec.BlobReader.(Refetcher); ok {
			ly.Blob = recordingRefetcher{rec, rf}
		}
		out[i] = ly
	}
	return out
}

// Reads returns the reads that completed without an error so far, in the
// order they started. A read still in flight or failed is left out: the
// container did not get its bytes from it.
func (l *ReadLog) Reads() []BlobRead {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]BlobRead, 0, l.done)
	for _, r := range l.reads {
		if r.Done >= 0 {
			out = append(out, r)
		}
	}
	return out
}

// Bytes returns the bytes the completed reads read.
func (l *ReadLog) Bytes() int64 { return ReadBytes(l.Reads()) }

// ReadBytes adds up the lengths of reads.
func ReadBytes(reads []BlobRead) int64 {
	var n int64
	for _, r := range reads {
		n += r.Len
	}
	return n
}

// Chain returns the length of the longest chain of reads each of which
// waited for the one before (BlobRead.After): how many round trips a
// replay makes one after another at the least, whatever the bandwidth.
func Chain(reads []BlobRead) int {
	return LongestChain(reads, func(_, waited int, _ []int) int { return waited + 1 })
}

// LongestChain returns the greatest depth of reads on a chain of reads that
// waited one for another, where depth(i, waited, depths) is read i's:
// waited is the greatest depth of the reads that had completed when read i
// started (BlobRead.After), and depths holds the depths of reads 0 to i-1,
// for a read that also waits on others (a block another read fetches).
// Chain counts every read as one; a caller may count only some.
func LongestChain(reads []BlobRead, depth func(i, waited int, depths []int) int) int {
	byDone := make([]int, len(reads))
	for i, r := range reads {
		if r.Done >= 0 && r.Done < len(reads) {
			byDone[r.Done] = i
		}
	}
	depths := make([]int, len(reads))
	longest, waited, counted := 0, 0, 0
	for i, r := range reads {
		for ; counted < min(r.After, len(reads)); counted++ {
			waited = max(waited, depths[byDone[counted]])
		}
		depths[i] = depth(i, waited, depths[:i])
		longest = max(longest, depths[i])
	}
	return longest
}

func (l *ReadLog) begin(layer int, off, n int64) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reads = append(l.reads, BlobRead{Layer: layer, Off: off, Len: n, After: l.done, Done: -1})
	return len(l.reads) - 1
}

func (l *ReadLog) end(i int, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if ok {
		l.reads[i].Done = l.done
		l.done++
	}
}

type recordingBlob struct {
	BlobReader
	log   *ReadLog
	layer int
}

func (r *recordingBlob) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	i := r.log.begin(r.layer, off, int64(len(p)))
	n, err := r.BlobReader.ReadAt(ctx, p, off)
	r.log.end(i, n == len(p))
	return n, err
}

type recordingRefetcher struct {
	*recordingBlob
	rf Refetcher
}

func (r recordingRefetcher) Refetch(ctx context.Context, off, n int64, fromOrigin bool) error {
	return r.rf.Refetch(ctx, off, n, fromOrigin)
}

// Replay reads through the blob readers of layers exactly the ranges that
// reads (from ReadLog.Reads) name, in their order, each once the reads it
// waited for when it was recorded have completed: as concurrent as the
// recording was, and no more. It returns the bytes read, and the first
// error, after which it starts no more reads.
func Replay(ctx context.Context, layers []Layer, reads []BlobRead) (int64, error) {
	if err := checkReads(layers, reads); err != nil {
		return 0, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// byDone[k] is the index of the read that completed k-th.
	byDone := make([]int, len(reads))
	for i, r := range reads {
		byDone[r.Done] = i
	}
	done := make([]chan struct{}, len(reads))
	for i := range done {
		done[i] = make(chan struct{})
	}
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		total int64
	)
	fail := func(err error) {
		mu.Lock()
		if first == nil {
			first = err
			cancel()
		}
		mu.Unlock()
	}
	waited := 0
dispatch:
	for i, r := range reads {
		for ; waited < r.After; waited++ {
			select {
			case <-done[byDone[waited]]:
			case <-ctx.Done():
				break dispatch
			}
		}
		wg.Go(func() {
			defer close(done[i])
			buf := make([]byte, r.Len)
			if err := readFull(ctx, layers[r.Layer].Blob, buf, r.Off); err != nil {
				fail(fmt.Errorf("lazy: replaying read %d (layer %d, [%d, %d)): %w", i, r.Layer, r.Off, r.Off+r.Len, err))
				return
			}
			mu.Lock()
			total += r.Len
			mu.Unlock()
		})
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		first = ctx.Err()
	}
	return total, first
}

// checkReads refuses a log that does not fit layers or is not a log of
// completed reads: Done a permutation, and each read waiting only for
// reads that completed, as Reads returns them.
func checkReads(layers []Layer, reads []BlobRead) error {
	seen := make([]bool, len(reads))
	for i, r := range reads {
		if r.Layer < 0 || r.Layer >= len(layers) || layers[r.Layer].Blob == nil {
			return fmt.Errorf("lazy: read %d is of layer %d; the image has %d", i, r.Layer, len(layers))
		}
		if size := layers[r.Layer].Size; r.Off < 0 || r.Len < 0 || r.Off > size-r.Len {
			return fmt.Errorf("lazy: read %d, [%d, %d), is outside layer %d's %d bytes", i, r.Off, r.Off+r.Len, r.Layer, size)
		}
		if r.Done < 0 || r.Done >= len(reads) || seen[r.Done] {
			return fmt.Errorf("lazy: read %d completed %d-th of %d, or another did too", i, r.Done, len(reads))
		}
		seen[r.Done] = true
		if r.After < 0 || r.After > len(reads) {
			return fmt.Errorf("lazy: read %d waited for %d of %d reads", i, r.After, len(reads))
		}
		if i > 0 && r.After < reads[i-1].After {
			return errors.New("lazy: reads out of order: one started with fewer reads completed than the read before it")
		}
	}
	// A read cannot wait for itself or a later one: the first After reads
	// to complete must have started before it.
	byDone := make([]int, len(reads))
	for i, r := range reads {
		byDone[r.Done] = i
	}
	latest, counted := -1, 0
	for i, r := range reads {
		for ; counted < r.After; counted++ {
			latest = max(latest, byDone[counted])
		}
		if latest >= i {
			return fmt.Errorf("lazy: read %d waits for read %d, which starts after it", i, latest)
		}
	}
	return nil
}
