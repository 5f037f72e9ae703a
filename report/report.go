// Package report writes results for programs and people: JSON files, and
// SVG plots of distributions (CDFs) that sim, bench and demo draw their
// plots with.
package report

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// WriteJSON writes v, indented, to the file path.
func WriteJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding %s: %w", path, err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// Series is one curve of a CDF: the times, in seconds, at which things
// happened (containers started, VMs became ready).
type Series struct {
	Name   string
	Values []float64
	// Total is what the fractions are of: things that never happened (a VM
	// that never became ready) count in it but have no value. 0 means
	// len(Values).
	Total int
}

// Axes name a plot and its axes.
type Axes struct {
	Title, X, Y string
	// LogX makes the time axis logarithmic, for times that differ by
	// orders of magnitude; its values must then be positive.
	LogX bool
}

// cdfPoints bounds the points drawn per curve: a CDF of 100,000 starts
// needs no more to look the same.
const cdfPoints = 500

// CDF plots the cumulative distribution of each series, one step curve
// per series in order; empty series are left out.
func CDF(a Axes, series []Series) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text, p.X.Label.Text, p.Y.Label.Text = a.Title, a.X, a.Y
	p.Y.Min, p.Y.Max = 0, 1
	if a.LogX {
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	} else {
		p.X.Min = 0
	}
	// Right, a little below the top and in from the edge: the slowest
	// curve rises at the right edge, the others further left.
	p.Legend.Top, p.Legend.Left = true, false
	p.Legend.XOffs, p.Legend.YOffs = -vg.Inch/2, -vg.Inch/2
	for i, s := range series {
		if len(s.Values) == 0 {
			continue
		}
		if a.LogX && slices.Min(s.Values) <= 0 {
			return nil, fmt.Errorf("drawing the CDF: %s has a time %v, not positive", s.Name, slices.Min(s.Values))
		}
		l, err := plotter.NewLine(cdf(s))
		if err != nil {
			return nil, fmt.Errorf("drawing the CDF of %s: %w", s.Name, err)
		}
		l.StepStyle = plotter.PostStep
		l.Color = plotutil.Color(i)
		l.Width = vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(s.Name, l)
	}
	return p, nil
}

// cdf returns the empirical CDF of s as a step curve of at most about
// cdfPoints points, from 0 at the first value to the share of s.Total
// reached at the last.
func cdf(s Series) plotter.XYs {
	xs := slices.Clone(s.Values)
	slices.Sort(xs)
	n := len(xs)
	total := float64(max(s.Total, n))
	stride := max(1, n/cdfPoints)
	out := plotter.XYs{{X: xs[0], Y: 0}}
	for i := 0; i < n; i += stride {
		out = append(out, plotter.XY{X: xs[i], Y: float64(i+1) / total})
	}
	if last := float64(n) / total; out[len(out)-1].Y < last {
		out = append(out, plotter.XY{X: xs[n-1], Y: last})
	}
	return out
}

// Size is the size of one plot on the page.
const (
	Width  = 6 * vg.Inch
	Height = 4 * vg.Inch
)

// WriteSVG draws plots side by side, each Width by Height, as SVG to w.
func WriteSVG(w io.Writer, plots ...*plot.Plot) error {
	c := vgsvg.New(vg.Length(len(plots))*Width, Height)
	tiles := draw.Tiles{Rows: 1, Cols: len(plots), PadX: vg.Inch / 4, PadY: vg.Inch / 8, PadLeft: vg.Inch / 8, PadRight: vg.Inch / 8}
	canvases := plot.Align([][]*plot.Plot{plots}, tiles, draw.New(c))
	for i, p := range plots {
		p.Draw(canvases[0][i])
	}
	if _, err := c.WriteTo(w); err != nil {
		return fmt.Errorf("writing the plot: %w", err)
	}
	return nil
}

// WriteSVGFile draws plots side by side, as WriteSVG, to the file path.
func WriteSVGFile(path string, plots ...*plot.Plot) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("creating the plot: %w", err)
	}
	if err := WriteSVG(f, plots...); err != nil {
		f.Close()
		return fmt.Errorf("plot %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing the plot %s: %w", path, err)
	}
	return nil
}
