package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"runtime"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/faasnet/faasnet/burst"
	"github.com/faasnet/faasnet/cluster"
	"github.com/faasnet/faasnet/report"
	"github.com/faasnet/faasnet/sim"
	"github.com/faasnet/faasnet/units"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// TraceConfig configures RunTrace.
type TraceConfig struct {
	// Dir holds the Azure Functions trace (invocations.csv, durations.csv).
	Dir string
	// Window is the length of the window replayed, in trace time; the most
	// bursty one is chosen (burst.Bursty).
	Window time.Duration
	// Speedup plays the trace this many times faster than it happened: a
	// trace minute lasts a minute divided by Speedup. The links keep their
	// speed.
	Speedup float64
	// Pool is the number of VMs; Functions the number of trace functions.
	Pool, Functions int
	// IdleTimeout reclaims an instance idle this long, in trace time.
	IdleTimeout time.Duration
	// Scale multiplies the invocations; 0 picks the largest at which the
	// pool holds every instance (burst.FitScale).
	Scale      float64
	Strategies []string
	// Stripes, if set, runs the faasnet strategy once with each number of
	// stripe trees (faasnet-k1, faasnet-k2, ...), side by side.
	Stripes []int
	// Replay has the VMs replay the container's recorded reads instead of
	// starting it (Config.ReplayReads); without it every VM runs the
	// container.
	Replay   bool
	Scenario cluster.Scenario
	// Drain bounds the wait for starts still under way after the window.
	Drain     time.Duration
	JSON      string
	Plot      string
	Out       io.Writer
	Command   string
	CacheDir  string // the VMs' caches; default cluster's choice
	RunDir    string
	RecordFor time.Duration // bounds the recording run
	Logger    *slog.Logger
	// Function is the function to run; nil is cluster.PythonFunction.
	Function *cluster.Function
}

// TraceRow is one strategy's replay of the window, with the simulator's
// replay of the same window beside it.
type TraceRow struct {
	Strategy   string  `json:"strategy"`
	ColdStarts int     `json:"cold_starts"`
	Ready      int     `json:"ready"`
	Reclaimed  int     `json:"reclaimed_before_ready"`
	Failed     int     `json:"failed_or_unfinished"`
	P50S       float64 `json:"p50_s"`
	P90S       float64 `json:"p90_s"`
	P99S       float64 `json:"p99_s"`
	MaxS       float64 `json:"max_s"`
	MeanS      float64 `json:"mean_s"`
	// RegistryEgressBytes is what the registry sent during the window.
	RegistryEgressBytes int64   `json:"registry_egress_bytes"`
	PeakTree            int     `json:"peak_tree"`
	LagS                float64 `json:"lag_s"`
	CPU                 float64 `json:"cpu_utilization"`
	MachineCPU          float64 `json:"machine_cpu_utilization"`
	// Sim is the simulator's replay of the same window and schedule.
	Sim *sim.ReplayResult `json:"sim,omitempty"`
	// Result holds every start, for the plot.
	Result *cluster.TraceResult `json:"result"`
}

