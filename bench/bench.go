package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/cluster"
	"github.com/faasnet/faasnet/progress"
	"github.com/faasnet/faasnet/report"
	"github.com/faasnet/faasnet/units"
)

// Config configures Run.
type Config struct {
	// VMs are the VM counts; every strategy runs at each.
	VMs        []int
	Strategies []string
	// Stripes, if set, runs the faasnet strategies once with each number
	// of stripe trees, side by side ("faasnet-k1", "faasnet-k2"); empty is
	// the manager's default, api.DefaultStripes.
	Stripes []int
	// BlockSizes, if set, runs the faasnet strategies once with each
	// block, side by side ("faasnet-k2-b512KiB"); 0 is the manager's pick
	// per image ("faasnet-k2-bauto"). Empty is the scenario's BlockSize.
	BlockSizes []int64
	Scenario   cluster.Scenario
	// Timeout bounds each run's provisioning; 0 means none.
	Timeout time.Duration
	// JSON and Plot, if set, are files for the results and the SVG plot.
	JSON, Plot string
	// Out receives progress, the table and warnings.
	Out io.Writer
	// Every is the interval of progress lines; default 5 s.
	Every time.Duration
	// Command is recorded in the JSON scenario, so results name how they
	// were made.
	Command string
	Dir     string
	// Lazy runs the Python function (cluster.PythonFunction) instead of
	// generated images: VMs start its container and are ready when it
	// answers; faasnet and ondemand mount its eStargz conversion lazily,
	// registry pulls and unpacks the plain image. The scenario's image
	// size, layers and functions are then ignored. Needs root, runc and
	// /dev/fuse, and debootstrap the first time.
	Lazy bool
	// RunDir holds the containers' bundles, mounts and unpacked root file
	// systems with Lazy; default os.TempDir().
	RunDir string
	// ReplayReads, with Lazy, records once, on one VM, what the function's
	// container reads before it answers, and then has every VM replay
	// those reads through its lazy path instead of starting the container
	// (cluster.Recording): the network without this machine's CPU.
	// CompareContainers runs every strategy with containers too, just
	// before its replay, so that the two modes are side by side.
	ReplayReads, CompareContainers bool
	Logger                         *slog.Logger
}

// benchHarness starts the registry with the bench's images: generated, or
// with Lazy the Python function and its conversion.
func benchHarness(ctx context.Context, cfg Config, out io.Writer) (*cluster.Harness, error) {
	opts := cluster.Options{Dir: cfg.Dir, RunDir: cfg.RunDir, Logger: cfg.Logger}
	if cfg.Lazy {
		fn, err := cluster.PythonFunction(ctx, out)
		if err != nil {
			return nil, fmt.Errorf("bench --lazy: %w", err)
		}
		opts.Function = fn
	}
	return cluster.New(ctx, cfg.Scenario, opts)
}

// strategiesOf are the named strategies, a faasnet one once per number of
// stripes and per block when those are given.
func strategiesOf(names []string, stripes []int, blocks []int64) ([]cluster.Strategy, error) {
	var out []cluster.Strategy
	for _, name := range names {
		s, err := cluster.StrategyByName(name)
		if err != nil {
			return nil, err
		}
		f, ok := s.(cluster.Faasnet)
		if !ok || len(stripes)+len(blocks) == 0 {
			out = append(out, s)
			continue
		}
		ks := stripes
		if len(ks) == 0 {
			ks = []int{0}
		}
		for _, k := range ks {
			if len(stripes) > 0 && (k < 1 || k > api.MaxStripes) {
				return nil, fmt.Errorf("bench: %d stripes: want 1 to %d", k, api.MaxStripes)
			}
			f.Stripes = k
			if len(blocks) == 0 {
				out = append(out, f)
				continue
			}
			for _, b := range blocks {
				if b < 0 {
					return nil, fmt.Errorf("bench: negative block size %d", b)
				}
				f.Block = b
				if b == 0 {
					f.Block = cluster.AutoBlock
				}
				out = append(out, f)
			}
		}
	}
	return out, nil
}

