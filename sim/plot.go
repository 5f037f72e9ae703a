package sim

import (
	"fmt"
	"io"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// cdfPoints bounds the points drawn per curve: a CDF of 100,000 starts
// needs no more to look the same.
const cdfPoints = 500

// PlotCDF draws, as SVG, the cumulative distribution of the times in each
// named series (seconds, all positive), one curve per series, in the order
// of names. The time axis is logarithmic: strategies differ by orders of
// magnitude.
func PlotCDF(w io.Writer, title, xlabel string, names []string, series [][]float64) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = xlabel
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Y.Label.Text = "fraction started"
	p.Y.Min, p.Y.Max = 0, 1
	p.Legend.Top = false
	p.Legend.Left = false
	var args []any
	for i, xs := range series {
		if len(xs) == 0 {
			continue
		}
		if slices.Min(xs) <= 0 {
			return fmt.Errorf("drawing the CDF: %s has a time %v, not positive", names[i], slices.Min(xs))
		}
		args = append(args, names[i], cdf(xs))
	}
	if err := plotutil.AddLines(p, args...); err != nil {
		return fmt.Errorf("drawing the CDF: %w", err)
	}
	return save(w, p)
}

// cdf returns the empirical CDF of xs as a step curve of at most
// about cdfPoints points.
func cdf(xs []float64) plotter.XYs {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	stride := max(1, n/cdfPoints)
	out := plotter.XYs{{X: s[0], Y: 0}}
	for i := 0; i < n; i += stride {
		out = append(out, plotter.XY{X: s[i], Y: float64(i+1) / float64(n)})
	}
	if last := out[len(out)-1]; last.Y < 1 {
		out = append(out, plotter.XY{X: s[n-1], Y: 1})
	}
	return out
}

// PlotMakespans draws, as SVG, the makespan of each strategy against the
// number of containers started at once.
func PlotMakespans(w io.Writer, rs []*Result) error {
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
		slices.SortFunc(xy, func(a, b plotter.XY) int { return compare(a.X, b.X) })
		args = append(args, string(s), xy)
	}
	if err := plotutil.AddLinePoints(p, args...); err != nil {
		return fmt.Errorf("drawing makespans: %w", err)
	}
	return save(w, p)
}

func compare(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// plotFormat is the image format of the plots; tests may switch it to
// look at a plot as PNG.
var plotFormat = "svg"

func save(w io.Writer, p *plot.Plot) error {
	wt, err := p.WriterTo(16*vg.Centimeter, 10*vg.Centimeter, plotFormat)
	if err != nil {
		return fmt.Errorf("rendering the plot: %w", err)
	}
	if _, err := wt.WriteTo(w); err != nil {
		return fmt.Errorf("writing the plot: %w", err)
	}
	return nil
}
