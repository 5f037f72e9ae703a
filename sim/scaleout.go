package sim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/faasnet/faasnet/bound"
)

// world is one simulated cluster: the network, the control plane and a data
// plane.
type world struct {
	cfg   Config
	strat Strategy
	e     *engine
	cp    *controlPlane
	pl    plane
	start int64 // ns: StartTime
	reads int64 // ns: a start's chain of reads beyond their bytes
}

func newWorld(cfg Config, s Strategy, functions int, res int64) (*world, error) {
	if !s.valid() {
		return nil, fmt.Errorf("unknown strategy %q", s)
	}
	e := newEngine(netParams{
		vms:      cfg.VMs,
		up:       float64(cfg.Bandwidth),
		down:     float64(cfg.Bandwidth),
		registry: cfg.registryRate(),
		block:    float64(cfg.BlockSize),
		latency:  int64(cfg.Latency),
		res:      res,
	})
	cp := newControlPlane(cfg.VMs, functions, cfg.FunctionsPerVM, cfg.Stripes, cfg.StripeFanout == 2)
	w := &world{cfg: cfg, strat: s, e: e, cp: cp, start: int64(cfg.StartTime), reads: cfg.readDelay(s)}
	sizes := layerSizes(cfg, cfg.need(s))
	switch s {
	case FaaSNet, FaaSNetLazy:
		w.pl = newTreePlane(e, functions, sizes, cfg.Stripes)
	case Registry, OnDemand:
		w.pl = &directPlane{*newTreePlane(e, functions, sizes, 1)}
	case Swarm:
		rng := rand.New(rand.NewPCG(cfg.Seed, 0x5eed))
		w.pl = newSwarmPlane(e, cfg.Swarm, rng, functions, sizes, float64(cfg.PieceSize))
	}
	return w, nil
}

// scaleOut adds up to count VMs to fn's tree, picked and inserted as the
// manager does, and starts their fetches. ready runs when a VM's container
// has started. With cached, the VMs hold the image already and ready does
// not run. It returns the VMs added.
func (w *world) scaleOut(fn int32, count int, cached bool, ready func(vm int32)) ([]int32, error) {
	vms := w.cp.choose(fn, count)
	for _, vm := range vms {
		ch, err := w.cp.insert(fn, vm)
		if err != nil {
			return nil, err
		}
		// Join first: with stripes, VMs may move under the newcomer.
		w.pl.join(fn, vm, w.cp.parents(fn, vm), cached, func() {
			w.e.after(w.start+w.reads, func() { ready(vm) })
		})
		for _, mv := range ch.Moved {
			if mv.VM != w.cp.names[vm] {
				w.pl.move(fn, w.cp.index[mv.VM], mv.Stripe, w.cp.parent(fn, w.cp.index[mv.VM], mv.Stripe))
			}
		}
	}
	return vms, nil
}

// scaleIn removes vm from fn's tree and tells the data plane.
func (w *world) scaleIn(fn, vm int32) error {
	ch, err := w.cp.remove(fn, vm)
	if err != nil {
		return err
	}
	w.pl.leave(fn, vm)
	for _, mv := range ch.Moved {
		w.pl.move(fn, w.cp.index[mv.VM], mv.Stripe, w.cp.parent(fn, w.cp.index[mv.VM], mv.Stripe))
	}
	return nil
}

// Summary describes a distribution of durations, in seconds.
type Summary struct {
	N    int     `json:"n"`
	Min  float64 `json:"min_s"`
	Mean float64 `json:"mean_s"`
	P50  float64 `json:"p50_s"`
	P90  float64 `json:"p90_s"`
	P99  float64 `json:"p99_s"`
	Max  float64 `json:"max_s"`
}

