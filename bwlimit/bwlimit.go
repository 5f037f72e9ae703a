// Package bwlimit limits the bandwidth of byte streams, as a VM's network
// link would: one Limiter per direction of a VM, shared by all its streams,
// which then share the rate between them.
//
// A Limiter is a token bucket (golang.org/x/time/rate) counting bytes. Its
// burst is 1/20 of a second of traffic (at least 16 KiB): small enough that
// a stream measured over a couple of seconds sees the configured rate and
// not the rate plus a large initial burst (at most 2.5% over 2 s), large
// enough that a waiter whose timer fires up to 50 ms late on a busy machine
// finds the tokens it missed instead of losing that time for good. Streams charge the limiter for
// the bytes they actually moved, in pieces no larger than the burst.
package bwlimit

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// minBurst keeps tokens per wait large enough that the per-wait overhead
// (a lock, maybe a timer) stays small against the bytes moved.
const minBurst = 16 << 10

// burstDivisor sets the burst to 1/burstDivisor of a second of traffic.
const burstDivisor = 20

// A Limiter limits the total rate of all streams charged to it. The nil
// *Limiter, and one created with a rate of 0, do not limit. It is safe for
// concurrent use.
type Limiter struct {
	bps   int64
	burst int
	lim   *rate.Limiter // nil when unlimited
}

// New returns a Limiter allowing bytesPerSecond bytes per second in total;
// 0 or less means unlimited.
func New(bytesPerSecond int64) *Limiter {
	if bytesPerSecond <= 0 {
		return &Limiter{}
	}
	burst := bytesPerSecond / burstDivisor
	if burst < minBurst {
		// Below 800 KiB/s the floor dominates; below 16 KiB/s a whole
		// second of traffic is the most we allow in one go.
		burst = min(minBurst, bytesPerSecond)
	}
	burst = min(burst, int64(maxInt))
	return &Limiter{
		bps:   bytesPerSecond,
		burst: int(burst),
		lim:   rate.NewLimiter(rate.Limit(bytesPerSecond), int(burst)),
	}
}

const maxInt = int(^uint(0) >> 1)

// Rate returns the limit in bytes per second, 0 if unlimited.
func (l *Limiter) Rate() int64 {
	if l == nil {
		return 0
	}
	return l.bps
}

// Burst returns the most bytes the limiter lets through at once, which is
// also the largest piece a stream charges in one wait; 0 if unlimited.
func (l *Limiter) Burst() int {
	if l == nil {
		return 0
	}
	return l.burst
}

// Unlimited reports whether l lets everything through at once.
func (l *Limiter) Unlimited() bool {
	return l == nil || l.lim == nil
}

// timers recycles the timers that waits sleep on, so that a limited stream
// does not allocate one per wait.
var timers = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return t
}}

// WaitN blocks until the limiter allows n more bytes, or ctx is done. Any n
// is allowed: it is charged in pieces of at most Burst bytes. On
// cancellation it returns ctx.Err() and gives back the tokens of the piece
// it was waiting for.
func (l *Limiter) WaitN(ctx context.Context, n int) error {
	if l.Unlimited() || n <= 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	for n > 0 {
		k := min(n, l.burst)
		if err := l.wait(ctx, k); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// wait takes n <= burst tokens. It uses ReserveN rather than rate.WaitN
// because WaitN allocates a timer on every call that has to sleep.
func (l *Limiter) wait(ctx context.Context, n int) error {
	now := time.Now()
	r := l.lim.ReserveN(now, n)
	d := r.DelayFrom(now)
	if d == 0 {
		return nil
	}
	t := timers.Get().(*time.Timer)
	defer timers.Put(t)
	t.Reset(d)
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		t.Stop()
		r.CancelAt(time.Now())
		return ctx.Err()
	}
}
