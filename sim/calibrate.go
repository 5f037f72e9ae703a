package sim

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/faasnet/faasnet/ftree"
	"github.com/faasnet/faasnet/imagegen"
	"github.com/faasnet/faasnet/units"
)

// Measured is a makespan measured by the emulation (faasnet bench): real
// workers on one machine with per-VM bandwidth limits. It is the seam
// between the two: the bench turns each of its runs into a Measured, and
// Calibrate runs the same scenario here.
type Measured struct {
	Strategy Strategy `json:"strategy"`
	VMs      int      `json:"vms"`
	// Makespan in seconds, from the scale-out request to the last VM
	// ready, measured as ScaleOut measures it.
	Makespan float64 `json:"makespan_s"`
	// RegistryEgress is the bytes the registry (or the swarm's origin)
	// sent; 0 if unknown.
	RegistryEgress int64 `json:"registry_egress_bytes"`
	// MachineCPU is the share of the machine's CPUs busy during the run,
	// other processes included: a busy machine wakes rate limiters late.
	MachineCPU float64 `json:"machine_cpu_utilization"`
	// Stripes and BlockSize are the run's own, when the bench ran the
	// faasnet strategies with several (faasnet-k2, faasnet-k2-b128KiB); 0
	// means the scenario's.
	Stripes   int   `json:"stripes,omitempty"`
	BlockSize int64 `json:"block_size,omitempty"`
	// Run is the bench's name of the run ("faasnet-k2-bauto"), of which
	// ReadBench keeps the strategy in Strategy.
	Run string `json:"-"`
}

// Bench is the JSON document faasnet bench --json writes (report.BenchDoc),
// as far as calibration reads it.
type Bench struct {
	Scenario BenchScenario `json:"scenario"`
	Results  []BenchResult `json:"results"`
}

// BenchScenario is what a bench's runs share.
type BenchScenario struct {
	// ImageSize is the size of each generated image, which package
	// imagegen splits into Layers layers; ImageBytes is what each VM
	// receives: every image, manifests included.
	ImageSize         int64 `json:"image_size_bytes"`
	ImageBytes        int64 `json:"image_bytes"`
	Layers            int   `json:"layers"`
	Functions         int   `json:"functions"`
	Bandwidth         int64 `json:"bandwidth_bytes_per_s"`
	RegistryBandwidth int64 `json:"registry_bandwidth_bytes_per_s"`
	BlockSize         int64 `json:"block_size_bytes"`
	PieceSize         int64 `json:"piece_size_bytes"`
	// Stripes is the stripe trees per function the bench ran with; 0
	// (benches from before stripes) is one tree.
	Stripes int `json:"stripes"`
	// Lazy runs started containers over lazily fetched images, which the
	// simulator does not reproduce.
	Lazy bool `json:"lazy"`
}

// BenchResult is one run of a bench.
type BenchResult struct {
	Measured
	FailedVMs int `json:"failed_vms"`
}

// maxBenchFunctions bounds the functions of a bench document: every VM
// hosts each, and the simulation holds them all.
const maxBenchFunctions = 1000