// summarize sorts xs and describes it (nearest-rank percentiles).
func summarize(xs []float64) Summary {
	slices.Sort(xs)
	s := Summary{N: len(xs)}
	if len(xs) == 0 {
		return s
	}
	sum := 0.0
	for _, x := range xs {
		sum += x
	}
	rank := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(xs)))) - 1
		return xs[max(0, min(i, len(xs)-1))]
	}
	s.Min, s.Max, s.Mean = xs[0], xs[len(xs)-1], sum/float64(len(xs))
	s.P50, s.P90, s.P99 = rank(0.50), rank(0.90), rank(0.99)
	return s
}

// VMTraffic is one VM's bytes sent and received.
type VMTraffic struct {
	VM       string `json:"vm"`
	Sent     int64  `json:"sent_bytes"`
	Received int64  `json:"received_bytes"`
}

// HeightSample is the height of the highest tree at a time.
type HeightSample struct {
	Time   float64 `json:"t_s"`
	Height int     `json:"height"`
}

// Result is one strategy's scale-out.
type Result struct {
	Strategy   Strategy `json:"strategy"`
	VMs        int      `json:"vms"`
	Containers int      `json:"containers"`
	Functions  int      `json:"functions"`
	// Stripes is the number of stripe trees per function (faasnet
	// strategies; the others ignore them) and StripeFanout their fan-out;
	// BlockSize the bytes forwarded at once down a tree.
	Stripes      int   `json:"stripes"`
	StripeFanout int   `json:"stripe_fanout"`
	BlockSize    int64 `json:"block_size"`
	// ReadChain and ReadLatency (seconds) are the Config's: a lazy start
	// waited ReadChain round trips of ReadLatency beyond its bytes.
	ReadChain   int     `json:"read_chain"`
	ReadLatency float64 `json:"read_latency_s"`
	// MaxVMUpload is the most bytes any VM sent, and MaxUploadRatio the
	// highest ratio of a VM's bytes sent to its bytes received.
	MaxVMUpload    int64   `json:"max_vm_upload_bytes"`
	MaxUploadRatio float64 `json:"max_upload_ratio"`
	// Makespan is when the last container started, in seconds.
	Makespan float64 `json:"makespan_s"`
	// LowerBound is the least makespan any strategy moving the same bytes
	// could reach (see lowerBound); Efficiency is LowerBound/Makespan.
	LowerBound float64 `json:"lower_bound_s"`
	Efficiency float64 `json:"efficiency"`
	// Ready describes when containers started; ReadyTimes lists them,
	// sorted.
	Ready      Summary   `json:"ready"`
	ReadyTimes []float64 `json:"ready_times_s"`
	// RegistryEgress is the bytes the registry sent.
	RegistryEgress int64 `json:"registry_egress_bytes"`
	// Wasted is the bytes VMs received and did not keep: a swarm's
	// endgame duplicates and pieces cut off by closed connections.
	Wasted int64 `json:"wasted_bytes"`
	// Busiest is the VM that moved the most bytes (sent plus received).
	Busiest VMTraffic `json:"busiest_vm"`
	// PeakUpload is the highest upload rate of any VM, bytes/s.
	PeakUpload float64 `json:"peak_upload_bytes_per_s"`
	// Height is the height of the highest tree over time.
	Height []HeightSample `json:"tree_height"`
	// Resolution is the event time step used, in seconds; Steps the rate
	// computations; Wall the real time the simulation took.
	Resolution float64 `json:"resolution_s"`
	Steps      int     `json:"steps"`
	Wall       float64 `json:"wall_s"`
}

// lowerBound is the scenario's bound (package bound) for containers that
// each need bytes, perVM[i] of them on VM i; a container also waits one
// request latency and its start time.
func lowerBound(cfg Config, perVM []int, bytes float64) float64 {
	b := bound.Delivery{
		Bytes: bytes, VMs: cfg.VMs, Copies: cfg.Containers, MostPerVM: slices.Max(perVM), Distinct: cfg.Functions,
		Down: float64(cfg.Bandwidth), Up: float64(cfg.Bandwidth), Registry: float64(cfg.RegistryBandwidth),
	}
	return b.Seconds() + cfg.Latency.Seconds() + cfg.StartTime.Seconds()
}

