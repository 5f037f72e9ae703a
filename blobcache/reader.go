package blobcache

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// ReadAt reads len(p) bytes at off from present blocks, as io.ReaderAt does.
// It stops at the first block that is not present, returning the bytes before
// it and an error wrapping ErrNotPresent; at the end of the blob it returns
// io.EOF. It never waits; see Reader for that.
func (b *Blob) ReadAt(p []byte, off int64) (int, error) {
	if err := b.live(); err != nil {
		return 0, err
	}
	e := b.e
	if off < 0 {
		return 0, fmt.Errorf("blobcache: %s: read at negative offset %d", e.d, off)
	}
	if off >= e.size {
		return 0, io.EOF
	}
	want := min(int64(len(p)), e.size-off)
	e.mu.Lock()
	if e.dead != nil {
		e.mu.Unlock()
		return 0, fmt.Errorf("blobcache: %s: read: %w", e.d, e.dead)
	}
	avail, gen := e.availLocked(off, want), e.gen
	e.mu.Unlock()
	n, err := e.readStable(p[:avail], off, gen)
	switch {
	case err != nil:
		return n, err
	case int64(n) < want:
		return n, fmt.Errorf("blobcache: %s: read at %d: %w: block %d", e.d, off+int64(n), ErrNotPresent, (off+int64(n))/e.bs)
	case n < len(p):
		return n, io.EOF
	}
	return n, nil
}

// availLocked returns how many of the want bytes at off lie in present
// blocks, counting from off.
func (e *entry) availLocked(off, want int64) int64 {
	end := off
	for i := int(off / e.bs); end < off+want && i < e.n && has(e.bits, i); i++ {
		end = min(int64(i+1)*e.bs, e.size)
	}
	return min(end-off, want)
}

// readStable reads present bytes and then checks that no verification
// failure dropped them meanwhile: after a drop, a block may be rewritten while
// it is read.
func (e *entry) readStable(p []byte, off int64, gen uint64) (int, error) {
	n, err := e.f.ReadAt(p, off)
	if err != nil {
		if dead := e.deadErr(); dead != nil {
			err = dead // the file was closed under us
		}
		return 0, fmt.Errorf("blobcache: %s: read at %d: %w", e.d, off, err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.gen != gen {
		return 0, fmt.Errorf("blobcache: %s: read at %d: %w; its blocks were dropped", e.d, off, ErrCorrupt)
	}
	return n, nil
}

// Reader returns the n bytes at off as they arrive: each Read returns what is
// present from the current position and waits, without polling, when nothing
// is. The reader holds its own reference to the blob until Close.
//
// Reads end with ctx's error once ctx is done, and with ErrClosed if the cache
// closes. If a verification failure drops the blob's blocks, a reader that
// has already returned bytes fails with an error wrapping ErrCorrupt, since
// those bytes may be wrong; one that has returned nothing waits for the
// refill. A reader may thus return bytes of a blob that later fails
// verification but finish before the failure: consumers that need verified
// bytes check the digest or wait for Complete.
func (b *Blob) Reader(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	if err := b.live(); err != nil {
		return nil, err
	}
	e := b.e
	if off < 0 || n < 0 || off > e.size-n {
		return nil, fmt.Errorf("blobcache: %s: range [%d, %d+%d) outside [0, %d)", e.d, off, off, n, e.size)
	}
	e.c.mu.Lock()
	if e.c.closed {
		e.c.mu.Unlock()
		return nil, fmt.Errorf("blobcache: %s: %w", e.d, ErrClosed)
	}
	ref := e.c.refLocked(e)
	e.c.mu.Unlock()
	e.mu.Lock()
	gen := e.gen
	e.mu.Unlock()
	return &reader{b: ref, ctx: ctx, off: off, end: off + n, gen: gen}, nil
}

type reader struct {
	b        *Blob // the reader's own reference
	ctx      context.Context
	off, end int64
	gen      uint64 // the blocks' generation when the first byte was read
	started  bool   // bytes were returned, so a drop is an error
}

func (r *reader) Read(p []byte) (int, error) {
	if err := r.b.live(); err != nil {
		return 0, err
	}
	if r.off >= r.end {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	for {
		avail, err := r.wait(min(int64(len(p)), r.end-r.off))
		if err != nil {
			return 0, err
		}
		n, err := r.b.e.readStable(p[:avail], r.off, r.gen)
		if err != nil && !r.started && errors.Is(err, ErrCorrupt) {
			continue // dropped while read, nothing returned yet: wait for the refill
		}
		r.off += int64(n)
		r.started = r.started || n > 0
		return n, err
	}
}

// wait blocks until the block at r.off is present and returns how many of
// the want bytes there can be read.
func (r *reader) wait(want int64) (int64, error) {
	e := r.b.e
	e.mu.Lock()
	for {
		if e.dead != nil {
			e.mu.Unlock()
			return 0, fmt.Errorf("blobcache: %s: read: %w", e.d, e.dead)
		}
		if e.gen != r.gen {
			if r.started {
				e.mu.Unlock()
				return 0, fmt.Errorf("blobcache: %s: read at %d: %w; its blocks were dropped", e.d, r.off, ErrCorrupt)
			}
			r.gen = e.gen
		}
		if avail := e.availLocked(r.off, want); avail > 0 {
			e.mu.Unlock()
			return avail, nil
		}
		ch := e.changed
		e.mu.Unlock()
		select {
		case <-ch:
		case <-r.ctx.Done():
			return 0, fmt.Errorf("blobcache: %s: read at %d: %w", e.d, r.off, context.Cause(r.ctx))
		}
		e.mu.Lock()
	}
}

// Close releases the reader's reference. Further Reads return ErrReleased.
func (r *reader) Close() error {
	r.b.Release()
	return nil
}