// ReadBench parses a bench's JSON document and checks that calibration can
// reproduce it: generated images, limited VM links, known strategies.
func ReadBench(r io.Reader) (*Bench, error) {
	var b Bench
	if err := json.NewDecoder(r).Decode(&b); err != nil {
		return nil, fmt.Errorf("reading the bench results: %w", err)
	}
	sc := b.Scenario
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(!sc.Lazy, "the bench ran containers (--lazy), which the simulator does not model")
	check(sc.Functions >= 0 && sc.Functions <= maxBenchFunctions, "functions %d, want 0 to %d", sc.Functions, maxBenchFunctions)
	check(sc.Layers >= 0 && sc.Layers <= imagegen.MaxLayers, "layers %d, want 0 to %d", sc.Layers, imagegen.MaxLayers)
	check(sc.ImageSize > 0 || sc.ImageBytes > 0, "no image size (image_size_bytes or image_bytes)")
	check(sc.ImageSize >= 0 && sc.ImageBytes >= 0, "negative image size")
	check(sc.ImageSize > 0 || sc.ImageBytes >= int64(max(sc.Functions, 1)), "image bytes %d leave less than a byte to each of %d functions", sc.ImageBytes, sc.Functions)
	check(sc.Bandwidth > 0, "unlimited VM links (bandwidth 0): the simulator needs a rate")
	check(sc.RegistryBandwidth >= 0 && sc.BlockSize >= 0 && sc.PieceSize >= 0, "negative registry bandwidth, block or piece size")
	check(sc.Stripes >= 0 && sc.Stripes <= ftree.MaxStripes, "stripes %d, want 0 to %d", sc.Stripes, ftree.MaxStripes)
	for i := range b.Results {
		m := &b.Results[i]
		m.Run = string(m.Strategy)
		m.Strategy = baseStrategy(m.Run)
		check(m.Stripes >= 0 && m.Stripes <= ftree.MaxStripes && m.BlockSize >= 0, "result %d: stripes %d, block size %d", i, m.Stripes, m.BlockSize)
		check(Strategy(m.Strategy).valid() && !m.Strategy.lazy(), "result %d: strategy %q is not one the simulator reproduces", i, m.Strategy)
		check(m.VMs >= 1 && m.VMs <= 1<<20, "result %d: %d VMs", i, m.VMs)
		check(m.Makespan >= 0 && !math.IsInf(m.Makespan, 0) && !math.IsNaN(m.Makespan), "result %d: makespan %v", i, m.Makespan)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("bench results: %w", err)
	}
	return &b, nil
}

// baseStrategy is the strategy of a bench run's name: the name without
// the stripes and block the bench appends to faasnet's ("-k2", "-b128KiB",
// "-bauto").
func baseStrategy(run string) Strategy {
	parts := strings.Split(run, "-")
	for len(parts) > 1 {
		last := parts[len(parts)-1]
		_, err := strconv.Atoi(strings.TrimPrefix(last, "k"))
		if !(strings.HasPrefix(last, "k") && err == nil) && !(strings.HasPrefix(last, "b") && len(last) > 1) {
			break
		}
		parts = parts[:len(parts)-1]
	}
	return Strategy(strings.Join(parts, "-"))
}

// Config returns base with the bench's scenario: image size, layers,
// functions, links, block and piece size. Each function has its own image
// and every VM hosts every function, as in the bench. The few bytes of
// manifests and configs are left out.
func (b *Bench) Config(base Config) Config {
	sc := b.Scenario
	c := base
	c.Functions = max(sc.Functions, 1)
	c.FunctionsPerVM = max(c.FunctionsPerVM, c.Functions)
	c.ImageSize = sc.ImageSize
	if c.ImageSize == 0 {
		c.ImageSize = sc.ImageBytes / int64(c.Functions)
	}
	c.Layers = max(sc.Layers, 1)
	c.Stripes = max(sc.Stripes, 1)
	c.Bandwidth, c.RegistryBandwidth = sc.Bandwidth, sc.RegistryBandwidth
	if sc.BlockSize > 0 {
		c.BlockSize = sc.BlockSize
	}
	if sc.PieceSize > 0 {
		c.PieceSize = sc.PieceSize
	}
	return c
}

// Measured returns the runs in which every VM became ready; the others
// say nothing about the makespan.
func (b *Bench) Measured() (ok []Measured, failed []BenchResult) {
	for _, r := range b.Results {
		if r.FailedVMs > 0 {
			failed = append(failed, r)
			continue
		}
		ok = append(ok, r.Measured)
	}
	return ok, failed
}

// CalibrationRow puts a simulated and an emulated run side by side.
type CalibrationRow struct {
	Strategy  Strategy `json:"strategy"`
	VMs       int      `json:"vms"`
	Simulated float64  `json:"simulated_s"`
	Emulated  float64  `json:"emulated_s"`
	// Ratio is Simulated/Emulated; Within reports whether it is within
	// the tolerance of 1.
	Ratio  float64 `json:"ratio"`
	Within bool    `json:"within"`
	// SimulatedEgress and EmulatedEgress are the registry's bytes sent.
	SimulatedEgress int64 `json:"simulated_registry_egress_bytes"`
	EmulatedEgress  int64 `json:"emulated_registry_egress_bytes"`
	// MachineCPU is the emulation's (see Measured).
	MachineCPU float64 `json:"machine_cpu_utilization"`
	// Result is the simulated run; for the swarm, whose runs depend on
	// the seed, the median of Seeds runs, whose makespans span
	// SimulatedMin to SimulatedMax.
	Result       *Result `json:"result"`
	Seeds        int     `json:"seeds"`
	SimulatedMin float64 `json:"simulated_min_s"`
	SimulatedMax float64 `json:"simulated_max_s"`

	// Run is the bench's name of the run; Stripes and BlockSize what it
	// was simulated with.
	Run       string `json:"run"`
	Stripes   int    `json:"stripes"`
	BlockSize int64  `json:"block_size"`
}

