package sim

import (
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/faasnet/faasnet/report"
	"github.com/faasnet/faasnet/units"
)

// Files are where a run's results go besides its table; "" writes none.
type Files struct {
	JSON string // the results as JSON
	Plot string // an SVG plot
}

// Sweep simulates every strategy at each VM count of vms (cfg.VMs is
// ignored), one after the other, and writes the table to out, the results
// as JSON and a plot: the ready times' CDF for one VM count, makespans
// against concurrency for several. Each tree strategy runs once per stripe
// count of stripes (nil: cfg.Stripes alone); the others, which have no
// trees, once. A cfg.BlockSize of 0 picks each run's with BlockFor.
func Sweep(out io.Writer, cfg Config, vms []int, strategies []Strategy, stripes []int, files Files) error {
	if len(stripes) == 0 {
		stripes = []int{cfg.Stripes}
	}
	var results []*Result
	for _, n := range vms {
		for _, s := range strategies {
			ks := stripes
			if s != FaaSNet && s != FaaSNetLazy {
				ks = stripes[:1]
			}
			for _, k := range ks {
				c := cfg
				c.VMs, c.Stripes = n, k
				if c.BlockSize == 0 {
					c.BlockSize = BlockFor(c.ImageSize, c.Layers, n, k)
				}
				slog.Info("simulating", "strategy", s, "vms", n, "stripes", k)
				r, err := ScaleOut(c, s)
				if err != nil {
					return err
				}
				results = append(results, r)
			}
		}
	}
	if err := WriteTable(out, results); err != nil {
		return err
	}
	if err := writeJSON(files.JSON, map[string]any{"config": cfg, "results": results}); err != nil {
		return err
	}
	if files.Plot == "" {
		return nil
	}
	plot := PlotReady
	if len(vms) > 1 {
		plot = PlotMakespans
	}
	p, err := plot(results)
	if err != nil {
		return err
	}
	return report.WriteSVGFile(files.Plot, p)
}

// ReplayTrace replays the trace in dir (ReadTrace) with each strategy and
// writes the table to out, the results as JSON and the cold-start
// latencies' CDF.
// Each tree strategy replays once per stripe count of stripes (nil:
// cfg.Stripes alone).
func ReplayTrace(out io.Writer, dir string, cfg ReplayConfig, strategies []Strategy, stripes []int, files Files) error {
	if len(stripes) == 0 {
		stripes = []int{cfg.Stripes}
	}
	tr, err := ReadTrace(dir)
	if err != nil {
		return err
	}
	slog.Info("trace", "functions", len(tr.Functions), "minutes", tr.Minutes, "without_duration", tr.NoDuration)
	var results []*ReplayResult
	for _, s := range strategies {
		ks := stripes
		if s != FaaSNet && s != FaaSNetLazy {
			ks = stripes[:1]
		}
		for _, k := range ks {
			c := cfg
			c.Stripes = k
			if c.BlockSize == 0 {
				c.BlockSize = BlockFor(c.ImageSize, c.Layers, c.VMs, k)
			}
			slog.Info("replaying", "strategy", s, "stripes", k, "pool", cfg.VMs, "scale_factor", cfg.ScaleFactor)
			r, err := Replay(tr, c, s)
			if err != nil {
				return err
			}
			results = append(results, r)
		}
	}
	if err := WriteReplayTable(out, results); err != nil {
		return err
	}
	if err := writeJSON(files.JSON, map[string]any{"config": cfg, "trace": dir, "results": results}); err != nil {
		return err
	}
	if files.Plot == "" {
		return nil
	}
	p, err := PlotLatencies(results)
	if err != nil {
		return err
	}
	return report.WriteSVGFile(files.Plot, p)
}

// CalibrateFile simulates the runs of the faasnet bench --json document
// benchFile (ReadBench) on top of base, compares them with Calibrate and
// writes the comparison to out and as JSON.
func CalibrateFile(out io.Writer, benchFile string, base Config, tolerance float64, jsonFile string) error {
	f, err := os.Open(benchFile)
	if err != nil {
		return fmt.Errorf("--calibrate: %w", err)
	}
	b, err := ReadBench(f)
	f.Close()
	if err != nil {
		return fmt.Errorf("--calibrate %s: %w", benchFile, err)
	}
	cfg := b.Config(base)
	measured, failed := b.Measured()
	for _, r := range failed {
		fmt.Fprintf(out, "skipped: %s at %d VMs, where %d VMs failed\n", r.Strategy, r.VMs, r.FailedVMs)
	}
	slog.Info("calibrating", "runs", len(measured), "image", units.FormatBytes(cfg.ImageSize), "layers", cfg.Layers,
		"bandwidth", units.FormatRate(cfg.Bandwidth), "registry", units.FormatRate(cfg.RegistryBandwidth))
	rows, err := Calibrate(cfg, measured, tolerance)
	if err != nil {
		return err
	}
	if err := WriteCalibration(out, rows); err != nil {
		return err
	}
	off := 0
	for _, r := range rows {
		if !r.Within {
			off++
		}
	}
	fmt.Fprintf(out, "%d of %d runs within %.0f%% (ratio = simulated/emulated)\n", len(rows)-off, len(rows), 100*tolerance)
	return writeJSON(jsonFile, map[string]any{"config": cfg, "bench": benchFile, "calibration": rows})
}

// writeJSON writes v to file, unless file is "".
func writeJSON(file string, v any) error {
	if file == "" {
		return nil
	}
	return report.WriteJSON(file, v)
}
