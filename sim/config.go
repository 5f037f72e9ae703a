package sim

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/faasnet/faasnet/ftree"
	"github.com/faasnet/faasnet/imagegen"
)

// A Strategy is how VMs get a function's image.
type Strategy string

// The strategies, as faasnet bench names them.
const (
	// FaaSNet streams the whole image down the function tree.
	FaaSNet Strategy = "faasnet"
	// FaaSNetLazy streams down the tree only the part of the image read
	// before the container starts (Config.ReadFraction), as FaaSNet's
	// on-demand block fetching does.
	FaaSNetLazy Strategy = "faasnet-lazy"
	// Registry has every VM pull the whole image from the registry.
	Registry Strategy = "registry"
	// Swarm is a Kraken-like P2P swarm (see SwarmConfig).
	Swarm Strategy = "swarm"
	// OnDemand has every VM fetch from the registry only the part of the
	// image read before start.
	OnDemand Strategy = "ondemand"
)

// Strategies lists every strategy, in the order reports show them.
var Strategies = []Strategy{FaaSNet, FaaSNetLazy, Registry, Swarm, OnDemand}

// ParseStrategies parses a comma-separated list of strategy names; "all"
// means every strategy.
func ParseStrategies(s string) ([]Strategy, error) {
	if strings.TrimSpace(s) == "all" {
		return Strategies, nil
	}
	var out []Strategy
	seen := map[Strategy]bool{}
	for _, name := range strings.Split(s, ",") {
		st := Strategy(strings.TrimSpace(name))
		if !st.valid() {
			return nil, fmt.Errorf("unknown strategy %q (want some of %s)", name, joinStrategies(Strategies))
		}
		if !seen[st] {
			seen[st] = true
			out = append(out, st)
		}
	}
	return out, nil
}

func joinStrategies(ss []Strategy) string {
	names := make([]string, len(ss))
	for i, s := range ss {
		names[i] = string(s)
	}
	return strings.Join(names, ",")
}

func (s Strategy) valid() bool {
	for _, k := range Strategies {
		if s == k {
			return true
		}
	}
	return false
}

// lazy reports whether the strategy fetches only what is read before start.
func (s Strategy) lazy() bool { return s == FaaSNetLazy || s == OnDemand }

// The paper's 128-VM experiment (FaaSNet, USENIX ATC '21): a 758 MB image
// on VMs with 1 Gbps NICs. The registry's egress is not given; pulling the
// image to 128 VMs took 83.3 s, so the registry delivered at least
// 128 × 758 MB / 83.3 s = 1.165 GB/s, about 9.3 Gbps, which is the default.
const (
	DefaultImageSize         = 758_000_000
	DefaultBandwidth         = 1_000_000_000 / 8
	DefaultRegistryBandwidth = 9_300_000_000 / 8
	DefaultBlockSize         = 512 << 10
	// DefaultStripes is the stripe trees per function; see package sim's
	// doc for the measurement that chose it.
	DefaultStripes   = 2
	DefaultPieceSize = 4 << 20
	// DefaultReadFraction is the share of the image read before start:
	// the paper's on-demand fetching moved 83.9% less data than a full pull.
	DefaultReadFraction = 0.161
)

