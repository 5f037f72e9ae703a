package cluster

import (
	"fmt"
	"runtime"
	"slices"
	"time"

	"github.com/faasnet/faasnet/units"
)

// phaseOrder is the order phases happen in; a VM goes through some of them
// (mount for a lazy image, unpacked for a whole fetch, pulled when CRI's
// PullImage returned, started with a container).
var phaseOrder = []string{"assigned", "manifest", "mount", "unpacked", "replayed", "pulled", "started", "ready"}

// PhaseStats is the distribution of one phase's time over the VMs, in
// seconds from the scale request.
type PhaseStats struct {
	FirstS  float64 `json:"first"`
	MedianS float64 `json:"median"`
	LastS   float64 `json:"last"`
	VMs     int     `json:"vms"` // VMs that reached the phase
}

// PhaseStats sums up the VMs' phases, per phase, over the VMs that reached
// it; nil if no VM reported phases.
func (r *Result) PhaseStats() map[string]PhaseStats { return phaseStats(r.Phases) }

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
			FirstS: ds[0].Seconds(), MedianS: Percentile(ds, 50).Seconds(),
			LastS: ds[len(ds)-1].Seconds(), VMs: len(ds),
		}
	}
	return out
}

// PhaseNames returns the phases of stats in the order they happen, unknown
// ones last, by name.
func PhaseNames(stats map[string]PhaseStats) []string {
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

// BeforeReady returns the largest and the smallest bytes any VM fetched
// before it was ready, over the VMs that report it.
func (r *Result) BeforeReady() (most, least int64) {
	for _, v := range r.Reports {
		if v.BytesBeforeReady <= 0 {
			continue
		}
		most = max(most, v.BytesBeforeReady)
		if least == 0 || v.BytesBeforeReady < least {
			least = v.BytesBeforeReady
		}
	}
	return most, least
}

// FractionBeforeReady is the most any VM fetched before it was ready, as a
// share of the image; 0 without an image.
func (r *Result) FractionBeforeReady() float64 {
	most, _ := r.BeforeReady()
	if r.ImageBytes <= 0 {
		return 0
	}
	return float64(most) / float64(r.ImageBytes)
}

// CPUBusy is the share of all cores above which a run counts as CPU-bound.
const CPUBusy = 0.8

// CPUWarning explains a run during which the CPUs were nearly all busy, by
// this process (ours) or by others (machine): then the CPU, not the
// emulated links, may have set the pace, and the efficiency is a floor.
// It is "" for a run that was not CPU-bound.
func CPUWarning(ours, machine float64) string {
	if ours < CPUBusy && machine < CPUBusy {
		return ""
	}
	who := "this process"
	if ours < machine-ours {
		who = "other processes"
	}
	return fmt.Sprintf("the %d CPUs were %.0f%% busy (this process %.0f%%, so mostly %s): the CPU, not the emulated links, may have limited it, and its efficiency is a floor",
		runtime.NumCPU(), 100*max(ours, machine), 100*ours, who)
}

// DescribeFunction says what a harness with a Function runs.
func (h *Harness) DescribeFunction() string {
	lz, plain := h.images[0], h.plain[0]
	return fmt.Sprintf("the Python function: %s (%s plain in %d layers, %s as eStargz)",
		plain.Repository, units.FormatBytes(plain.Bytes()), len(plain.Layers), units.FormatBytes(lz.Bytes()))
}