// swarmSeeds is how many seeds Calibrate simulates the swarm with: one
// emulated run is one draw of its random choices, and so is one seed.
const swarmSeeds = 5

// Calibrate simulates each measured scenario with cfg (its VMs set from the
// measurement, and every VM hosting each of cfg.Functions functions, default
// 1, as the bench does) and compares the makespans; the swarm's is the
// median over swarmSeeds seeds from cfg.Seed on. cfg must describe the
// bench's image, limits and block size (Bench.Config). A ratio off by more
// than tolerance (0.2 for 20%) means one of the two is wrong, and is
// reported, not an error.
func Calibrate(cfg Config, ms []Measured, tolerance float64) ([]CalibrationRow, error) {
	rows := make([]CalibrationRow, 0, len(ms))
	for _, m := range ms {
		c := cfg
		c.Functions = max(c.Functions, 1)
		c.VMs, c.Containers = m.VMs, m.VMs*c.Functions
		c.FunctionsPerVM = max(c.FunctionsPerVM, c.Functions)
		if m.Stripes > 0 {
			c.Stripes = m.Stripes
		}
		if m.BlockSize > 0 {
			c.BlockSize = m.BlockSize
		}
		runs := 1
		if m.Strategy == Swarm {
			runs = swarmSeeds
		}
		var rs []*Result
		for k := range runs {
			c.Seed = cfg.Seed + uint64(k)
			r, err := ScaleOut(c, m.Strategy)
			if err != nil {
				return nil, fmt.Errorf("simulating %s on %d VMs: %w", m.Strategy, m.VMs, err)
			}
			rs = append(rs, r)
		}
		slices.SortStableFunc(rs, func(a, b *Result) int { return cmp.Compare(a.Makespan, b.Makespan) })
		r := rs[len(rs)/2]
		run := cmp.Or(m.Run, string(m.Strategy))
		row := CalibrationRow{Strategy: m.Strategy, Run: run, Stripes: c.Stripes, BlockSize: c.BlockSize, VMs: m.VMs, Simulated: r.Makespan, Emulated: m.Makespan,
			SimulatedEgress: r.RegistryEgress, EmulatedEgress: m.RegistryEgress, MachineCPU: m.MachineCPU, Result: r,
			Seeds: runs, SimulatedMin: rs[0].Makespan, SimulatedMax: rs[len(rs)-1].Makespan}
		if m.Makespan > 0 {
			row.Ratio = r.Makespan / m.Makespan
			row.Within = math.Abs(row.Ratio-1) <= tolerance
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// WriteCalibration writes calibration rows as an aligned table; a row off
// by more than the tolerance is marked OFF.
func WriteCalibration(w io.Writer, rows []CalibrationRow) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "run\tstripes\tblock\tVMs\tsimulated\t(seeds)\temulated\tratio\t\tregistry out sim\temulated\tmachine CPU\t")
	for _, r := range rows {
		flag := "ok"
		if !r.Within {
			flag = "OFF"
		}
		spread := ""
		if r.Seeds > 1 {
			spread = secs(r.SimulatedMin) + "-" + secs(r.SimulatedMax)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%s\t%s\t%s\t%.2f\t%s\t%s\t%s\t%.0f%%\t\n", cmp.Or(r.Run, string(r.Strategy)), r.Stripes, units.FormatBytes(r.BlockSize), r.VMs, secs(r.Simulated), spread, secs(r.Emulated),
			r.Ratio, flag, bytesOrDash(r.SimulatedEgress), bytesOrDash(r.EmulatedEgress), 100*r.MachineCPU)
	}
	return tw.Flush()
}

func bytesOrDash(n int64) string {
	if n <= 0 {
		return "-"
	}
	return units.FormatBytes(n)
}
