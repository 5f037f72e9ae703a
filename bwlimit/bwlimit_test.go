package bwlimit

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand"
	"sync"
	"testing"
	"testing/iotest"
	"time"
)

const (
	kib = 1 << 10
	mib = 1 << 20
)

func TestNewBurst(t *testing.T) {
	tests := []struct {
		bps       int64
		wantBurst int
	}{
		{0, 0},
		{-5, 0},
		{1, 1},
		{1000, 1000},
		{16 * kib, 16 * kib},
		{100 * kib, 16 * kib},
		{400 * kib, 20 * kib},
		{8 * mib, 8 * mib / 20},
		{125e6, 125e6 / 20},
	}
	for _, tt := range tests {
		l := New(tt.bps)
		if got := l.Burst(); got != tt.wantBurst {
			t.Errorf("New(%d).Burst() = %d, want %d", tt.bps, got, tt.wantBurst)
		}
		if got, want := l.Rate(), max(tt.bps, 0); got != want {
			t.Errorf("New(%d).Rate() = %d, want %d", tt.bps, got, want)
		}
		if got := l.Unlimited(); got != (tt.bps <= 0) {
			t.Errorf("New(%d).Unlimited() = %v", tt.bps, got)
		}
	}
}

func TestUnlimitedPassesThrough(t *testing.T) {
	ctx := context.Background()
	for _, l := range []*Limiter{nil, New(0)} {
		r := bytes.NewReader(nil)
		if got := NewReader(ctx, r, l); got != io.Reader(r) {
			t.Errorf("NewReader with %v limiter wrapped the reader", l)
		}
		var w bytes.Buffer
		if got := NewWriter(ctx, &w, l); got != io.Writer(&w) {
			t.Errorf("NewWriter with %v limiter wrapped the writer", l)
		}
		if err := l.WaitN(ctx, 1<<40); err != nil {
			t.Errorf("unlimited WaitN: %v", err)
		}
		if l.Rate() != 0 || l.Burst() != 0 || !l.Unlimited() {
			t.Errorf("unlimited limiter reports rate %d burst %d", l.Rate(), l.Burst())
		}
	}
}

// WaitN must accept more than the burst, which rate.Limiter.WaitN refuses.
func TestWaitNAboveBurst(t *testing.T) {
	l := New(4 * mib)
	if err := l.WaitN(context.Background(), 3*l.Burst()+1); err != nil {
		t.Fatalf("WaitN(3*burst+1): %v", err)
	}
}

// smallReader returns at most n bytes per Read, as a network connection
// does, whatever the caller's buffer.
type smallReader struct {
	r io.Reader
	n int
}

func (s smallReader) Read(p []byte) (int, error) {
	return s.r.Read(p[:min(len(p), s.n)])
}