// TraceDoc is the JSON document of a trace replay.
type TraceDoc struct {
	Command   string       `json:"command,omitempty"`
	Trace     string       `json:"trace"`
	Window    burst.Window `json:"window"`
	Criterion string       `json:"criterion"`
	Schedule  struct {
		Scale         float64 `json:"scale"`
		ColdStarts    int     `json:"cold_starts"`
		Warm          int     `json:"warm"`
		PeakBurst     int     `json:"peak_burst"`
		PeakInstances int     `json:"peak_instances"`
	} `json:"schedule"`
	Pool             int        `json:"pool"`
	SpeedupX         float64    `json:"speedup"`
	IdleTimeoutS     float64    `json:"idle_timeout_s"`
	Replay           bool       `json:"replay"`
	ReadBytes        int64      `json:"read_bytes,omitempty"`
	ReadChain        int        `json:"read_chain,omitempty"`
	FetchedBytes     int64      `json:"fetched_before_ready_bytes,omitempty"`
	LazyImageBytes   int64      `json:"lazy_image_bytes"`
	PlainImageBytes  int64      `json:"plain_image_bytes"`
	BandwidthBPerS   int64      `json:"bandwidth_bytes_per_s"`
	RegistryBWBPerS  int64      `json:"registry_bandwidth_bytes_per_s"`
	LowerBoundStartS float64    `json:"lower_bound_start_s"`
	LowerBoundBurstS float64    `json:"lower_bound_burst_registry_s"`
	CPUs             int        `json:"cpus"`
	Rows             []TraceRow `json:"results"`

	// FetchChain is the longest chain of dependent reads that fetch a
	// block (cluster.FetchChain); the simulator charges each a
	// ReadLatencyS round trip.
	FetchChain   int     `json:"fetch_chain,omitempty"`
	ReadLatencyS float64 `json:"read_latency_s,omitempty"`
}

// Criterion is how the window is chosen, for output and the JSON.
const Criterion = "largest one-minute rise of the chosen functions' summed instances, divided by their mean instances over the window (windows with a mean under one skipped); functions chosen per window by their total rise above the most they needed within the idle timeout before"

