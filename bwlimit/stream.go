package bwlimit

import (
	"context"
	"io"
	"sync"
)

// copyBufSize is the buffer ReadFrom and WriteTo copy through, io.Copy's
// size; pieces are further cut to the limiter's burst.
const copyBufSize = 32 << 10

var copyBufs = sync.Pool{New: func() any {
	b := make([]byte, copyBufSize)
	return &b
}}

// NewReader returns a reader that reads from r no faster than l allows.
// Each Read returns at most l.Burst() bytes and, after reading them, waits
// until l allows them, so l is charged exactly for the bytes delivered. A
// wait cut short by ctx returns the bytes read with ctx.Err(). If l is
// unlimited, NewReader returns r itself.
func NewReader(ctx context.Context, r io.Reader, l *Limiter) io.Reader {
	if l.Unlimited() {
		return r
	}
	return &reader{ctx: ctx, r: r, l: l}
}

type reader struct {
	ctx context.Context
	r   io.Reader
	l   *Limiter
}

func (r *reader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	if len(p) > r.l.burst {
		p = p[:r.l.burst]
	}
	n, err := r.r.Read(p)
	if werr := r.l.WaitN(r.ctx, n); werr != nil {
		return n, werr
	}
	return n, err
}

// WriteTo lets io.Copy use a pooled buffer instead of allocating one.
func (r *reader) WriteTo(w io.Writer) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	return copyThrough(w, r, *bp)
}

// NewWriter returns a writer that writes to w no faster than l allows. Each
// Write waits until l allows the bytes, in pieces of at most l.Burst()
// bytes, before writing them. If l is unlimited, NewWriter returns w
// itself.
func NewWriter(ctx context.Context, w io.Writer, l *Limiter) io.Writer {
	if l.Unlimited() {
		return w
	}
	return &writer{ctx: ctx, w: w, l: l}
}

type writer struct {
	ctx context.Context
	w   io.Writer
	l   *Limiter
}

func (w *writer) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		k := min(len(p), w.l.burst)
		if err := w.l.WaitN(w.ctx, k); err != nil {
			return written, err
		}
		n, err := w.w.Write(p[:k])
		written += n
		if err != nil {
			return written, err
		}
		if n < k {
			return written, io.ErrShortWrite
		}
		p = p[k:]
	}
	return written, nil
}

// ReadFrom lets io.Copy use a pooled buffer instead of allocating one.
func (w *writer) ReadFrom(r io.Reader) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	return copyThrough(w, r, *bp)
}

// copyThrough is io.CopyBuffer without its ReaderFrom/WriterTo shortcuts,
// which would recurse into the callers.
func copyThrough(dst io.Writer, src io.Reader, buf []byte) (int64, error) {
	var total int64
	for {
		n, rerr := src.Read(buf)
		if n > 0 {
			m, werr := dst.Write(buf[:n])
			total += int64(m)
			if werr != nil {
				return total, werr
			}
			if m < n {
				return total, io.ErrShortWrite
			}
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}
