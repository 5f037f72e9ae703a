package sim

import (
	"math"
	"reflect"
	"testing"
	"time"
)

// exact returns a configuration whose event times are rounded to 1 ns only,
// so that results can be compared with closed forms.
func exact(vms int) Config {
	c := DefaultConfig()
	c.VMs = vms
	c.Resolution = time.Nanosecond
	c.Latency = 0
	return c
}

// tolerance is how far a makespan may be from its closed form: every
// event time is rounded up by less than one resolution step, and every step
// can delay the rest of the run by that much; float64 rounding adds a
// relative 1e-9.
func tolerance(r *Result, want float64) float64 {
	return float64(r.Steps+r.Containers)*r.Resolution + 1e-9*want
}

// TestTreeMakespan checks the tree against the model's closed form. In a
// tree, a VM with two children splits its uplink between them, so from
// depth 1 on data flows at bw/2, and each hop adds one block time at that
// rate (2B/bw) plus one latency: a child's first block can leave the parent
// only once it has fully arrived. The root gets the image at bw, and the
// deepest VM of a tree of 2^k VMs is an only child, which catches up with its
// parent and finishes one block time at bw after it. So:
//
//	2^k VMs:   2S/bw + (2k-2)·B/bw + k·L
//	2^k-1 VMs: 2S/bw + (2k-3)·B/bw + k·L   (height k-1, every leaf has a sibling)
func TestTreeMakespan(t *testing.T) {
	for _, tt := range []struct {
		k       int
		full    bool // 2^k-1 VMs instead of 2^k
		latency time.Duration
	}{
		{k: 2}, {k: 3}, {k: 5}, {k: 7}, {k: 10},
		{k: 3, full: true}, {k: 7, full: true},
		{k: 4, latency: time.Millisecond}, {k: 7, latency: 2 * time.Millisecond},
		{k: 6, full: true, latency: time.Millisecond},
	} {
		n := 1 << tt.k
		if tt.full {
			n--
		}
		c := exact(n)
		c.Latency = tt.latency
		c.Stripes = 1
		r, err := ScaleOut(c, FaaSNet)
		if err != nil {
			t.Fatal(err)
		}
		S, B, bw, L := float64(c.ImageSize), float64(c.BlockSize), float64(c.Bandwidth), tt.latency.Seconds()
		hops := float64(2*tt.k - 2)
		if tt.full {
			hops = float64(2*tt.k - 3)
		}
		want := 2*S/bw + hops*B/bw + float64(tt.k)*L
		if got := r.Makespan; math.Abs(got-want) > tolerance(r, want) {
			t.Errorf("%d VMs, latency %v: makespan %.9f s, want %.9f s (±%.1g)", n, tt.latency, got, want, tolerance(r, want))
		}
		if h := r.Height[0].Height; h != int(math.Floor(math.Log2(float64(n)))) {
			t.Errorf("%d VMs: height %d", n, h)
		}
		if r.RegistryEgress != c.ImageSize {
			t.Errorf("%d VMs: registry sent %d bytes, want one image (%d)", n, r.RegistryEgress, c.ImageSize)
		}
	}
}

// TestRegistryMakespan checks the registry strategies: every VM gets an equal
// share of the registry, or its own downlink if that is smaller.
func TestRegistryMakespan(t *testing.T) {
	for _, tt := range []struct {
		name      string
		vms       int
		registry  int64
		strategy  Strategy
		regBound  bool
		readShare float64
	}{
		{"registry-bound", 128, DefaultRegistryBandwidth, Registry, true, 1},
		{"registry-bound, 64 VMs at 4x a VM", 64, 4 * DefaultBandwidth, Registry, true, 1},
		{"VM-bound", 4, DefaultRegistryBandwidth, Registry, false, 1},
		{"on demand", 128, DefaultRegistryBandwidth, OnDemand, true, DefaultReadFraction},
		{"unlimited registry", 16, 0, Registry, false, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := exact(tt.vms)
			c.RegistryBandwidth = tt.registry
			c.Latency = time.Millisecond
			r, err := ScaleOut(c, tt.strategy)
			if err != nil {
				t.Fatal(err)
			}
			bytes := c.need(tt.strategy)
			want := bytes / float64(c.Bandwidth)
			if tt.regBound {
				want = float64(tt.vms) * bytes / float64(tt.registry)
			}
			want += c.Latency.Seconds()
			if math.Abs(r.Makespan-want) > tolerance(r, want) {
				t.Errorf("makespan %.9f s, want %.9f s", r.Makespan, want)
			}
			if r.Ready.Min != r.Makespan {
				t.Errorf("equal shares should finish together: first %v, last %v", r.Ready.Min, r.Makespan)
			}
			if got, want := r.RegistryEgress, int64(float64(tt.vms)*bytes); got != want {
				t.Errorf("registry sent %d bytes, want %d", got, want)
			}
		})
	}
}