// RunTrace replays the most bursty window of a trace on emulated VMs with
// every strategy, one after another on the same schedule, simulates the
// same, and reports both.
func RunTrace(ctx context.Context, cfg TraceConfig) (*TraceDoc, error) {
	out := cfg.Out
	if out == nil {
		out = io.Discard
	}
	if cfg.Speedup <= 0 || cfg.Pool < 1 || cfg.Functions < 1 || cfg.Window < 2*time.Minute {
		return nil, fmt.Errorf("bench --trace: speedup %v, pool %d, functions %d, window %v: want positive, and a window of two minutes or more", cfg.Speedup, cfg.Pool, cfg.Functions, cfg.Window)
	}
	tr, err := sim.ReadTrace(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("bench --trace: %w", err)
	}
	w, err := burst.Bursty(tr, int(cfg.Window/time.Minute), cfg.Functions, cfg.IdleTimeout)
	if err != nil {
		return nil, fmt.Errorf("bench --trace: %w", err)
	}
	cut := burst.Cut(tr, w)
	scale := cfg.Scale
	if scale == 0 {
		if scale, err = burst.FitScale(cut, cfg.Pool, cfg.IdleTimeout, 1000); err != nil {
			return nil, fmt.Errorf("bench --trace: %w", err)
		}
	}
	sched, err := burst.NewSchedule(cut, cfg.Pool, scale, cfg.IdleTimeout)
	if err != nil {
		return nil, fmt.Errorf("bench --trace: %w", err)
	}
	minute := time.Duration(float64(time.Minute) / cfg.Speedup)
	fmt.Fprintf(out, "trace %s: %d functions, minutes %d-%d\n", cfg.Dir, len(tr.Functions), tr.FirstMinute, tr.FirstMinute+tr.Minutes-1)
	fmt.Fprintf(out, "window: the most bursty %d minutes for %d functions by the %s\n", w.Minutes, cfg.Functions, Criterion)
	fmt.Fprintf(out, "  chosen: minutes %d-%d (%s), score %.2f: a rise of %d instances at minute %d over a mean of %.1f; functions %v\n",
		w.Minute, w.Minute+w.Minutes-1, clock(w.Minute), w.Score, w.PeakIncrease, w.Minute+w.PeakAt, w.Mean, w.Functions)
	fmt.Fprintf(out, "schedule: invocations x%.3f to fit %d VMs (one instance each), idle timeout %v: %d cold starts, %d warm at the start, at most %d in one minute, %d instances at once; a trace minute lasts %v (x%g)\n",
		scale, cfg.Pool, cfg.IdleTimeout, sched.ColdStarts, sched.Warm, sched.PeakBurst, sched.PeakInstances, minute, cfg.Speedup)
	if sched.ColdStarts == 0 {
		return nil, errors.New("bench --trace: the window has no cold start")
	}

	fn := cfg.Function
	if fn == nil {
		if fn, err = cluster.PythonFunction(ctx, out); err != nil {
			return nil, fmt.Errorf("bench --trace: %w", err)
		}
	}
	h, err := cluster.New(ctx, cfg.Scenario, cluster.Options{Function: fn, Dir: cfg.CacheDir, RunDir: cfg.RunDir, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	defer h.Close()
	sc := h.Scenario()
	doc := &TraceDoc{Command: cfg.Command, Trace: cfg.Dir, Window: w, Criterion: Criterion, Pool: cfg.Pool, SpeedupX: cfg.Speedup,
		IdleTimeoutS: cfg.IdleTimeout.Seconds(), Replay: cfg.Replay, LazyImageBytes: h.ImageBytes(), PlainImageBytes: h.PlainImages()[0].Bytes(),
		BandwidthBPerS: sc.Bandwidth, RegistryBWBPerS: sc.RegistryBandwidth, CPUs: runtime.NumCPU()}
	doc.Schedule.Scale, doc.Schedule.ColdStarts, doc.Schedule.Warm = scale, sched.ColdStarts, sched.Warm
	doc.Schedule.PeakBurst, doc.Schedule.PeakInstances = sched.PeakBurst, sched.PeakInstances
	var rec *cluster.Recording
	if cfg.Replay {
		if rec, err = h.RecordReads(ctx, cfg.RecordFor); err != nil {
			return nil, fmt.Errorf("bench --trace: %w", err)
		}
		doc.ReadBytes, doc.FetchedBytes, doc.ReadChain = rec.Bytes, rec.Fetched, rec.Chain
		doc.FetchChain, doc.ReadLatencyS = cluster.FetchChain(rec.Reads, sc.BlockSize), simReadLatency.Seconds()
		fmt.Fprintf(out, "recorded on one VM: %d reads (the longest chain of reads waiting one for another: %d, of which %d fetch a block), %s read, %s fetched before the container answered (%.1f%% of the eStargz image); every start replays them, no container\n",
			len(rec.Reads), rec.Chain, doc.FetchChain, units.FormatBytes(rec.Bytes), units.FormatBytes(rec.Fetched), 100*float64(rec.Fetched)/float64(h.ImageBytes()))
	}
	// The bound: no start beats its bytes over its link; a burst through
	// the registry alone (ondemand, registry) not the burst's bytes over
	// the registry's link.
	need := doc.FetchedBytes
	if need == 0 {
		need = h.ImageBytes()
	}
	if sc.Bandwidth > 0 {
		doc.LowerBoundStartS = float64(need) / float64(sc.Bandwidth)
	}
	if sc.RegistryBandwidth > 0 {
		doc.LowerBoundBurstS = float64(sched.PeakBurst) * float64(need) / float64(sc.RegistryBandwidth)
	}
	fmt.Fprintf(out, "each VM %s up and down, registry %s; lower bound of a lazy start %.2fs (%s / a VM's link); of the largest burst through the registry alone %.2fs (%d x %s / the registry's link)\n",
		units.FormatRate(sc.Bandwidth), units.FormatRate(sc.RegistryBandwidth), doc.LowerBoundStartS, units.FormatBytes(need),
		doc.LowerBoundBurstS, sched.PeakBurst, units.FormatBytes(need))

	strats, err := strategiesOf(cfg.Strategies, cfg.Stripes, nil)
	if err != nil {
		return doc, err
	}
	for _, s := range strats {
		name := s.Name()
		opts := cluster.TraceOptions{Minute: minute, Drain: cfg.Drain, Progress: func(m, starts, reclaims, running int, lag time.Duration) {
			if starts > 0 || reclaims > 0 {
				fmt.Fprintf(out, "  %-8s minute %2d: %2d starts, %2d reclaims, %2d instances, asked %v late\n", name, m, starts, reclaims, running, lag.Round(time.Millisecond))
			}
		}}
		if rec != nil {
			opts.Replay = rec.Reads
		}
		res, err := h.RunTrace(ctx, s, cfg.Pool, sched, opts)
		if err != nil {
			return doc, fmt.Errorf("bench --trace: %s: %w", name, err)
		}
		row := traceRow(res)
		row.Sim, err = simulate(cut, sched, cfg, sc, doc, s, minute)
		if err != nil {
			return doc, fmt.Errorf("bench --trace: simulating %s: %w", name, err)
		}
		doc.Rows = append(doc.Rows, row)
		fmt.Fprintf(out, "  %-8s done: %d of %d starts ready, median %.2fs, p99 %.2fs, registry egress %s, CPU %.0f%% (machine %.0f%%)\n",
			name, row.Ready, row.ColdStarts, row.P50S, row.P99S, units.FormatBytes(row.RegistryEgressBytes), 100*row.CPU, 100*row.MachineCPU)
	}
	fmt.Fprintln(out)
	if err := WriteTraceTable(out, doc.Rows); err != nil {
		return doc, err
	}
	if cfg.JSON != "" {
		if err := report.WriteJSON(cfg.JSON, doc); err != nil {
			return doc, err
		}
	}
	if cfg.Plot != "" {
		if err := PlotTrace(cfg.Plot, doc); err != nil {
			return doc, err
		}
	}
	return doc, nil
}

// clock names a minute of the day.
func clock(minute int) string { return fmt.Sprintf("%02d:%02d", minute/60%24, minute%60) }

func traceRow(res *cluster.TraceResult) TraceRow {
	row := TraceRow{Strategy: res.Strategy, ColdStarts: len(res.Starts), RegistryEgressBytes: res.RegistryEgress, PeakTree: res.PeakTree,
		LagS: res.LagS, CPU: res.CPU, MachineCPU: res.MachineCPU, Result: res}
	row.Ready, row.Reclaimed, row.Failed = res.Counts()
	lat := res.Latencies()
	if len(lat) > 0 {
		row.P50S, row.P90S, row.P99S = cluster.Percentile(lat, 50).Seconds(), cluster.Percentile(lat, 90).Seconds(), cluster.Percentile(lat, 99).Seconds()
		row.MaxS = lat[len(lat)-1].Seconds()
		var sum time.Duration
		for _, d := range lat {
			sum += d
		}
		row.MeanS = (sum / time.Duration(len(lat))).Seconds()
	}
	return row
}

// simReadLatency is the round trip the simulator charges a replayed read.
var simReadLatency = 2 * sim.DefaultConfig().Latency

// simulate replays the same window with the simulator: the same pool
// (one instance per VM), scale, idle timeout and speed-up, links, block
// size and bytes per start (what the recording VM fetched, for the lazy
// strategies; the plain image for registry), no hop latency and no
// container start time (the emulation replays reads).
func simulate(cut *sim.Trace, sched *burst.Schedule, cfg TraceConfig, sc cluster.Scenario, doc *TraceDoc, strategy cluster.Strategy, minute time.Duration) (*sim.ReplayResult, error) {
	c := sim.DefaultConfig()
	c.VMs, c.FunctionsPerVM = cfg.Pool, 1
	c.Bandwidth, c.RegistryBandwidth = sc.Bandwidth, sc.RegistryBandwidth
	if sc.BlockSize > 0 {
		c.BlockSize = sc.BlockSize
	}
	c.Stripes, c.Latency, c.StartTime, c.Layers = 1, 0, 0, 1
	var s sim.Strategy
	f, isFaasnet := strategy.(cluster.Faasnet)
	switch {
	case isFaasnet:
		s = sim.FaaSNetLazy
		c.Stripes = f.StripeCount() // as many trees as the emulation's
	case strategy.Name() == "ondemand":
		s = sim.OnDemand
	case strategy.Name() == "registry":
		s = sim.Registry
	default:
		return nil, fmt.Errorf("no simulated counterpart of %s", strategy.Name())
	}
	// The replayed reads wait one for another: each read on the chain
	// that fetches pays a request round trip (the emulated links add no
	// latency: the simulator's default hop, both ways).
	c.ReadChain, c.ReadLatency = doc.FetchChain, time.Duration(doc.ReadLatencyS*float64(time.Second))
	c.ImageSize = doc.LazyImageBytes
	c.ReadFraction = 1
	if doc.FetchedBytes > 0 {
		c.ReadFraction = float64(doc.FetchedBytes) / float64(doc.LazyImageBytes)
	}
	if s == sim.Registry {
		c.ImageSize = doc.PlainImageBytes
	}
	if !cfg.Replay && s != sim.Registry {
		c.StartTime = 0 // unknown: the containers' start on this machine
	}
	return sim.Replay(cut, sim.ReplayConfig{Config: c, IdleTimeout: sched.IdleTimeout, ScaleFactor: sched.Scale, Minute: minute}, s)
}

// WriteTraceTable writes the rows with the simulator's numbers beside
// them, the ratios of the strategies' latencies, and where emulation and
// simulation differ by more than 20%.
func WriteTraceTable(w io.Writer, rows []TraceRow) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "strategy\tcold starts\tready\tp50\tp90\tp99\tmax\tmean\tregistry egress\tpeak tree\tlag\tCPU us/all\t|\tsim p50\tsim p90\tsim p99\tsim mean\tsim egress\tsim peak tree\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%.0f%%/%.0f%%\t|\t", r.Strategy, r.ColdStarts, r.Ready,
			secs(r.P50S), secs(r.P90S), secs(r.P99S), secs(r.MaxS), secs(r.MeanS), units.FormatBytes(r.RegistryEgressBytes), r.PeakTree,
			secs(r.LagS), 100*r.CPU, 100*r.MachineCPU)
		if s := r.Sim; s != nil {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t\n", secs(s.Latency.P50), secs(s.Latency.P90), secs(s.Latency.P99), secs(s.Latency.Mean),
				units.FormatBytes(s.RegistryEgress), s.PeakTree)
		} else {
			fmt.Fprintln(tw, "\t\t\t\t\t\t")
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, line := range TraceComparisons(rows) {
		fmt.Fprintln(w, line)
	}
	return nil
}

