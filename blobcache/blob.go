package blobcache

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sync"
	"sync/atomic"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/faasnet/faasnet/digest"
)

// A Blob is one reference to a cached blob. Many goroutines may use it at
// once: any number of readers and writers. Call Release when done; after that
// the Blob must not be used (its methods return ErrReleased where they can
// fail), and the cache may evict the blob.
type Blob struct {
	c        *Cache
	e        *entry
	released atomic.Bool
}

// entry is the shared state of one cached blob.
type entry struct {
	c    *Cache
	d    v1.Hash
	size int64
	bs   int64
	n    int // number of blocks

	// Guarded by Cache.mu.
	refs int
	elem *list.Element

	// fmu serialises what touches the files as a whole: opening, bitmap
	// flushes, the rename at verification, closing and removal. The data
	// file is read and written by block without it. Lock order: Cache.mu,
	// fmu, mu.
	fmu  sync.Mutex
	f    *os.File // data; set once by openFiles
	bm   *os.File // bitmap; nil once verified
	gone bool     // files closed (evicted or cache closed)

	mu      sync.Mutex
	bits    []byte // present blocks, bit i at bits[i/8] & 1<<(i%8)
	claimed []byte // blocks a writer is putting on disk right now
	present int    // set bits
	dirty   int    // bits set or cleared since the bitmap was last written
	gen     uint64 // incremented when a verification failure drops all blocks
	// verified: the content matched the digest and the final name is on disk.
	verified bool
	// unchecked: the final name was on disk at Open, but the content has
	// not been hashed since; no Blob of it is handed out until it has been
	// (see Cache.ensureChecked). checking: a goroutine is hashing it.
	unchecked, checking bool
	dead                error         // why the entry is unusable (ErrClosed, errEvicted)
	changed             chan struct{} // closed and replaced on every change waiters care about
	claimEnd            *sync.Cond    // broadcast when a claim ends
	// The hash covers blocks [0, hashed). One goroutine at a time, the one
	// that set hashing, advances it; it owns h until it clears hashing.
	hashing bool
	hashed  int
	h       hash.Hash
	// rewind: Drop removed blocks the hash covers while a goroutine held
	// the hashing role; it starts the hash over.
	rewind bool
}

func (c *Cache) newEntry(d v1.Hash, size, bs int64) *entry {
	n := int((size + bs - 1) / bs)
	e := &entry{
		c: c, d: d, size: size, bs: bs, n: n,
		bits:    make([]byte, (n+7)/8),
		claimed: make([]byte, (n+7)/8),
		changed: make(chan struct{}),
		h:       digest.Hasher(d),
	}
	e.claimEnd = sync.NewCond(&e.mu)
	return e
}

func has(bits []byte, i int) bool { return bits[i>>3]&(1<<(i&7)) != 0 }
func set(bits []byte, i int)      { bits[i>>3] |= 1 << (i & 7) }
func unset(bits []byte, i int)    { bits[i>>3] &^= 1 << (i & 7) }

// blockRange returns the offset and length of block i.
func (e *entry) blockRange(i int) (off, n int64) {
	off = int64(i) * e.bs
	return off, min(e.bs, e.size-off)
}

// notifyLocked wakes every waiter; they re-check the state.
func (e *entry) notifyLocked() {
	close(e.changed)
	e.changed = make(chan struct{})
}

// deadErr returns why e is unusable, or nil.
func (e *entry) deadErr() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.dead
}

func (e *entry) isVerified() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.verified
}

// Digest returns the blob's digest, "<algorithm>:<hex>".
func (b *Blob) Digest() string { return b.e.d.String() }

// Size returns the blob's size in bytes.
func (b *Blob) Size() int64 { return b.e.size }

// BlockSize returns the size of every block but the last.
func (b *Blob) BlockSize() int64 { return b.e.bs }

// Blocks returns the number of blocks, ceil(Size/BlockSize).
func (b *Blob) Blocks() int { return b.e.n }

// BlockRange returns the offset and length of block i, which must be in
// [0, Blocks()).
func (b *Blob) BlockRange(i int) (off, n int64) { return b.e.blockRange(i) }