// TestStrategiesInvariants runs every strategy on a few shapes and checks
// what holds for all: every container starts, no sooner than the lower
// bound, the bytes add up, and lazy strategies move only the read share.
func TestStrategiesInvariants(t *testing.T) {
	shapes := []Config{exact(1), exact(2), exact(33), func() Config {
		c := DefaultConfig()
		c.VMs, c.Containers, c.ImageSize = 40, 100, 50_000_000
		return c
	}()}
	for _, c := range shapes {
		for _, s := range Strategies {
			r, err := ScaleOut(c, s)
			if err != nil {
				t.Fatalf("%s on %d VMs: %v", s, c.VMs, err)
			}
			n, _ := c.normalize()
			if r.Ready.N != n.Containers || len(r.ReadyTimes) != n.Containers {
				t.Errorf("%s on %d VMs: %d containers started, want %d", s, c.VMs, r.Ready.N, n.Containers)
			}
			if r.Makespan < r.LowerBound-tolerance(r, r.LowerBound) {
				t.Errorf("%s on %d VMs: makespan %v below the lower bound %v", s, c.VMs, r.Makespan, r.LowerBound)
			}
			if r.RegistryEgress < int64(n.need(s)*float64(n.Functions)) {
				t.Errorf("%s on %d VMs: registry sent %d bytes, less than one copy per function", s, c.VMs, r.RegistryEgress)
			}
		}
	}
}

// TestBytesAddUp checks conservation in the engine: every byte received
// was sent by a VM or by the registry, and every VM received what it needs
// (and what a swarm received twice), with one layer and with three.
func TestBytesAddUp(t *testing.T) {
	for k := range 2 * len(Strategies) {
		s, layers := Strategies[k/2], 1+2*(k%2)
		c := DefaultConfig()
		c.VMs, c.Containers, c.ImageSize, c.Layers = 30, 70, 40_000_000, layers
		c, _ = c.normalize()
		w, err := newWorld(c, s, c.Functions, 1000)
		if err != nil {
			t.Fatal(err)
		}
		ready := 0
		for fn := range c.Functions {
			n := c.Containers / c.Functions
			if fn < c.Containers%c.Functions {
				n++
			}
			if _, err := w.scaleOut(int32(fn), n, false, func(int32) { ready++ }); err != nil {
				t.Fatal(err)
			}
		}
		w.e.run(math.MaxInt64)
		if ready != c.Containers {
			t.Fatalf("%s: %d of %d started", s, ready, c.Containers)
		}
		sent, recv := w.e.registryOut, 0.0
		for v := range c.VMs {
			sent += w.e.sent[v]
			recv += w.e.recv[v]
			// Only a swarm's endgame receives a piece twice.
			want := float64(w.cp.load(int32(v))) * c.need(s)
			if got := w.e.recv[v] - w.e.waste[v]; math.Abs(got-want) > 1 || s != Swarm && w.e.waste[v] != 0 {
				t.Errorf("%s: VM %d received %v bytes (%v twice), want %v", s, v, w.e.recv[v], w.e.waste[v], want)
			}
		}
		if math.Abs(sent-recv) > 1 {
			t.Errorf("%s: %v bytes sent, %v received", s, sent, recv)
		}
	}
}

func TestDeterminism(t *testing.T) {
	c := DefaultConfig()
	c.VMs, c.ImageSize = 48, 100_000_000
	for _, s := range Strategies {
		a, err := ScaleOut(c, s)
		if err != nil {
			t.Fatal(err)
		}
		b, err := ScaleOut(c, s)
		if err != nil {
			t.Fatal(err)
		}
		a.Wall, b.Wall = 0, 0
		if !reflect.DeepEqual(a, b) {
			t.Errorf("%s: two runs with seed %d differ", s, c.Seed)
		}
	}
	c.Seed = 2
	other, err := ScaleOut(c, Swarm)
	if err != nil {
		t.Fatal(err)
	}
	c.Seed = 1
	one, _ := ScaleOut(c, Swarm)
	if reflect.DeepEqual(one.ReadyTimes, other.ReadyTimes) {
		t.Errorf("swarm: seeds 1 and 2 gave the same start times; is the seed used?")
	}
}