// isFaasnetRow reports whether a row is faasnet's, with the default stripes
// ("faasnet") or a number of them ("faasnet-k2").
func isFaasnetRow(strategy string) bool {
	return strategy == "faasnet" || strings.HasPrefix(strategy, "faasnet-")
}

// TraceComparisons are the ratios of the strategies measured side by side
// and the differences between emulation and simulation.
func TraceComparisons(rows []TraceRow) []string {
	var out []string
	for i := range rows {
		f := &rows[i]
		if !isFaasnetRow(f.Strategy) {
			continue
		}
		for _, r := range rows {
			if isFaasnetRow(r.Strategy) || f.MeanS <= 0 || r.MeanS <= 0 {
				continue
			}
			out = append(out, fmt.Sprintf("%s vs %s: mean latency %s (%.2fs vs %.2fs), p50 %.2fx, p99 %.2fx shorter; simulated: mean %s",
				f.Strategy, r.Strategy, lower(1-f.MeanS/r.MeanS), f.MeanS, r.MeanS, ratio(r.P50S, f.P50S), ratio(r.P99S, f.P99S), lower(simReduction(f, &r)/100)))
		}
	}
	for _, r := range rows {
		if r.Sim == nil {
			continue
		}
		var diffs []string
		flag := false
		for _, p := range []struct {
			name     string
			emu, sim float64
		}{{"p50", r.P50S, r.Sim.Latency.P50}, {"p90", r.P90S, r.Sim.Latency.P90}, {"mean", r.MeanS, r.Sim.Latency.Mean}} {
			d := relDiff(p.emu, p.sim)
			if math.Abs(d) > 0.2 {
				flag = true
			}
			diffs = append(diffs, fmt.Sprintf("%s %+.0f%%", p.name, 100*d))
		}
		mark := "within 20%"
		if flag {
			mark = "MORE THAN 20% APART"
		}
		if r.Sim.ColdStarts != r.ColdStarts {
			diffs = append(diffs, fmt.Sprintf("cold starts %d vs %d", r.ColdStarts, r.Sim.ColdStarts))
		}
		out = append(out, fmt.Sprintf("%s: emulation vs simulation: %s (%s)", r.Strategy, strings.Join(diffs, ", "), mark))
	}
	return out
}

