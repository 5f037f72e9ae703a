package sim

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// ReplayConfig describes a trace replay. Config.VMs is the pool size and
// Config.FunctionsPerVM the per-VM function cap; Containers and Functions
// are taken from the trace.
type ReplayConfig struct {
	Config
	// IdleTimeout is how long an instance stays warm without work before
	// it leaves its tree; default 15 minutes, as in the paper.
	IdleTimeout time.Duration `json:"idle_timeout"`
	// ScaleFactor multiplies every invocation count; default 1.
	ScaleFactor float64 `json:"scale_factor"`
	// Minutes limits the replay to the trace's first minutes; 0 for all.
	Minutes int `json:"minutes"`
	// Minute is how long one minute of the trace lasts in the replay;
	// default a minute. A shorter one replays the trace sped up, as
	// faasnet bench --trace --speedup does, while the network keeps its
	// speed. IdleTimeout stays in trace time.
	Minute time.Duration `json:"minute,omitempty"`
}

// ReplayResult is one strategy's replay of a trace.
type ReplayResult struct {
	Strategy    Strategy `json:"strategy"`
	Stripes     int      `json:"stripes"`
	BlockSize   int64    `json:"block_size"`
	Functions   int      `json:"functions"`
	Minutes     int      `json:"minutes"`
	ScaleFactor float64  `json:"scale_factor"`
	// ReadChain and ReadLatency (seconds) are the Config's, as in Result.
	ReadChain   int     `json:"read_chain"`
	ReadLatency float64 `json:"read_latency_s"`
	// ColdStarts is the number of instances started; Rejected adds up,
	// minute by minute, the instances the pool could not hold (every VM at
	// its cap), so a shortfall that lasts counts every minute.
	ColdStarts int `json:"cold_starts"`
	Rejected   int `json:"rejected"`
	// Warm counts the instances of the first minute, which the replay
	// takes as already running: a trace cut out of a day starts warm.
	Warm int `json:"warm"`
	// Latency describes cold-start provisioning latency: from the minute
	// the instance was asked for to its container's start. Latencies
	// lists them, sorted.
	Latency   Summary   `json:"latency"`
	Latencies []float64 `json:"latencies_s"`
	// Unfinished counts instances reclaimed before they started.
	Unfinished     int   `json:"unfinished"`
	RegistryEgress int64 `json:"registry_egress_bytes"`
	// PeakTree is the most VMs any one function's tree held; PeakHeight
	// its most height; PeakInstances the most instances at once over all
	// functions; PeakBurst the most instances asked for in one minute.
	PeakTree      int            `json:"peak_tree"`
	PeakHeight    int            `json:"peak_height"`
	PeakInstances int            `json:"peak_instances"`
	PeakBurst     int            `json:"peak_burst"`
	Height        []HeightSample `json:"tree_height"`
	Steps         int            `json:"steps"`
	Wall          float64        `json:"wall_s"`
}

// instance is one VM serving one function.
type instance struct {
	vm        int32
	lastUsed  int   // the last minute it had work
	requested int64 // ns
	ready     bool
}