// Config describes a simulated cluster and what it is asked to do. Sizes are
// bytes, bandwidths bytes per second.
type Config struct {
	// VMs is the number of VMs (the pool).
	VMs int `json:"vms"`
	// Containers to start at once (ScaleOut); default VMs.
	Containers int `json:"containers"`
	// Functions the containers belong to, each with its own image and
	// tree; default ceil(Containers/VMs). Containers are spread evenly.
	Functions int `json:"functions"`
	// FunctionsPerVM caps how many functions a VM hosts; default 20, as
	// in the paper.
	FunctionsPerVM int `json:"functions_per_vm"`

	ImageSize int64 `json:"image_size"`
	// Layers is the number of layers the image is made of, sized as
	// package imagegen sizes the bench's images: the base layer half of
	// the image, the others sharing the rest with decreasing weights.
	// Every strategy moves them in parallel, each on its own (see plane).
	// Default 1.
	Layers            int   `json:"layers"`
	Bandwidth         int64 `json:"bandwidth"`          // each VM's up and down
	RegistryBandwidth int64 `json:"registry_bandwidth"` // 0: unlimited
	BlockSize         int64 `json:"block_size"`
	// Stripes is the number of stripe trees per function (see package
	// ftree's Striped): block i of each layer goes down stripe i mod k.
	// Default DefaultStripes; 1 is the paper's single binary tree.
	Stripes int `json:"stripes"`
	// StripeFanout is the stripe trees' fan-out: 0 for k (ftree.Striped,
	// every VM interior in at most one stripe), or 2 for one binary tree
	// per stripe placed like separate functions (FT-aware), which is
	// there to measure against.
	StripeFanout int   `json:"stripe_fanout"`
	PieceSize    int64 `json:"piece_size"` // swarm
	// ReadFraction of the image is needed before a container starts
	// (lazy strategies only).
	ReadFraction float64 `json:"read_fraction"`
	// ReadChain is how many of the reads a container makes before it
	// starts wait one for another and fetch (lazy strategies; see
	// cluster.FetchChain): each pays a ReadLatency that no bandwidth
	// overlaps, on top of the bytes, which the simulator moves as one
	// pipelined stream. A VM below a tree's root pays no more per read than
	// its root: its parent is a block ahead, not a read. 0 leaves a start
	// at the stream alone (a container reading ahead).
	ReadChain int `json:"read_chain"`
	// ReadLatency is one read's request round trip: the request reaching
	// the parent (or the registry) and the first byte back.
	ReadLatency time.Duration `json:"read_latency"`
	// Latency is one hop's latency: a request reaching its sender, a
	// block's first byte reaching the next VM down the tree.
	Latency time.Duration `json:"latency"`
	// StartTime is the time a container takes to start once its data is
	// there.
	StartTime time.Duration `json:"start_time"`
	// Resolution rounds event times up to a multiple of itself: coarser is
	// faster and later by at most one Resolution per event on a critical
	// path. Zero picks a ten-thousandth of the scenario's lower bound.
	Resolution time.Duration `json:"resolution"`
	// Seed drives every random choice (swarm peers and pieces).
	Seed  uint64      `json:"seed"`
	Swarm SwarmConfig `json:"swarm"`
}

// DefaultConfig returns the paper's 128-VM experiment.
func DefaultConfig() Config {
	return Config{
		VMs:               128,
		FunctionsPerVM:    20,
		ImageSize:         DefaultImageSize,
		Bandwidth:         DefaultBandwidth,
		RegistryBandwidth: DefaultRegistryBandwidth,
		BlockSize:         DefaultBlockSize,
		PieceSize:         DefaultPieceSize,
		ReadFraction:      DefaultReadFraction,
		Latency:           time.Millisecond,
		Seed:              1,
		Swarm:             DefaultSwarm(),
	}
}

