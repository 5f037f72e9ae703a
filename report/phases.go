package report

import (
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/faasnet/faasnet/cluster"
	"github.com/faasnet/faasnet/units"
)

// phaseOrder is the order phases happen in; a VM goes through some of them
// (mount for a lazy image, unpacked for a whole fetch, started with a
// container).
var phaseOrder = []string{"assigned", "manifest", "mount", "unpacked", "started", "ready"}

// PhaseStats is the distribution of one phase's time over the VMs, in
// seconds from the scale request.
type PhaseStats struct {
	FirstS  float64 `json:"first"`
	MedianS float64 `json:"median"`
	LastS   float64 `json:"last"`
	VMs     int     `json:"vms"` // VMs that reached the phase
}

// phaseStats sums up the VMs' phases, per phase, over the VMs that reached
// it; nil if no VM reported phases.
func phaseStats(phases []map[string]time.Duration) map[string]PhaseStats {
	byPhase := map[string][]time.Duration{}
	for _, vm := range phases {
		for k, d := range vm {
			byPhase[k] = append(byPhase[k], d)
		}
	}
	if len(byPhase) == 0 {
		return nil
	}
	out := make(map[string]PhaseStats, len(byPhase))
	for k, ds := range byPhase {
		slices.Sort(ds)
		out[k] = PhaseStats{
			FirstS: ds[0].Seconds(), MedianS: cluster.Percentile(ds, 50).Seconds(),
			LastS: ds[len(ds)-1].Seconds(), VMs: len(ds),
		}
	}
	return out
}

// phaseNames returns the phases of stats in the order they happen, unknown
// ones last, by name.
func phaseNames(stats map[string]PhaseStats) []string {
	var names []string
	for _, k := range phaseOrder {
		if _, ok := stats[k]; ok {
			names = append(names, k)
		}
	}
	var rest []string
	for k := range stats {
		if !slices.Contains(phaseOrder, k) {
			rest = append(rest, k)
		}
	}
	slices.Sort(rest)
	return append(names, rest...)
}

// seconds converts a VM's phases to seconds.
func phaseSeconds(p map[string]time.Duration) map[string]float64 {
	if len(p) == 0 {
		return nil
	}
	out := make(map[string]float64, len(p))
	for k, d := range p {
		out[k] = d.Seconds()
	}
	return out
}

// beforeReady returns the largest and the smallest bytes any VM fetched
// before it was ready, over the VMs that report it.
func beforeReady(res *cluster.Result) (most, least int64) {
	for _, r := range res.Reports {
		if r.BytesBeforeReady <= 0 {
			continue
		}
		most = max(most, r.BytesBeforeReady)
		if least == 0 || r.BytesBeforeReady < least {
			least = r.BytesBeforeReady
		}
	}
	return most, least
}

// fraction is part/whole, 0 when whole is not positive.
func fraction(part, whole int64) float64 {
	if whole <= 0 {
		return 0
	}
	return float64(part) / float64(whole)
}

// writePhases writes the phases' distribution as a small table.
func writePhases(w io.Writer, stats map[string]PhaseStats) {
	if len(stats) == 0 {
		return
	}
	fmt.Fprintf(w, "  %-9s %8s %8s %8s  (seconds after the scale request, over the VMs)\n", "phase", "first", "median", "last")
	for _, k := range phaseNames(stats) {
		s := stats[k]
		fmt.Fprintf(w, "  %-9s %8.2f %8.2f %8.2f\n", k, s.FirstS, s.MedianS, s.LastS)
	}
}

// describeFunction says what a run with a Function starts.
func describeFunction(h *cluster.Harness) string {
	lz, plain := h.Images()[0], h.PlainImages()[0]
	return fmt.Sprintf("the Python function: %s (%s plain in %d layers, %s as eStargz)",
		plain.Repository, units.FormatBytes(plain.Bytes()), len(plain.Layers), units.FormatBytes(lz.Bytes()))
}