func simReduction(f, r *TraceRow) float64 {
	if f.Sim == nil || r.Sim == nil || r.Sim.Latency.Mean <= 0 {
		return math.NaN()
	}
	return 100 * (1 - f.Sim.Latency.Mean/r.Sim.Latency.Mean)
}

// lower words a relative reduction: "75.2% lower", or "12.0% higher".
func lower(r float64) string {
	if r < 0 {
		return fmt.Sprintf("%.1f%% higher", -100*r)
	}
	return fmt.Sprintf("%.1f%% lower", 100*r)
}

// relDiff is (emu - sim) / sim.
func relDiff(emu, sim float64) float64 {
	if sim <= 0 {
		return math.Inf(1)
	}
	return (emu - sim) / sim
}

// PlotTrace draws, as an SVG file at path, the latency of every cold start
// against the trace minute that asked for it, one series per strategy
// (points, and a line through each minute's median), on a log axis of
// seconds, with the CDF of the latencies beside it.
func PlotTrace(path string, doc *TraceDoc) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Cold-start latency over trace time (window from %s, %d VMs)", clock(doc.Window.Minute), doc.Pool)
	p.X.Label.Text = "trace minute asked for (minute of the day)"
	p.Y.Label.Text = "seconds from the request to ready"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = secondTicks{}
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.YOffs = -vg.Points(12)
	var args []any
	var series []report.Series
	for _, r := range doc.Rows {
		byMinute := map[int][]float64{}
		var pts plotter.XYs
		s := report.Series{Name: r.Strategy, Total: len(r.Result.Starts)}
		for _, st := range r.Result.Starts {
			if st.LatencyS <= 0 {
				continue
			}
			x := float64(doc.Window.Minute + st.Minute)
			pts = append(pts, plotter.XY{X: x, Y: st.LatencyS})
			byMinute[st.Minute] = append(byMinute[st.Minute], st.LatencyS)
			s.Values = append(s.Values, st.LatencyS)
		}
		series = append(series, s)
		var med plotter.XYs
		for m := range doc.Window.Minutes {
			if xs := byMinute[m]; len(xs) > 0 {
				slices.Sort(xs)
				med = append(med, plotter.XY{X: float64(doc.Window.Minute + m), Y: xs[(len(xs)-1)/2]})
			}
		}
		if len(pts) == 0 {
			continue
		}
		args = append(args, r.Strategy, med)
		sc, err := plotter.NewScatter(pts)
		if err != nil {
			return fmt.Errorf("plot %s: %w", path, err)
		}
		i := len(args)/2 - 1
		sc.GlyphStyle.Color = plotutil.Color(i)
		sc.GlyphStyle.Shape = plotutil.Shape(i)
		sc.GlyphStyle.Radius = vg.Points(2)
		p.Add(sc)
	}
	if err := plotutil.AddLinePoints(p, args...); err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	cdf, err := report.CDF(report.Axes{Title: "Cold-start latency (CDF)", X: "seconds from the request to ready", Y: "fraction of cold starts ready"}, series)
	if err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	return report.WriteSVGFile(path, p, cdf)
}