// Has reports whether block i is present. It is false for i out of range.
func (b *Blob) Has(i int) bool {
	e := b.e
	if i < 0 || i >= e.n {
		return false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return has(e.bits, i)
}

// Missing returns the indexes of the blocks not present, in order.
func (b *Blob) Missing() []int {
	e := b.e
	e.mu.Lock()
	defer e.mu.Unlock()
	miss := make([]int, 0, e.n-e.present)
	for i := 0; i < e.n; i++ {
		if !has(e.bits, i) {
			miss = append(miss, i)
		}
	}
	return miss
}

// NextMissing returns the first block at or after from that is not present,
// or -1 if there is none.
func (b *Blob) NextMissing(from int) int {
	e := b.e
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := max(from, 0); i < e.n; i++ {
		if !has(e.bits, i) {
			return i
		}
	}
	return -1
}

// Complete reports whether every block is present and the content has been
// verified against the digest and recorded as such on disk.
func (b *Blob) Complete() bool { return b.e.isVerified() }

// Release drops the reference. Further calls do nothing.
func (b *Blob) Release() {
	if b.released.CompareAndSwap(false, true) {
		b.c.unref(b.e)
	}
}

func (b *Blob) live() error {
	if b.released.Load() {
		return fmt.Errorf("blobcache: %s: %w", b.e.d, ErrReleased)
	}
	return nil
}

// WaitBlock blocks until block i is present and returns nil. It returns an
// error wrapping ErrCorrupt if a verification failure dropped the blob's
// blocks meanwhile (call again to wait for the refill), ctx's error if ctx is
// done first, ErrClosed if the cache closes.
func (b *Blob) WaitBlock(ctx context.Context, i int) error {
	if err := b.live(); err != nil {
		return err
	}
	if i < 0 || i >= b.e.n {
		return fmt.Errorf("blobcache: %s: block %d outside [0, %d)", b.e.d, i, b.e.n)
	}
	return b.e.wait(ctx, func() bool { return has(b.e.bits, i) })
}

// Wait blocks until the blob is complete, with the errors of WaitBlock.
func (b *Blob) Wait(ctx context.Context) error {
	if err := b.live(); err != nil {
		return err
	}
	return b.e.wait(ctx, func() bool { return b.e.verified })
}

// testHookWaiting, if set by a test, is called each time wait is about to
// block, so that the test knows a waiter is in place.
var testHookWaiting func()

// wait blocks until ready, called with e.mu held, is true.
func (e *entry) wait(ctx context.Context, ready func() bool) error {
	e.mu.Lock()
	gen := e.gen
	for {
		switch {
		case e.dead != nil:
			e.mu.Unlock()
			return fmt.Errorf("blobcache: %s: %w", e.d, e.dead)
		case e.gen != gen:
			e.mu.Unlock()
			return fmt.Errorf("blobcache: %s: %w; its blocks were dropped", e.d, ErrCorrupt)
		case ready():
			e.mu.Unlock()
			return nil
		}
		ch := e.changed
		e.mu.Unlock()
		if testHookWaiting != nil {
			testHookWaiting()
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("blobcache: %s: wait: %w", e.d, context.Cause(ctx))
		}
		e.mu.Lock()
	}
}

// WriteBlock reads exactly the length of block i from r and stores it: on
// disk first, then marked present, which wakes readers waiting for it. It
// returns an error, and leaves the block missing, if r ends early or fails,
// or if the disk fails; a full disk, after evicting every blob not in use,
// gives an error wrapping ErrNoSpace. Writing a block that is present reads
// and ignores r's bytes, so a caller streaming several blocks from one body
// stays in step. Concurrent writes of one block store one of them.
//
// A write that extends the run of present blocks at the start of the blob
// hashes that extension before returning (see the package doc), and the one
// whose hashing reaches the end verifies the blob: it returns an error
// wrapping ErrCorrupt if the content does not match the digest (all blocks
// are then dropped), or nil with the blob complete. Other goroutines learn the
// outcome from Wait or Complete.
func (b *Blob) WriteBlock(i int, r io.Reader) error {
	if err := b.live(); err != nil {
		return err
	}
	e := b.e
	if i < 0 || i >= e.n {
		return fmt.Errorf("blobcache: %s: write block %d outside [0, %d)", e.d, i, e.n)
	}
	off, n := e.blockRange(i)
	bufp := e.c.buf(e.bs)
	defer e.c.putBuf(e.bs, bufp)
	buf := (*bufp)[:n]
	// Read the whole block before touching the file: a short body then
	// leaves no trace, and the claim below is held for a local write only.
	if _, err := io.ReadFull(r, buf); err != nil {
		return fmt.Errorf("blobcache: %s: read block %d: %w", e.d, i, err)
	}
	mine, err := e.claim(i)
	if err != nil || !mine {
		return err
	}
	err = e.writeAt(buf, off, i)
	chase, flush := e.unclaim(i, err == nil)
	if err != nil {
		return err
	}
	if chase {
		if err := e.chase(i, buf); err != nil {
			return err
		}
	}
	if flush {
		if err := e.flush(); err != nil {
			// The block is present; only its persistence lags.
			e.c.log.Warn("blobcache: bitmap flush failed", "digest", e.d.String(), "err", err)
		}
	}
	return nil
}

// claim makes the caller the only writer of block i. It returns false if the
// block is present. A claim lasts one local write, so waiting for one is short.
func (e *entry) claim(i int) (bool, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for {
		switch {
		case e.dead != nil:
			return false, fmt.Errorf("blobcache: %s: write block %d: %w", e.d, i, e.dead)
		case has(e.bits, i):
			return false, nil
		case !has(e.claimed, i):
			set(e.claimed, i)
			return true, nil
		}
		e.claimEnd.Wait()
	}
}

// unclaim ends a claim on block i, marking it present if ok. It reports
// whether the caller must advance the hash and whether it should flush.
func (e *entry) unclaim(i int, ok bool) (chase, flush bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	unset(e.claimed, i)
	e.claimEnd.Broadcast()
	if !ok || e.dead != nil {
		return false, false
	}
	set(e.bits, i)
	e.present++
	e.dirty++
	e.notifyLocked()
	if !e.hashing && e.hashed < e.n && has(e.bits, e.hashed) {
		e.hashing = true
		chase = true
	}
	return chase, int64(e.dirty)*e.bs >= e.c.syncBytes
}

// writeAt writes block i's data at off. When the disk is full it evicts
// unused blobs one by one, retrying after each.
func (e *entry) writeAt(p []byte, off int64, i int) error {
	for {
		_, err := e.f.WriteAt(p, off)
		if err == nil {
			return nil
		}
		if dead := e.deadErr(); dead != nil {
			err = dead // the file was closed under us
		}
		err = fmt.Errorf("blobcache: %s: write block %d: %w", e.d, i, noSpace(err))
		if !errors.Is(err, ErrNoSpace) || !e.c.reclaim() {
			return err
		}
	}
}

// chase advances the hash over the present blocks that follow it and, when
// it covers the whole blob, finishes the verification. The caller has set
// e.hashing; chase clears it. Block i's data is in mem (nil if not): blocks
// mostly arrive in order, so the next block to hash is usually the one just
// written, and hashing it from memory saves reading it back from the file.
func (e *entry) chase(i int, mem []byte) error {
	bufp := e.c.buf(e.bs)
	defer e.c.putBuf(e.bs, bufp)
	for {
		e.mu.Lock()
		if e.dead != nil {
			e.stopHashingLocked()
			e.mu.Unlock()
			return fmt.Errorf("blobcache: %s: verify: %w", e.d, e.dead)
		}
		if e.rewind {
			e.rewind = false
			e.hashed = 0
			e.h.Reset()
		}
		if e.hashed == e.n {
			e.mu.Unlock()
			return e.finish()
		}
		k := e.hashed
		if !has(e.bits, k) {
			e.hashing = false // a gap: its writer takes over
			e.mu.Unlock()
			return nil
		}
		e.mu.Unlock()
		if k == i && mem != nil {
			e.h.Write(mem)
		} else if err := e.hashFromFile(k, (*bufp)); err != nil {
			e.mu.Lock()
			e.stopHashingLocked()
			e.mu.Unlock()
			return err
		}
		e.mu.Lock()
		e.hashed++
		e.mu.Unlock()
	}
}

// hashFromFile adds block k, read back from the data file, to the hash. A
// present block is never written again until a reset, and only the hashing
// goroutine resets, so this read is stable.
func (e *entry) hashFromFile(k int, buf []byte) error {
	off, n := e.blockRange(k)
	buf = buf[:n]
	if _, err := e.f.ReadAt(buf, off); err != nil {
		return fmt.Errorf("blobcache: %s: verify: read block %d: %w", e.d, k, err)
	}
	e.h.Write(buf)
	return nil
}

// finish compares the complete hash with the digest. On a match it records
// the blob as verified on disk and then in memory; on a mismatch it drops
// every block. The caller holds the hashing role; finish releases it.
func (e *entry) finish() error {
	if !matches(e.d, e.h.Sum(nil)) {
		e.mu.Lock()
		e.bits = make([]byte, len(e.bits))
		e.present = 0
		e.dirty = e.n
		e.gen++
		e.hashed = 0
		e.h.Reset()
		e.rewind = false
		e.hashing = false
		e.notifyLocked()
		e.mu.Unlock()
		e.c.failures.Add(1)
		e.c.log.Warn("blobcache: content does not match digest; dropped all blocks", "digest", e.d.String(), "size", e.size)
		if err := e.flush(); err != nil {
			e.c.log.Warn("blobcache: bitmap flush failed", "digest", e.d.String(), "err", err)
		}
		return fmt.Errorf("blobcache: %s: %w", e.d, ErrCorrupt)
	}
	err := e.persistVerified()
	e.mu.Lock()
	if err != nil {
		// Start over on the next Verify: the hash state is spent.
		e.hashed = 0
		e.h.Reset()
	} else {
		e.verified = true
	}
	e.stopHashingLocked()
	e.mu.Unlock()
	if err != nil {
		return err
	}
	e.c.log.Debug("blobcache: verified", "digest", e.d.String(), "size", e.size)
	return nil
}

// Verify finishes the verification of a blob whose blocks are all present but
// which is not complete, as after a failed write of the completion marker;
// WriteBlock does it by itself otherwise. It returns nil if the blob is
// complete, an error wrapping ErrNotPresent if blocks are missing, and the
// errors of WriteBlock's verification.
func (b *Blob) Verify() error {
	if err := b.live(); err != nil {
		return err
	}
	e := b.e
	for {
		e.mu.Lock()
		switch {
		case e.verified:
			e.mu.Unlock()
			return nil
		case e.dead != nil:
			e.mu.Unlock()
			return fmt.Errorf("blobcache: %s: verify: %w", e.d, e.dead)
		case e.present < e.n:
			e.mu.Unlock()
			return fmt.Errorf("blobcache: %s: verify: %w: %d of %d blocks missing", e.d, ErrNotPresent, e.n-e.present, e.n)
		case e.hashing:
			// Another goroutine is finishing it (a local read of present
			// blocks, so this wait is short); then look at the outcome.
			e.mu.Unlock()
			if err := e.wait(context.Background(), func() bool { return !e.hashing }); err != nil {
				return err
			}
			continue
		}
		e.hashing = true
		e.mu.Unlock()
		return e.chase(-1, nil)
	}
}

// stopHashingLocked gives up the hashing role and wakes waiters, among them
// a Verify waiting for the outcome.
func (e *entry) stopHashingLocked() {
	e.hashing = false
	e.notifyLocked()
}

// Drop marks blocks [from, to) missing again, and persists that, so that
// they are fetched anew. It is for bytes a consumer found wrong before the
// blob was complete (a chunk of a lazily read layer that failed its own
// digest): without it, a retry would read the same bad blocks.
//
// Readers and writers of other blocks are not disturbed, and a reader waiting
// for a dropped block waits for it to come back. A read that was already
// copying a dropped block may return its old bytes, as it would have a moment
// earlier. A complete blob has nothing to drop: its content matches its
// digest, so Drop returns an error and leaves it alone. If the last block has
// just arrived, Drop waits for the blob's verification to decide.
func (b *Blob) Drop(from, to int) error {
	if err := b.live(); err != nil {
		return err
	}
	e := b.e
	if from < 0 || to > e.n || from > to {
		return fmt.Errorf("blobcache: %s: drop blocks [%d, %d) outside [0, %d)", e.d, from, to, e.n)
	}
	// The hash covers every block and its verdict is being reached: wait
	// for it (a local read of present blocks, so short).
	err := e.wait(context.Background(), func() bool { return !e.hashing || e.hashed < e.n })
	if err != nil && !errors.Is(err, ErrCorrupt) {
		return err
	}
	e.mu.Lock()
	switch {
	case e.dead != nil:
		e.mu.Unlock()
		return fmt.Errorf("blobcache: %s: drop: %w", e.d, e.dead)
	case e.verified || e.unchecked:
		e.mu.Unlock()
		return fmt.Errorf("blobcache: %s: drop blocks [%d, %d): the blob is complete and matches its digest", e.d, from, to)
	}
	dropped := 0
	for i := from; i < to; i++ {
		if has(e.bits, i) {
			unset(e.bits, i)
			dropped++
		}
	}
	if dropped == 0 {
		e.mu.Unlock()
		return nil
	}
	e.present -= dropped
	e.dirty += dropped
	if from < e.hashed {
		// The running hash has read bytes that are being replaced.
		if e.hashing {
			e.rewind = true
		} else {
			e.hashed = 0
			e.h.Reset()
		}
	}
	e.notifyLocked()
	e.mu.Unlock()
	e.c.log.Info("blobcache: dropped blocks", "digest", e.d.String(), "from", from, "to", to, "dropped", dropped)
	return e.flush()
}