// Replay replays tr with strategy s. At every minute each function needs
// Instances(m) instances; it reuses its most recently used warm instances,
// reclaims those idle for IdleTimeout (removing them from its tree, as the
// manager's release does), and scales out for the rest (except in the
// first minute, whose instances are taken as already running): the manager's
// placement picks the VMs from the pool, they join the tree and fetch the
// image, and the time until their container starts is a cold start's
// provisioning latency. Every function has its own image of
// Config.ImageSize bytes. The network runs between the minutes.
func Replay(tr *Trace, rc ReplayConfig, s Strategy) (*ReplayResult, error) {
	wall := time.Now()
	if rc.IdleTimeout == 0 {
		rc.IdleTimeout = 15 * time.Minute
	}
	if rc.ScaleFactor == 0 {
		rc.ScaleFactor = 1
	}
	if rc.Minute == 0 {
		rc.Minute = time.Minute
	}
	if rc.Minute < 0 || rc.IdleTimeout < 0 || rc.ScaleFactor < 0 || math.IsInf(rc.ScaleFactor, 0) || math.IsNaN(rc.ScaleFactor) || rc.Minutes < 0 {
		return nil, fmt.Errorf("idle timeout, scale factor and minutes must not be negative")
	}
	if len(tr.Functions) == 0 {
		return nil, fmt.Errorf("the trace has no function with a duration")
	}
	minutes := tr.Minutes
	if rc.Minutes > 0 {
		minutes = min(minutes, rc.Minutes)
	}
	cfg := rc.Config
	cfg.Functions = len(tr.Functions)
	cfg.Containers = 1
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	res := int64(cfg.Resolution)
	if res == 0 {
		// A lone cold start is the common case: resolve it finely.
		one := cfg
		one.Containers, one.Functions = 1, 1
		res = autoResolution(lowerBound(one, []int{1}, cfg.need(s)))
	}
	w, err := newWorld(cfg, s, len(tr.Functions), res)
	if err != nil {
		return nil, err
	}
	r := &ReplayResult{Strategy: s, Stripes: cfg.Stripes, BlockSize: cfg.BlockSize, Functions: len(tr.Functions), Minutes: minutes, ScaleFactor: rc.ScaleFactor,
		ReadChain: cfg.ReadChain, ReadLatency: cfg.ReadLatency.Seconds()}
	insts := make([][]*instance, len(tr.Functions))
	need := make([]int, len(tr.Functions))
	for m := range minutes {
		now := int64(m) * int64(rc.Minute)
		w.e.run(now)
		// Work first goes to the most recently used instances, so that
		// the others age out.
		for fn := range tr.Functions {
			need[fn] = tr.Functions[fn].Instances(m, rc.ScaleFactor)
			is := insts[fn]
			slices.SortStableFunc(is, func(a, b *instance) int { return b.lastUsed - a.lastUsed })
			for _, in := range is[:min(need[fn], len(is))] {
				in.lastUsed = m
			}
		}
		// Reclaim before scaling out, so that freed slots can be used.
		for fn := range tr.Functions {
			keep := insts[fn][:0]
			for _, in := range insts[fn] {
				idle := time.Duration(m-in.lastUsed-1) * time.Minute
				if in.lastUsed < m && idle >= rc.IdleTimeout {
					if !in.ready {
						r.Unfinished++
					}
					if err := w.scaleIn(int32(fn), in.vm); err != nil {
						return nil, err
					}
					continue
				}
				keep = append(keep, in)
			}
			insts[fn] = keep
		}
		burst, total := 0, 0
		for fn := range tr.Functions {
			if deficit := need[fn] - len(insts[fn]); deficit > 0 {
				added, err := r.scaleOut(w, fn, deficit, m, now, &insts[fn])
				if err != nil {
					return nil, err
				}
				burst += added
				r.Rejected += deficit - added
				r.PeakTree = max(r.PeakTree, w.cp.size(int32(fn)))
			}
			total += len(insts[fn])
		}
		r.PeakBurst = max(r.PeakBurst, burst)
		r.PeakInstances = max(r.PeakInstances, total)
		h := w.cp.height()
		r.PeakHeight = max(r.PeakHeight, h)
		if len(r.Height) == 0 || r.Height[len(r.Height)-1].Height != h {
			r.Height = append(r.Height, HeightSample{Time: float64(now) / 1e9, Height: h})
		}
	}
	// Let the last fetches finish; a stalled model shows as Unfinished.
	end := int64(minutes)*int64(rc.Minute) + int64(time.Hour)
	for w.e.step(end) && len(r.Latencies) < r.ColdStarts-r.Unfinished {
	}
	r.Unfinished = r.ColdStarts - len(r.Latencies)
	r.Latency = summarize(r.Latencies)
	r.RegistryEgress = int64(math.Round(w.e.registryOut))
	r.Steps = w.e.steps
	r.Wall = time.Since(wall).Seconds()
	return r, nil
}

// scaleOut adds count instances of fn, asked for at minute m (time now);
// in minute 0 they start warm.
func (r *ReplayResult) scaleOut(w *world, fn, count, m int, now int64, insts *[]*instance) (int, error) {
	byVM := map[int32]*instance{}
	warm := m == 0
	vms, err := w.scaleOut(int32(fn), count, warm, func(vm int32) {
		in := byVM[vm]
		if in == nil || in.ready {
			return
		}
		in.ready = true
		r.Latencies = append(r.Latencies, float64(w.e.now-in.requested)/1e9)
	})
	if err != nil {
		return 0, err
	}
	for _, vm := range vms {
		in := &instance{vm: vm, lastUsed: m, requested: now, ready: warm}
		byVM[vm] = in
		*insts = append(*insts, in)
	}
	if warm {
		r.Warm += len(vms)
	} else {
		r.ColdStarts += len(vms)
	}
	return len(vms), nil
}
