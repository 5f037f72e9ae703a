package sim

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/faasnet/faasnet/units"
)

// WriteTable writes scale-out results as an aligned table, one row per
// result.
func WriteTable(w io.Writer, rs []*Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "strategy\tk\tblock\tVMs\tcontainers\tmakespan\tp50\tp90\tfirst\tbound\teff\tregistry out\tbusiest VM sent/recv\tpeak up\theight\tsim wall\t")
	for _, r := range rs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%.0f%%\t%s\t%s/%s\t%s\t%d\t%.1fs\t\n",
			r.Strategy, stripesLabel(r), units.FormatBytes(r.BlockSize), r.VMs, r.Containers, secs(r.Makespan), secs(r.Ready.P50), secs(r.Ready.P90), secs(r.Ready.Min),
			secs(r.LowerBound), 100*r.Efficiency, decimal(float64(r.RegistryEgress), "B"),
			decimal(float64(r.Busiest.Sent), "B"), decimal(float64(r.Busiest.Received), "B"),
			decimal(r.PeakUpload, "B/s"), lastHeight(r.Height), r.Wall)
	}
	return tw.Flush()
}

// WriteReplayTable writes trace replay results as an aligned table.
func WriteReplayTable(w io.Writer, rs []*ReplayResult) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "strategy\tk\tcold starts\trejected\tp50\tp90\tp99\tmax\tmean\tregistry out\tpeak tree\tpeak height\tpeak burst\tpeak instances\tsim wall\t")
	for _, r := range rs {
		k := "-"
		if r.Strategy == FaaSNet || r.Strategy == FaaSNetLazy {
			k = fmt.Sprint(r.Stripes)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%.1fs\t\n",
			r.Strategy, k, r.ColdStarts, r.Rejected, secs(r.Latency.P50), secs(r.Latency.P90), secs(r.Latency.P99),
			secs(r.Latency.Max), secs(r.Latency.Mean), decimal(float64(r.RegistryEgress), "B"),
			r.PeakTree, r.PeakHeight, r.PeakBurst, r.PeakInstances, r.Wall)
	}
	return tw.Flush()
}

// stripesLabel shows a result's stripes and, where it is not k, their
// fan-out: "4" or "4/2". Strategies without trees show "-".
func stripesLabel(r *Result) string {
	switch {
	case r.Strategy != FaaSNet && r.Strategy != FaaSNetLazy:
		return "-"
	case r.Stripes > 2 && r.StripeFanout == 2:
		return fmt.Sprintf("%d/2", r.Stripes)
	}
	return fmt.Sprint(r.Stripes)
}

func lastHeight(h []HeightSample) int {
	if len(h) == 0 {
		return 0
	}
	return h[len(h)-1].Height
}

func secs(s float64) string {
	switch {
	case s >= 100:
		return fmt.Sprintf("%.1fs", s)
	case s >= 1:
		return fmt.Sprintf("%.2fs", s)
	default:
		return fmt.Sprintf("%.0fms", s*1000)
	}
}

// decimal formats n with a decimal prefix (k, M, G, T), as the paper
// writes image sizes and link speeds.
func decimal(n float64, unit string) string {
	for _, p := range []struct {
		div    float64
		prefix string
	}{{1e12, "T"}, {1e9, "G"}, {1e6, "M"}, {1e3, "k"}} {
		if n >= p.div {
			return fmt.Sprintf("%.3g %s%s", n/p.div, p.prefix, unit)
		}
	}
	return fmt.Sprintf("%.0f %s", n, unit)
}
