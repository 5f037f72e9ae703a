package sim

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/faasnet/faasnet/report"
	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
)

// PlotReady plots when the containers of each result started: a
// CDF per strategy, its time axis logarithmic (strategies differ by orders
// of magnitude).
func PlotReady(rs []*Result) (*plot.Plot, error) {
	series := make([]report.Series, len(rs))
	for i, r := range rs {
		series[i] = report.Series{Name: string(r.Strategy), Values: r.ReadyTimes}
	}
	title := fmt.Sprintf("%d containers on %d VMs", rs[0].Containers, rs[0].VMs)
	return report.CDF(report.Axes{Title: title, X: "container started (s)", Y: "fraction started", LogX: true}, series)
}

// PlotLatencies plots the CDF of each replay's cold-start
// latencies.
func PlotLatencies(rs []*ReplayResult) (*plot.Plot, error) {
	series := make([]report.Series, len(rs))
	for i, r := range rs {
		series[i] = report.Series{Name: string(r.Strategy), Values: r.Latencies}
	}
	return report.CDF(report.Axes{Title: "Cold-start provisioning latency", X: "latency (s)", Y: "fraction started", LogX: true}, series)
}

// PlotMakespans plots the makespan of each strategy against the
// number of containers started at once.
func PlotMakespans(rs []*Result) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "Makespan against concurrency"
	p.X.Label.Text = "containers started at once"
	p.Y.Label.Text = "makespan (s)"
	p.Y.Min = 0
	p.Legend.Top = true
	p.Legend.Left = true
	var order []Strategy
	lines := map[Strategy]plotter.XYs{}
	for _, r := range rs {
		if _, ok := lines[r.Strategy]; !ok {
			order = append(order, r.Strategy)
		}
		lines[r.Strategy] = append(lines[r.Strategy], plotter.XY{X: float64(r.Containers), Y: r.Makespan})
	}
	var args []any
	for _, s := range order {
		xy := lines[s]
		slices.SortFunc(xy, func(a, b plotter.XY) int { return cmp.Compare(a.X, b.X) })
		args = append(args, string(s), xy)
	}
	if err := plotutil.AddLinePoints(p, args...); err != nil {
		return nil, fmt.Errorf("drawing makespans: %w", err)
	}
	return p, nil
}
