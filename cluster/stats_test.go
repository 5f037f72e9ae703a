package cluster

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestLowerBound(t *testing.T) {
	const MiB = 1 << 20
	tests := []struct {
		name                     string
		vms                      int
		size, down, up, registry int64
		want                     time.Duration
	}{
		{"download bound", 128, 16 * MiB, 4 * MiB, 4 * MiB, 16 * MiB, 4 * time.Second},
		{"registry bound", 1, 16 * MiB, 0, 0, 4 * MiB, 4 * time.Second},
		// 64 VMs × 16 MiB over 16 + 64×1 MiB/s of uplinks.
		{"uplinks bound", 64, 16 * MiB, 8 * MiB, 1 * MiB, 16 * MiB, 12800 * time.Millisecond},
		{"registry alone when VMs do not upload", 4, 16 * MiB, 0, 0, 16 * MiB, time.Second},
		{"everything unlimited", 8, 16 * MiB, 0, 0, 0, 0},
		{"no VMs", 0, 16 * MiB, MiB, MiB, MiB, 0},
		{"empty image", 8, 0, MiB, MiB, MiB, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := LowerBound(tt.vms, tt.size, tt.down, tt.up, tt.registry)
			if d := got - tt.want; d < -time.Microsecond || d > time.Microsecond {
				t.Errorf("LowerBound(%d, %d, %d, %d, %d) = %v, want %v", tt.vms, tt.size, tt.down, tt.up, tt.registry, got, tt.want)
			}
		})
	}
}

// TestLowerBoundProperties checks, over seeded random scenarios, that the
// bound never falls below any one of its terms, grows with the VMs and the
// size, and shrinks as any link gets faster.
func TestLowerBoundProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		vms := 1 + rng.IntN(1000)
		size := 1 + rng.Int64N(1<<30)
		down, up, reg := 1+rng.Int64N(1<<28), 1+rng.Int64N(1<<28), 1+rng.Int64N(1<<28)
		lb := LowerBound(vms, size, down, up, reg)
		sec := func(x float64) time.Duration { return time.Duration(x * float64(time.Second)) }
		for _, term := range []time.Duration{sec(float64(size) / float64(down)), sec(float64(size) / float64(reg))} {
			if lb < term-time.Microsecond {
				t.Fatalf("LowerBound(%d, %d, %d, %d, %d) = %v, below the term %v", vms, size, down, up, reg, lb, term)
			}
		}
		for _, more := range []time.Duration{
			LowerBound(vms+1, size, down, up, reg), LowerBound(vms, size+1, down, up, reg),
		} {
			if more < lb {
				t.Fatalf("LowerBound(%d, %d, %d, %d, %d) = %v shrinks with more VMs or bytes: %v", vms, size, down, up, reg, lb, more)
			}
		}
		for _, faster := range []time.Duration{
			LowerBound(vms, size, down*2, up, reg), LowerBound(vms, size, down, up*2, reg), LowerBound(vms, size, down, up, reg*2),
		} {
			if faster > lb {
				t.Fatalf("LowerBound(%d, %d, %d, %d, %d) = %v grows with a faster link: %v", vms, size, down, up, reg, lb, faster)
			}
		}
	}
}

func TestPercentile(t *testing.T) {
	ten := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	tests := []struct {
		values []time.Duration
		p      float64
		want   time.Duration
	}{
		{ten, 50, 5},
		{ten, 90, 9},
		{ten, 99, 10},
		{ten, 100, 10},
		{ten, 1, 1},
		{[]time.Duration{7}, 50, 7},
		{nil, 50, 0},
		{[]time.Duration{1, 2, 3}, 50, 2},
		{[]time.Duration{1, 2, 3, 4}, 50, 2},
	}
	for _, tt := range tests {
		if got := Percentile(tt.values, tt.p); got != tt.want {
			t.Errorf("Percentile(%v, %v) = %v, want %v", tt.values, tt.p, got, tt.want)
		}
	}
}