// ScaleOut simulates cfg.Containers containers of cfg.Functions functions
// started at once on cfg.VMs VMs with strategy s. Every function is scaled
// out at time 0, one after the other, each to its share of the containers,
// with the VMs the manager would pick (placement.Choose) inserted into its
// tree as the manager does.
func ScaleOut(cfg Config, s Strategy) (*Result, error) {
	wall := time.Now()
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	counts := make([]int, cfg.Functions)
	for i := range counts {
		counts[i] = cfg.Containers / cfg.Functions
		if i < cfg.Containers%cfg.Functions {
			counts[i]++
		}
	}
	// The bound needs each VM's container count, which placement decides;
	// it is computed after placement and before the run picks a resolution.
	res := int64(cfg.Resolution)
	w, err := newWorld(cfg, s, cfg.Functions, max(res, 1))
	if err != nil {
		return nil, err
	}
	var ready []float64
	onReady := func(int32) { ready = append(ready, float64(w.e.now)/1e9) }
	for fn, n := range counts {
		vms, err := w.scaleOut(int32(fn), n, false, onReady)
		if err != nil {
			return nil, err
		}
		if len(vms) < n {
			return nil, fmt.Errorf("function %d: only %d of %d VMs can take it (capacity %d functions per VM)", fn, len(vms), n, cfg.FunctionsPerVM)
		}
	}
	perVM := make([]int, cfg.VMs)
	for i := range perVM {
		perVM[i] = w.cp.load(int32(i))
	}
	bound := lowerBound(cfg, perVM, cfg.need(s))
	if res == 0 {
		w.e.p.res = autoResolution(bound)
	}
	// Give up long after any sane strategy is done: only a model bug can
	// leave containers waiting forever.
	limit := int64(math.Max(1e4*bound, 3600) * 1e9)
	for len(ready) < cfg.Containers && w.e.step(limit) {
	}
	if len(ready) < cfg.Containers {
		return nil, fmt.Errorf("%s: simulation stalled at %.3f s with %d of %d containers started", s, float64(w.e.now)/1e9, len(ready), cfg.Containers)
	}
	r := &Result{
		Strategy: s, VMs: cfg.VMs, Containers: cfg.Containers, Functions: cfg.Functions,
		Stripes: cfg.Stripes, StripeFanout: cfg.stripeFanout(), BlockSize: cfg.BlockSize,
		ReadChain: cfg.ReadChain, ReadLatency: cfg.ReadLatency.Seconds(),
		LowerBound:     bound,
		RegistryEgress: int64(math.Round(w.e.registryOut)),
		Height:         []HeightSample{{0, w.cp.height()}},
		Resolution:     float64(w.e.p.res) / 1e9,
		Steps:          w.e.steps,
	}
	r.Ready = summarize(ready)
	r.ReadyTimes = ready
	r.Makespan = r.Ready.Max
	r.Efficiency = bound / r.Makespan
	r.Busiest, r.PeakUpload = busiest(w)
	for i, sent := range w.e.sent {
		r.MaxVMUpload = max(r.MaxVMUpload, int64(math.Round(sent)))
		if w.e.recv[i] > 0 {
			r.MaxUploadRatio = math.Max(r.MaxUploadRatio, sent/w.e.recv[i])
		}
	}
	wasted := 0.0
	for _, b := range w.e.waste {
		wasted += b
	}
	r.Wasted = int64(math.Round(wasted))
	r.Wall = time.Since(wall).Seconds()
	return r, nil
}

func busiest(w *world) (VMTraffic, float64) {
	var b VMTraffic
	best, peak := -1.0, 0.0
	for i := range w.e.sent {
		if t := w.e.sent[i] + w.e.recv[i]; t > best {
			best = t
			b = VMTraffic{VM: w.cp.names[i], Sent: int64(math.Round(w.e.sent[i])), Received: int64(math.Round(w.e.recv[i]))}
		}
		peak = math.Max(peak, w.e.peakUp[i])
	}
	return b, peak
}
