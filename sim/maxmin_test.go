package sim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

func spec(l0, l1, capBy int32) flowSpec {
	return flowSpec{links: [2]int32{l0, l1}, capBy: capBy}
}

func TestMaxMinHandComputed(t *testing.T) {
	inf := math.Inf(1)
	zero := func(f flowSpec) flowSpec { f.zero = true; return f }
	tests := []struct {
		name  string
		caps  []float64
		flows []flowSpec
		want  []float64
	}{
		{"two flows share a link", []float64{10}, []flowSpec{spec(0, -1, -1), spec(0, -1, -1)}, []float64{5, 5}},
		{
			// B fills first at 2 per flow; flow 0 then takes what A has left.
			"classic two links",
			[]float64{10, 4},
			[]flowSpec{spec(0, -1, -1), spec(0, 1, -1), spec(1, -1, -1)},
			[]float64{8, 2, 2},
		},
		{
			// Flow 1 may not pass flow 2, which link 1 holds at 3.
			"bounded by another flow",
			[]float64{10, 3},
			[]flowSpec{spec(0, -1, -1), spec(0, -1, 2), spec(1, -1, -1)},
			[]float64{7, 3, 3},
		},
		{"a pinned flow leaves the link to the other", []float64{10}, []flowSpec{zero(spec(0, -1, -1)), spec(0, -1, -1)}, []float64{0, 10}},
		{"pinned to zero propagates", []float64{10, 10}, []flowSpec{zero(spec(0, -1, -1)), spec(1, -1, 0)}, []float64{0, 0}},
		{"unlimited link", []float64{inf, 5}, []flowSpec{spec(0, 1, -1), spec(0, -1, -1)}, []float64{5, inf}},
		{
			"a chain of bounds",
			[]float64{6, 100, 100},
			[]flowSpec{spec(0, -1, -1), spec(1, -1, 0), spec(2, -1, 1), spec(0, -1, -1)},
			[]float64{3, 3, 3, 3},
		},
		{
			// The tree's fan-out: a parent's uplink (0) feeds two children
			// whose downlinks (1, 2) are as fast; each gets half.
			"fan-out of two",
			[]float64{125, 125, 125},
			[]flowSpec{spec(0, 1, -1), spec(0, 2, -1)},
			[]float64{62.5, 62.5},
		},
	}
	var m maxMin
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := make([]float64, len(tt.flows))
			m.solve(tt.caps, tt.flows, got)
			for i := range got {
				if got[i] != tt.want[i] && math.Abs(got[i]-tt.want[i]) > 1e-9*tt.want[i] {
					t.Fatalf("rates = %v, want %v", got, tt.want)
				}
			}
		})
	}
}

// TestMaxMinProperties checks random instances: no link is over capacity,
// no flow passes the flow that bounds it, and every flow is held back by
// something: a full link on which no flow is faster, its bound, or a pin.
func TestMaxMinProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	var m maxMin
	for iter := range 2000 {
		caps, flows := randomInstance(rng)
		rates := make([]float64, len(flows))
		m.solve(caps, flows, rates)
		if err := checkMaxMin(caps, flows, rates); err != nil {
			t.Fatalf("instance %d: %v\ncaps %v\nflows %+v\nrates %v", iter, err, caps, flows, rates)
		}
	}
}

func randomInstance(rng *rand.Rand) ([]float64, []flowSpec) {
	caps := make([]float64, 1+rng.IntN(20))
	for i := range caps {
		caps[i] = 1 + rng.Float64()*99
		if rng.IntN(10) == 0 {
			caps[i] = math.Inf(1)
		}
	}
	flows := make([]flowSpec, 1+rng.IntN(60))
	for i := range flows {
		f := spec(int32(rng.IntN(len(caps))), -1, -1)
		if rng.IntN(2) == 0 {
			f.links[1] = int32(rng.IntN(len(caps)))
			if f.links[1] == f.links[0] {
				f.links[1] = -1
			}
		}
		// Every flow crosses a finite link, as in the engine (VM links are
		// finite).
		if math.IsInf(caps[f.links[0]], 1) {
			caps[f.links[0]] = 1 + rng.Float64()*99
		}
		if i > 0 && rng.IntN(3) == 0 {
			f.capBy = int32(rng.IntN(i))
		}
		f.zero = rng.IntN(10) == 0
		flows[i] = f
	}
	return caps, flows
}

func checkMaxMin(caps []float64, flows []flowSpec, rates []float64) error {
	const tol = 1e-9
	load := make([]float64, len(caps))
	top := make([]float64, len(caps))
	for i, f := range flows {
		r := rates[i]
		if r < 0 || math.IsInf(r, 0) || math.IsNaN(r) {
			return fmt.Errorf("flow %d has rate %v", i, r)
		}
		if f.zero && r != 0 {
			return fmt.Errorf("pinned flow %d has rate %v", i, r)
		}
		if f.capBy >= 0 && r > rates[f.capBy]*(1+tol)+tol {
			return fmt.Errorf("flow %d at %v passes flow %d at %v", i, r, f.capBy, rates[f.capBy])
		}
		for _, l := range f.links {
			if l >= 0 {
				load[l] += r
				top[l] = math.Max(top[l], r)
			}
		}
	}
	for l := range caps {
		if load[l] > caps[l]*(1+tol) {
			return fmt.Errorf("link %d carries %v over its capacity %v", l, load[l], caps[l])
		}
	}
	for i, f := range flows {
		r := rates[i]
		if f.zero || f.capBy >= 0 && r >= rates[f.capBy]*(1-tol) {
			continue
		}
		held := false
		for _, l := range f.links {
			if l >= 0 && load[l] >= caps[l]*(1-tol) && r >= top[l]*(1-tol) {
				held = true
			}
		}
		if !held {
			return fmt.Errorf("flow %d at %v could go faster: no full link where it is the fastest, no binding bound", i, r)
		}
	}
	return nil
}

func BenchmarkMaxMin(b *testing.B) {
	for _, n := range []int{1_000, 100_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			// A tree's flows: n VMs, each fed by its parent (i-1)/2.
			caps := make([]float64, 2*n+1)
			for i := range caps {
				caps[i] = 125e6
			}
			flows := make([]flowSpec, n)
			for i := range flows {
				src := int32(2 * n) // the registry
				if i > 0 {
					src = int32(2 * ((i - 1) / 2))
				}
				flows[i] = spec(src, int32(2*i+1), -1)
				if i > 0 && i%3 == 0 {
					flows[i].capBy = int32((i - 1) / 2)
				}
			}
			rates := make([]float64, n)
			var m maxMin
			b.ResetTimer()
			for range b.N {
				m.solve(caps, flows, rates)
			}
		})
	}
}