// TestPaperShapes checks the orderings the paper reports, at its parameters:
// trees beat the registry by an order of magnitude at 128 VMs, and the lazy
// tree is the fastest.
func TestPaperShapes(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the paper's 128-VM experiment")
	}
	ms := map[Strategy]float64{}
	for _, s := range Strategies {
		r, err := ScaleOut(DefaultConfig(), s)
		if err != nil {
			t.Fatal(err)
		}
		ms[s] = r.Makespan
	}
	if ms[Registry] < 5*ms[FaaSNet] {
		t.Errorf("registry %.1fs is not much slower than faasnet %.1fs", ms[Registry], ms[FaaSNet])
	}
	for _, s := range Strategies {
		if s != FaaSNetLazy && ms[s] <= ms[FaaSNetLazy] {
			t.Errorf("%s (%.1fs) is not slower than faasnet-lazy (%.1fs)", s, ms[s], ms[FaaSNetLazy])
		}
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tt := range []struct {
		name string
		edit func(*Config)
	}{
		{"no VMs", func(c *Config) { c.VMs = 0 }},
		{"no bandwidth", func(c *Config) { c.Bandwidth = 0 }},
		{"read fraction", func(c *Config) { c.ReadFraction = 1.5 }},
		{"too many per function", func(c *Config) { c.Containers, c.Functions = 300, 1 }},
		{"over capacity", func(c *Config) { c.Containers, c.FunctionsPerVM = 300, 2 }},
		{"negative latency", func(c *Config) { c.Latency = -time.Second }},
	} {
		c := DefaultConfig()
		tt.edit(&c)
		if _, err := ScaleOut(c, FaaSNet); err == nil {
			t.Errorf("%s: no error", tt.name)
		}
	}
	if _, err := ScaleOut(DefaultConfig(), "bittorrent"); err == nil {
		t.Error("unknown strategy: no error")
	}
}

func TestParseStrategies(t *testing.T) {
	got, err := ParseStrategies("swarm, faasnet,swarm")
	if err != nil || !reflect.DeepEqual(got, []Strategy{Swarm, FaaSNet}) {
		t.Errorf("got %v, %v", got, err)
	}
	if all, _ := ParseStrategies("all"); len(all) != len(Strategies) {
		t.Errorf("all = %v", all)
	}
	if _, err := ParseStrategies("faasnet,kraken"); err == nil {
		t.Error("unknown name accepted")
	}
}

func TestAutoResolution(t *testing.T) {
	for _, tt := range []struct {
		bound float64
		want  int64
	}{{12, 1e6}, {6, 5e5}, {0.9, 5e4}, {60, 5e6}, {1e-6, 1e3}, {25, 2e6}} {
		if got := autoResolution(tt.bound); got != tt.want {
			t.Errorf("autoResolution(%v) = %d, want %d", tt.bound, got, tt.want)
		}
	}
}

func BenchmarkScaleOut(b *testing.B) {
	for _, s := range []Strategy{FaaSNet, Swarm} {
		b.Run(string(s), func(b *testing.B) {
			c := DefaultConfig()
			for range b.N {
				if _, err := ScaleOut(c, s); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestLayers checks how an image of several layers moves: its layers are
// sized as the bench's images are and add up to what a VM needs, a
// registry-bound pull takes as long as with one layer, and a tree, whose
// layers each wait a block at their share of the rate at every hop, is
// slower than with one layer, by at most a block time per layer per hop.
func TestLayers(t *testing.T) {
	c := DefaultConfig()
	c.ImageSize, c.Layers = 100_000_000, 5
	sizes := layerSizes(c, c.need(FaaSNet))
	want := []float64{50e6, 20e6, 15e6, 10e6, 5e6} // imagegen's documented split
	for i := range want {
		if math.Abs(sizes[i]-want[i]) > 1 {
			t.Fatalf("layer sizes %v, want %v", sizes, want)
		}
	}
	lazy := layerSizes(c, c.need(FaaSNetLazy))
	sum := 0.0
	for _, s := range lazy {
		sum += s
	}
	if math.Abs(sum-c.need(FaaSNetLazy)) > 1e-6 || lazy[0] <= lazy[4] {
		t.Errorf("lazy layers %v do not split %v", lazy, c.need(FaaSNetLazy))
	}

	for _, s := range []Strategy{Registry, FaaSNet} {
		one := exact(16)
		one.ImageSize = c.ImageSize
		layered := one
		layered.Layers = 5
		a, err := ScaleOut(one, s)
		if err != nil {
			t.Fatal(err)
		}
		b, err := ScaleOut(layered, s)
		if err != nil {
			t.Fatal(err)
		}
		if a.RegistryEgress != b.RegistryEgress {
			t.Errorf("%s: registry sent %d bytes with one layer, %d with five", s, a.RegistryEgress, b.RegistryEgress)
		}
		switch s {
		case Registry:
			if math.Abs(a.Makespan-b.Makespan) > tolerance(b, b.Makespan) {
				t.Errorf("registry: makespan %v with one layer, %v with five", a.Makespan, b.Makespan)
			}
		case FaaSNet:
			hops := float64(lastHeight(a.Height))
			most := a.Makespan + 5*hops*2*float64(one.BlockSize)/float64(one.Bandwidth)
			if b.Makespan < a.Makespan || b.Makespan > most {
				t.Errorf("faasnet: makespan %v with five layers, want between %v (one layer) and %v", b.Makespan, a.Makespan, most)
			}
		}
	}
}
