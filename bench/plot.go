package bench

import (
	"fmt"
	"math"
	"slices"
	"strconv"

	"github.com/faasnet/faasnet/report"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Plot draws rows as an SVG file at path: the CDF of the VMs' ready times
// per strategy at the largest VM count and, for a sweep over several VM
// counts, the makespan of each strategy (and the lower bound) against the
// number of VMs beside it.
func Plot(path string, rows []Row) error {
	if len(rows) == 0 {
		return fmt.Errorf("plot %s: no results", path)
	}
	counts := vmCounts(rows)
	var plots []*plot.Plot
	if len(counts) > 1 {
		p, err := makespanPlot(rows, counts)
		if err != nil {
			return fmt.Errorf("plot %s: %w", path, err)
		}
		plots = append(plots, p)
	}
	p, err := cdfPlot(rows, counts[len(counts)-1])
	if err != nil {
		return fmt.Errorf("plot %s: %w", path, err)
	}
	return report.WriteSVGFile(path, append(plots, p)...)
}

// vmCounts returns the VM counts of rows, ascending.
func vmCounts(rows []Row) []int {
	var counts []int
	for _, r := range rows {
		if !slices.Contains(counts, r.VMs) {
			counts = append(counts, r.VMs)
		}
	}
	slices.Sort(counts)
	return counts
}

// strategies returns the strategies of rows in the order they first appear.
func strategies(rows []Row) []string {
	var names []string
	for _, r := range rows {
		if !slices.Contains(names, r.label()) {
			names = append(names, r.label())
		}
	}
	return names
}

func makespanPlot(rows []Row, counts []int) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "Makespan against VM count"
	p.X.Label.Text = "VMs"
	p.Y.Label.Text = "seconds to the last VM ready"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = vmTicks(counts)
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = secondTicks{}
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.YOffs = -vg.Points(12) // below the title
	var args []any
	for _, s := range strategies(rows) {
		var xys plotter.XYs
		for _, r := range rows {
			if r.label() == s && r.FailedVMs == 0 && r.MakespanS > 0 {
				xys = append(xys, plotter.XY{X: float64(r.VMs), Y: r.MakespanS})
			}
		}
		args = append(args, s, xys)
	}
	var bound plotter.XYs
	for _, n := range counts {
		for _, r := range rows {
			if r.VMs == n && r.LowerBoundS > 0 {
				bound = append(bound, plotter.XY{X: float64(n), Y: r.LowerBoundS})
				break
			}
		}
	}
	if len(bound) > 0 {
		args = append(args, "lower bound", bound)
	}
	if err := plotutil.AddLinePoints(p, args...); err != nil {
		return nil, err
	}
	return p, nil
}

// vmTicks marks exactly the VM counts measured.
type vmTicks []int

func (t vmTicks) Ticks(min, max float64) []plot.Tick {
	var out []plot.Tick
	for _, n := range t {
		out = append(out, plot.Tick{Value: float64(n), Label: fmt.Sprint(n)})
	}
	return out
}

// secondTicks labels a log axis of seconds at 1, 2 and 5 times the powers
// of ten, so that even a range inside one decade has labels.
type secondTicks struct{}

func (secondTicks) Ticks(min, max float64) []plot.Tick {
	var out []plot.Tick
	for p := math.Pow(10, math.Floor(math.Log10(min))); p <= max; p *= 10 {
		for _, m := range []float64{1, 2, 5} {
			if v := m * p; v >= min && v <= max {
				out = append(out, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'g', -1, 64)})
			}
		}
	}
	return out
}

// cdfPlot plots the ready times of the VMs of each strategy's run at vms
// VMs; a VM that never became ready keeps its curve below 1.
func cdfPlot(rows []Row, vms int) (*plot.Plot, error) {
	var series []report.Series
	for _, r := range rows {
		if r.VMs != vms {
			continue
		}
		s := report.Series{Name: r.label(), Total: len(r.ReadyS)}
		for _, t := range r.ReadyS {
			if t >= 0 {
				s.Values = append(s.Values, t)
			}
		}
		series = append(series, s)
	}
	return report.CDF(report.Axes{
		Title: fmt.Sprintf("Ready times at %d VMs (CDF)", vms),
		X:     "seconds since the scale request", Y: "fraction of VMs ready",
	}, series)
}