// The reader charges for the bytes it returned, not for the buffer it was
// offered: reading 1000 bytes in pieces of 100 through 32 KiB buffers must
// take 1000 tokens.
func TestReaderChargesBytesRead(t *testing.T) {
	l := New(16 * kib) // burst 16 KiB, refill 16 bytes per ms
	start := time.Now()
	r := NewReader(context.Background(), smallReader{bytes.NewReader(make([]byte, 1000)), 100}, l)
	buf := make([]byte, 32*kib)
	total := 0
	for {
		n, err := r.Read(buf)
		total += n
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	elapsed := time.Since(start)
	tokens := l.lim.TokensAt(time.Now())
	refill := elapsed.Seconds() * float64(l.Rate())
	want := float64(l.Burst() - total)
	if total != 1000 || tokens < want-1 || tokens > want+refill+1 {
		t.Errorf("read %d bytes, %.0f tokens left; want %.0f (+%.0f refill)", total, tokens, want, refill)
	}
}

// Read never returns more than a burst, so one Read never has to wait for
// more tokens than the bucket holds.
func TestReaderPieceAtMostBurst(t *testing.T) {
	l := New(16 * kib)
	r := NewReader(context.Background(), bytes.NewReader(make([]byte, 64*kib)), l)
	n, err := r.Read(make([]byte, 64*kib))
	if err != nil || n != l.Burst() {
		t.Errorf("Read(64 KiB) = %d, %v; want %d", n, err, l.Burst())
	}
}

func TestCanceled(t *testing.T) {
	l := New(kib)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.WaitN(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Errorf("WaitN on canceled ctx = %v", err)
	}
	src := bytes.NewReader(make([]byte, 10))
	if n, err := NewReader(ctx, src, l).Read(make([]byte, 10)); n != 0 || !errors.Is(err, context.Canceled) {
		t.Errorf("Read on canceled ctx = %d, %v", n, err)
	}
	if src.Len() != 10 {
		t.Errorf("Read on canceled ctx consumed %d bytes of its source", 10-src.Len())
	}
	var w bytes.Buffer
	if n, err := NewWriter(ctx, &w, l).Write(make([]byte, 10)); n != 0 || !errors.Is(err, context.Canceled) || w.Len() != 0 {
		t.Errorf("Write on canceled ctx = %d, %v, wrote %d", n, err, w.Len())
	}
}

// A deadline cuts a long wait short instead of sleeping through it.
func TestDeadlineDuringWait(t *testing.T) {
	l := New(kib) // 64 KiB would take a minute
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	var w bytes.Buffer
	n, err := NewWriter(ctx, &w, l).Write(make([]byte, 64*kib))
	if !errors.Is(err, context.DeadlineExceeded) || n >= 64*kib || n != w.Len() {
		t.Errorf("Write past deadline = %d, %v (wrote %d)", n, err, w.Len())
	}
}

// A writer cut short reports what it wrote, so callers can account for it.
func TestWriterShortWrite(t *testing.T) {
	l := New(100 * mib)
	w := NewWriter(context.Background(), shortWriter{}, l)
	if n, err := w.Write(make([]byte, 100)); n != 50 || !errors.Is(err, io.ErrShortWrite) {
		t.Errorf("Write to short writer = %d, %v", n, err)
	}
}

type shortWriter struct{}

func (shortWriter) Write(p []byte) (int, error) { return len(p) / 2, nil }

// Data passes unchanged through every path: Write, ReadFrom, Read, WriteTo.
func TestCopyIntact(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	data := make([]byte, 3*mib+12345)
	rng.Read(data)
	ctx := context.Background()
	l := New(1 << 40)
	paths := map[string]func(dst io.Writer, src io.Reader) (int64, error){
		"io.Copy into Writer": func(dst io.Writer, src io.Reader) (int64, error) {
			return io.Copy(NewWriter(ctx, dst, l), src)
		},
		"io.Copy from Reader": func(dst io.Writer, src io.Reader) (int64, error) {
			return io.Copy(dst, NewReader(ctx, src, l))
		},
		"one Write": func(dst io.Writer, src io.Reader) (int64, error) {
			b, _ := io.ReadAll(src)
			n, err := NewWriter(ctx, dst, l).Write(b)
			return int64(n), err
		},
		"odd reads": func(dst io.Writer, src io.Reader) (int64, error) {
			return io.Copy(dst, iotest.HalfReader(NewReader(ctx, src, l)))
		},
	}
	for name, copyFn := range paths {
		var out bytes.Buffer
		n, err := copyFn(&out, smallReader{bytes.NewReader(data), 7777})
		if err != nil || n != int64(len(data)) || !bytes.Equal(out.Bytes(), data) {
			t.Errorf("%s: copied %d, %v; data intact: %v", name, n, err, bytes.Equal(out.Bytes(), data))
		}
	}
}

// A limited stream cannot beat its rate: moving n bytes takes at least
// (n - burst) / rate. This lower bound holds on any machine, however slow.
func TestLowerBound(t *testing.T) {
	const rate, size = 4 * mib, mib
	l := New(rate)
	start := time.Now()
	if _, err := io.Copy(NewWriter(context.Background(), io.Discard, l), io.LimitReader(zeros{}, size)); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	if floor := time.Duration(float64(size-l.Burst()) / rate * float64(time.Second)); elapsed < floor {
		t.Errorf("%d bytes at %d B/s took %v, less than %v", size, rate, elapsed, floor)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// within asserts that elapsed is within [0.95, 1.10] of want. The lower
// bound is the limiter's promise: never faster than its rate by more than
// its burst. The upper bound is relaxed by the scheduler stalls measured
// meanwhile, because a sleeping stream woken later than its burst window
// loses that time for good, as a real link idle for a while would.
func within(t *testing.T, what string, elapsed, want, stalls time.Duration) {
	t.Helper()
	ratio := elapsed.Seconds() / want.Seconds()
	t.Logf("%s: %v for %v expected (%.3f), scheduler stalls %v", what, elapsed, want, ratio, stalls)
	if ratio < 0.95 || elapsed > want*110/100+stalls {
		t.Errorf("%s took %v, %.3f of the expected %v (stalls %v)", what, elapsed, ratio, want, stalls)
	}
}

// stallMeter measures how much later than asked goroutines of this process
// wake up, beyond a window the limiter absorbs, while a test measures.
type stallMeter struct {
	stop   chan struct{}
	done   chan struct{}
	excess time.Duration
}

func startStallMeter(window time.Duration) *stallMeter {
	m := &stallMeter{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		const tick = 2 * time.Millisecond
		timer := time.NewTimer(tick)
		defer timer.Stop()
		for {
			start := time.Now()
			timer.Reset(tick)
			select {
			case <-m.stop:
				return
			case <-timer.C:
			}
			if late := time.Since(start) - tick; late > window {
				m.excess += late - window
			}
		}
	}()
	return m
}

// Stop ends the measurement and returns the total excess lateness.
func (m *stallMeter) Stop() time.Duration {
	close(m.stop)
	<-m.done
	return m.excess
}

// measure runs fn and returns how long it took and the stalls meanwhile.
func measure(l *Limiter, fn func()) (elapsed, stalls time.Duration) {
	window := time.Duration(float64(l.Burst()) / float64(l.Rate()) * float64(time.Second))
	m := startStallMeter(window)
	start := time.Now()
	fn()
	elapsed = time.Since(start)
	return elapsed, m.Stop()
}

// One stream alone sees its configured rate: 16 MiB at 8 MiB/s in 2 s.
func TestAccuracy(t *testing.T) {
	if testing.Short() {
		t.Skip("measures 2 s transfers")
	}
	const rate, size = 8 * mib, 16 * mib
	want := 2 * time.Second
	ctx := context.Background()
	t.Run("Writer", func(t *testing.T) {
		l := New(rate)
		elapsed, stalls := measure(l, func() {
			if _, err := io.Copy(NewWriter(ctx, io.Discard, l), io.LimitReader(zeros{}, size)); err != nil {
				t.Error(err)
			}
		})
		within(t, "writer", elapsed, want, stalls)
	})
	t.Run("Reader", func(t *testing.T) {
		l := New(rate)
		elapsed, stalls := measure(l, func() {
			if _, err := io.Copy(io.Discard, NewReader(ctx, io.LimitReader(zeros{}, size), l)); err != nil {
				t.Error(err)
			}
		})
		within(t, "reader", elapsed, want, stalls)
	})
}

// Two streams on one limiter share its rate: together they move 16 MiB at
// 8 MiB/s in 2 s, and neither starves the other.
func TestSharedRate(t *testing.T) {
	if testing.Short() {
		t.Skip("measures a 2 s transfer")
	}
	const rate, each = 8 * mib, 8 * mib
	l := New(rate)
	done := make([]time.Duration, 2)
	errs := make([]error, 2)
	elapsed, stalls := measure(l, func() {
		start := time.Now()
		var wg sync.WaitGroup
		for i := range done {
			wg.Go(func() {
				w := NewWriter(context.Background(), io.Discard, l)
				_, errs[i] = io.Copy(w, io.LimitReader(zeros{}, each))
				done[i] = time.Since(start)
			})
		}
		wg.Wait()
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	within(t, "two streams", elapsed, 2*time.Second, stalls)
	// Fair sharing finishes both streams together; a starved stream would
	// finish its 8 MiB alone at full rate, a second after the other.
	if first, last := min(done[0], done[1]), max(done[0], done[1]); first < last*8/10 {
		t.Errorf("streams finished at %v and %v: the limiter did not share", first, last)
	}
}

func TestAllocations(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items under the race detector")
	}
	ctx := context.Background()
	l := New(64 * 1 << 30) // waits rarely, but does account
	w := NewWriter(ctx, io.Discard, l)
	src := io.LimitReader(zeros{}, 0)
	buf := make([]byte, 256*kib)
	allocs := testing.AllocsPerRun(100, func() {
		src.(*io.LimitedReader).N = 4 * mib
		if _, err := io.Copy(w, src); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(buf); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("limited copy allocates %.1f times per 4 MiB", allocs)
	}
}

func BenchmarkWriter(b *testing.B) {
	for _, bc := range []struct {
		name string
		l    *Limiter
	}{
		{"unlimited", nil},
		// A rate far above what the benchmark reaches measures the cost
		// of accounting alone.
		{"accounting", New(1 << 50)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			w := NewWriter(context.Background(), io.Discard, bc.l)
			buf := make([]byte, 32*kib)
			b.SetBytes(int64(len(buf)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := w.Write(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkReaderCopy(b *testing.B) {
	l := New(1 << 50)
	src := &io.LimitedReader{R: zeros{}}
	b.SetBytes(mib)
	b.ReportAllocs()
	for b.Loop() {
		src.N = mib
		if _, err := io.Copy(io.Discard, NewReader(context.Background(), src, l)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWaitNSleeping measures waits that do sleep: the timer must come
// from the pool, not a fresh allocation.
func BenchmarkWaitNSleeping(b *testing.B) {
	l := New(256 * mib) // burst 5 MiB: a 1 MiB wait sleeps once the bucket is empty
	ctx := context.Background()
	b.SetBytes(mib)
	b.ReportAllocs()
	for b.Loop() {
		if err := l.WaitN(ctx, mib); err != nil {
			b.Fatal(err)
		}
	}
}