// Run runs every strategy on the same images and limits at each VM count,
// one run after another, fresh VMs for each, and reports them. It returns
// the rows, and an error if a run failed to start or a VM failed.
func Run(ctx context.Context, cfg Config) ([]Row, error) {
	out := cfg.Out
	if out == nil {
		out = io.Discard
	}
	if len(cfg.VMs) == 0 || len(cfg.Strategies) == 0 {
		return nil, errors.New("bench: no VM counts or no strategies")
	}
	strats, err := strategiesOf(cfg.Strategies, cfg.Stripes, cfg.BlockSizes)
	if err != nil {
		return nil, err
	}
	h, err := benchHarness(ctx, cfg, out)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	sc := h.Scenario()
	if cfg.Lazy {
		fmt.Fprintf(out, "bench --lazy: %s; each VM %s up and down; registry %s; %d CPUs\n",
			h.DescribeFunction(), units.FormatRate(sc.Bandwidth), units.FormatRate(sc.RegistryBandwidth), runtime.NumCPU())
	} else {
		fmt.Fprintf(out, "bench: %d image(s) of %s in %d layers; each VM %s up and down; registry %s; %d CPUs\n",
			sc.Functions, units.FormatBytes(h.Images()[0].Bytes()), sc.Layers, units.FormatRate(sc.Bandwidth),
			units.FormatRate(sc.RegistryBandwidth), runtime.NumCPU())
	}

	modes := []string{ModeContainer}
	var rec *cluster.Recording
	if cfg.ReplayReads {
		if !cfg.Lazy {
			return nil, errors.New("bench: replaying reads needs --lazy: they are a container's reads of its lazy image")
		}
		if rec, err = h.RecordReads(ctx, cfg.Timeout); err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		fmt.Fprintf(out, "recorded on one VM: the container read %d ranges (the longest chain of reads waiting one for another: %d), %s (%.1f%% of the eStargz image), and answered %.2fs after the scale request; every VM now replays those reads, no container (registry: ready once the image is fetched, not unpacked)\n",
			len(rec.Reads), rec.Chain, units.FormatBytes(rec.Bytes), 100*float64(rec.Bytes)/float64(h.ImageBytes()), rec.Took.Seconds())
		modes = []string{ModeReplay}
		if cfg.CompareContainers {
			modes = []string{ModeContainer, ModeReplay}
		}
	}

	var rows []Row
	failed := 0
	every := cfg.Every
	if every <= 0 {
		every = 5 * time.Second
	}
	for _, n := range cfg.VMs {
		for _, s := range strats {
			for _, mode := range modes {
				row, err := runOne(ctx, h, s, n, mode, rec, cfg, out, every)
				if err != nil {
					return rows, err
				}
				rows = append(rows, row)
				if row.FailedVMs > 0 {
					failed++
				}
			}
		}
	}
	fmt.Fprintln(out)
	if err := WriteTable(out, rows); err != nil {
		return rows, err
	}
	for _, w := range Warnings(rows) {
		fmt.Fprintln(out, w)
	}
	if cfg.JSON != "" {
		doc := Doc{Scenario: Scenario{
			VMs: cfg.VMs, Strategies: cfg.Strategies, ImageSizeBytes: sc.ImageSize, ImageBytes: h.ImageBytes(),
			Layers: sc.Layers, Functions: sc.Functions, BandwidthBytesPerS: sc.Bandwidth,
			RegistryBandwidthBPerS: sc.RegistryBandwidth, BlockSizeBytes: sc.BlockSize, PieceSizeBytes: sc.PieceSize,
			CPUs: runtime.NumCPU(), Command: cfg.Command, Lazy: cfg.Lazy,
		}, Results: rows}
		if cfg.Lazy {
			doc.Scenario.PlainImageBytes = h.PlainImages()[0].Bytes()
		}
		if rec != nil {
			doc.Scenario.ReplayedReads, doc.Scenario.ReplayedBytes = len(rec.Reads), rec.Bytes
		}
		if err := report.WriteJSON(cfg.JSON, doc); err != nil {
			return rows, err
		}
	}
	if cfg.Plot != "" {
		if err := Plot(cfg.Plot, rows); err != nil {
			return rows, err
		}
	}
	if failed > 0 {
		return rows, fmt.Errorf("bench: %d run(s) had VMs that failed", failed)
	}
	return rows, nil
}

// The modes of a run with a function (Row.Mode).
const (
	ModeContainer = ""       // every VM starts the container
	ModeReplay    = "replay" // every VM replays the recorded reads
)

// runOne runs strategy s on n VMs in mode and prints how it went.
func runOne(ctx context.Context, h *cluster.Harness, s cluster.Strategy, n int, mode string, rec *cluster.Recording, cfg Config, out io.Writer, every time.Duration) (Row, error) {
	name := s.Name()
	opts := cluster.RunOptions{Interval: time.Second, Timeout: cfg.Timeout}
	if mode == ModeReplay {
		name += "/" + mode
		opts.Replay = rec.Reads
	}
	prefix := fmt.Sprintf("  %-16s %4d VMs ", name, n)
	p := &progress.Progress{W: out, Prefix: prefix, Every: every}
	opts.Progress = p.Update
	res, err := h.Run(ctx, s, n, opts)
	if err != nil {
		return Row{}, fmt.Errorf("bench: %s at %d VMs: %w", name, n, err)
	}
	row := RowOf(res)
	if f, ok := s.(cluster.Faasnet); ok {
		row.Stripes = f.StripeCount()
	}
	row.BlockSize = res.BlockSize
	fmt.Fprintf(out, "%sdone: makespan %.2fs, lower bound %.2fs, efficiency %.2f, registry egress %s, CPU %.0f%% (machine %.0f%%)\n",
		prefix, row.MakespanS, row.LowerBoundS, row.Efficiency, units.FormatBytes(row.RegistryEgressBytes), 100*row.CPUUtilization, 100*row.MachineCPU)
	if row.Containers {
		fmt.Fprintf(out, "%s      fetched at most %s before ready (%.1f%% of the image)\n",
			prefix, units.FormatBytes(row.BytesBeforeReadyMax), 100*row.FractionBeforeReady)
	}
	return row, nil
}