// normalize fills derived defaults and checks c.
func (c Config) normalize() (Config, error) {
	if c.VMs < 1 {
		return c, fmt.Errorf("vms must be at least 1, not %d", c.VMs)
	}
	if c.Containers == 0 {
		c.Containers = c.VMs
	}
	if c.FunctionsPerVM == 0 {
		c.FunctionsPerVM = 20
	}
	if c.Functions == 0 {
		c.Functions = (c.Containers + c.VMs - 1) / c.VMs
	}
	if c.Layers == 0 {
		c.Layers = 1
	}
	if c.Stripes == 0 {
		c.Stripes = DefaultStripes
	}
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(c.Containers >= 1, "containers must be at least 1, not %d", c.Containers)
	check(c.Functions >= 1, "functions must be at least 1, not %d", c.Functions)
	check(c.FunctionsPerVM >= 1, "functions per VM must be at least 1, not %d", c.FunctionsPerVM)
	check(c.ImageSize >= 1, "image size must be positive, not %d", c.ImageSize)
	check(c.Layers >= 1 && c.Layers <= imagegen.MaxLayers, "layers must be between 1 and %d, not %d", imagegen.MaxLayers, c.Layers)
	check(c.Bandwidth >= 1, "bandwidth must be positive (VMs cannot be unlimited), not %d", c.Bandwidth)
	check(c.RegistryBandwidth >= 0, "registry bandwidth must not be negative")
	check(c.BlockSize >= 1, "block size must be positive, not %d", c.BlockSize)
	check(c.Stripes >= 1 && c.Stripes <= ftree.MaxStripes, "stripes must be between 1 and %d, not %d", ftree.MaxStripes, c.Stripes)
	check(c.StripeFanout == 0 || c.StripeFanout == 2, "stripe fan-out must be 0 (k) or 2, not %d", c.StripeFanout)
	check(c.PieceSize >= 1, "piece size must be positive, not %d", c.PieceSize)
	check(c.ReadFraction > 0 && c.ReadFraction <= 1, "read fraction must be in (0, 1], not %g", c.ReadFraction)
	check(c.Latency >= 0 && c.StartTime >= 0 && c.Resolution >= 0, "latency, start time and resolution must not be negative")
	check(c.ReadChain >= 0 && c.ReadLatency >= 0, "read chain and read latency must not be negative")
	check(c.Swarm.Conns >= 1 && c.Swarm.Pipeline >= 1 && c.Swarm.Handout >= 1 && c.Swarm.Announce > 0,
		"swarm conns, pipeline, handout and announce interval must be positive")
	check(c.Swarm.Endgame >= 0 && c.Swarm.Blacklist >= 0 && c.Swarm.DialJitter >= 0,
		"swarm endgame, blacklist and dial jitter must not be negative")
	if c.Containers >= 1 && c.Functions >= 1 {
		per := (c.Containers + c.Functions - 1) / c.Functions
		check(per <= c.VMs, "%d containers of one function do not fit on %d VMs (one per VM)", per, c.VMs)
		check(c.Functions <= c.VMs*c.FunctionsPerVM && c.Containers <= c.VMs*c.FunctionsPerVM,
			"%d containers do not fit on %d VMs of %d functions each", c.Containers, c.VMs, c.FunctionsPerVM)
	}
	return c, errors.Join(errs...)
}

// stripeFanout is the fan-out of the stripe trees.
func (c Config) stripeFanout() int {
	if c.StripeFanout == 2 || c.Stripes <= 2 {
		return 2
	}
	return c.Stripes
}

// need is how many bytes of an image strategy s moves before a start.
func (c Config) need(s Strategy) float64 {
	if s.lazy() {
		return math.Max(1, math.Ceil(float64(c.ImageSize)*c.ReadFraction))
	}
	return float64(c.ImageSize)
}

// readDelay is what a start of strategy s waits for its chain of reads
// beyond their bytes, in ns.
func (c Config) readDelay(s Strategy) int64 {
	if !s.lazy() {
		return 0
	}
	return int64(c.ReadChain) * int64(c.ReadLatency)
}

func (c Config) registryRate() float64 {
	if c.RegistryBandwidth == 0 {
		return math.Inf(1)
	}
	return float64(c.RegistryBandwidth)
}

// autoResolution returns a round duration near bound/10000, at least 1 µs.
func autoResolution(bound float64) int64 {
	ns := bound * 1e9 / 1e4
	if ns < 1e3 {
		return 1e3
	}
	p := math.Pow(10, math.Floor(math.Log10(ns)))
	for _, m := range []float64{5, 2, 1} {
		if m*p <= ns {
			return int64(m * p)
		}
	}
	return int64(p)
}
