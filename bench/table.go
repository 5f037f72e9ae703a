// Package bench is the body of `faasnet bench`: it runs every strategy of
// the emulated cluster (package cluster) on the same images and limits at
// each VM count, and reports the runs as a table, a JSON document and a
// plot.
package bench

import (
	"fmt"
	"io"
	"runtime"
	"strings"
	"text/tabwriter"

	"github.com/faasnet/faasnet/cluster"
	"github.com/faasnet/faasnet/units"
)

// Row is one strategy at one VM count: an entry of the JSON results. The
// field names are a contract (issue 4).
type Row struct {
	Strategy            string  `json:"strategy"`
	VMs                 int     `json:"vms"`
	MakespanS           float64 `json:"makespan_s"`
	P50S                float64 `json:"p50_s"`
	P90S                float64 `json:"p90_s"`
	P99S                float64 `json:"p99_s"`
	RegistryEgressBytes int64   `json:"registry_egress_bytes"`
	MaxVMUploadBytes    int64   `json:"max_vm_upload_bytes"`
	// Stripes is the faasnet strategies' number of stripe trees per
	// function (0 for the others); BlockSize the block faasnet's VMs cut
	// blobs into.
	Stripes     int     `json:"stripes,omitempty"`
	BlockSize   int64   `json:"block_size"`
	LowerBoundS float64 `json:"lower_bound_s"`
	Efficiency  float64 `json:"efficiency"`

	FirstReadyS     float64 `json:"first_ready_s"`
	ImageBytes      int64   `json:"image_bytes"`
	VMReceivedBytes int64   `json:"vm_received_bytes"`
	FailedVMs       int     `json:"failed_vms"`
	CPUUtilization  float64 `json:"cpu_utilization"`         // this process, share of all cores
	MachineCPU      float64 `json:"machine_cpu_utilization"` // the whole machine, other processes too
	Error           string  `json:"error,omitempty"`
	// VMErrors are the first few failed VMs' errors.
	VMErrors []string `json:"vm_errors,omitempty"`
	// ReadyS are the VMs' ready times, for CDFs; -1 for a VM that never
	// became ready.
	ReadyS []float64 `json:"ready_s"`

	// Containers says the VMs started the function's container and were
	// ready when it answered (bench --lazy).
	Containers bool `json:"containers,omitempty"`
	// BytesBeforeReadyMax and Min are the most and the least any VM
	// fetched until it was ready; 0 for strategies that do not count it.
	BytesBeforeReadyMax int64 `json:"bytes_before_ready_max,omitempty"`
	BytesBeforeReadyMin int64 `json:"bytes_before_ready_min,omitempty"`
	// FractionBeforeReady is BytesBeforeReadyMax of ImageBytes.
	FractionBeforeReady float64 `json:"fraction_before_ready,omitempty"`
	// Phases is the distribution over the VMs of the time, from the scale
	// request, each phase was reached; for strategies with workers.
	Phases map[string]cluster.PhaseStats `json:"phases,omitempty"`
	// Mode is "replay" when the VMs replayed the container's recorded
	// reads instead of starting it (bench --replay-reads), else empty.
	Mode string `json:"mode,omitempty"`
}

// label names the row's strategy and mode in tables.
func (r Row) label() string {
	if r.Mode == "" {
		return r.Strategy
	}
	return r.Strategy + "/" + r.Mode
}

// maxVMErrors is how many failed VMs' errors a row keeps.
const maxVMErrors = 3

// RowOf summarizes a result.
func RowOf(r *cluster.Result) Row {
	row := Row{
		Strategy: r.Strategy, VMs: r.VMs,
		MakespanS: r.Makespan.Seconds(), P50S: r.P50.Seconds(), P90S: r.P90.Seconds(), P99S: r.P99.Seconds(),
		RegistryEgressBytes: r.RegistryEgress, MaxVMUploadBytes: r.MaxVMUpload,
		LowerBoundS: r.LowerBound.Seconds(), Efficiency: r.Efficiency,
		FirstReadyS: r.FirstReady.Seconds(), ImageBytes: r.ImageBytes, VMReceivedBytes: r.Received,
		FailedVMs: r.Failed, CPUUtilization: r.CPU, MachineCPU: r.MachineCPU, Error: r.Err,
		Containers: r.Containers, Phases: r.PhaseStats(),
	}
	if r.Replayed {
		row.Mode = ModeReplay
	}
	row.BytesBeforeReadyMax, row.BytesBeforeReadyMin = r.BeforeReady()
	row.FractionBeforeReady = r.FractionBeforeReady()
	for _, v := range r.Reports {
		if !v.Correct && len(row.VMErrors) < maxVMErrors {
			row.VMErrors = append(row.VMErrors, v.VM+": "+v.Err)
		}
	}
	for _, d := range r.Ready {
		s := -1.0
		if d >= 0 {
			s = d.Seconds()
		}
		row.ReadyS = append(row.ReadyS, s)
	}
	return row
}

// Scenario is the JSON description of a benchmark's scenario.
type Scenario struct {
	VMs                    []int    `json:"vms"`
	Strategies             []string `json:"strategies"`
	ImageSizeBytes         int64    `json:"image_size_bytes"`
	ImageBytes             int64    `json:"image_bytes"` // all images, manifests included: what each VM receives
	Layers                 int      `json:"layers"`
	Functions              int      `json:"functions"`
	BandwidthBytesPerS     int64    `json:"bandwidth_bytes_per_s"`
	RegistryBandwidthBPerS int64    `json:"registry_bandwidth_bytes_per_s"`
	BlockSizeBytes         int64    `json:"block_size_bytes"`
	PieceSizeBytes         int64    `json:"piece_size_bytes"`
	CPUs                   int      `json:"cpus"`
	Command                string   `json:"command,omitempty"`
	// Lazy says the runs started the Python function's container (bench
	// --lazy): ImageBytes is then its eStargz conversion, PlainImageBytes
	// the image as built, which registry pulls.
	Lazy            bool  `json:"lazy,omitempty"`
	PlainImageBytes int64 `json:"plain_image_bytes,omitempty"`
	// ReplayedReads and ReplayedBytes are the recorded reads that replay
	// rows replayed (bench --replay-reads).
	ReplayedReads int   `json:"replayed_reads,omitempty"`
	ReplayedBytes int64 `json:"replayed_bytes,omitempty"`
}

// Doc is the JSON document of a benchmark run.
type Doc struct {
	Scenario Scenario `json:"scenario"`
	Results  []Row    `json:"results"`
}

// WriteTable writes rows as an aligned table, followed by the speed-ups of
// faasnet over the other strategies measured at the same VM count.
func WriteTable(w io.Writer, rows []Row) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "strategy\tVMs\tmakespan\tp50\tp90\tp99\tregistry egress\tbusiest upload\tlower bound\tefficiency\tCPU us/all\t")
	for _, r := range rows {
		makespan := secs(r.MakespanS)
		if r.FailedVMs > 0 {
			makespan = fmt.Sprintf("FAILED %d", r.FailedVMs)
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.2f\t%.0f%%/%.0f%%\t\n", r.label(), r.VMs, makespan,
			secs(r.P50S), secs(r.P90S), secs(r.P99S), units.FormatBytes(r.RegistryEgressBytes),
			units.FormatBytes(r.MaxVMUploadBytes), secs(r.LowerBoundS), r.Efficiency, 100*r.CPUUtilization, 100*r.MachineCPU)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if err := writeContainerTable(w, rows); err != nil {
		return err
	}
	for _, s := range Speedups(rows) {
		fmt.Fprintln(w, s)
	}
	for _, s := range Agreement(rows) {
		fmt.Fprintln(w, s)
	}
	return nil
}

// Agreement compares, for each strategy and VM count measured in both
// modes, the replay of the recorded reads with the real containers: the
// replay leaves out the containers' CPU, so it is expected to be as fast
// or faster, by about the time one container needs once its data is there.
func Agreement(rows []Row) []string {
	var out []string
	for _, c := range rows {
		if !c.Containers || c.Mode != ModeContainer || c.FailedVMs > 0 || c.MakespanS <= 0 {
			continue
		}
		for _, r := range rows {
			if r.Mode != ModeReplay || r.Strategy != c.Strategy || r.VMs != c.VMs || r.FailedVMs > 0 || r.MakespanS <= 0 {
				continue
			}
			out = append(out, fmt.Sprintf("%s at %d VMs: replay/containers makespan %.2f (%.2fs / %.2fs), p50 %.2f (%.2fs / %.2fs)",
				c.Strategy, c.VMs, r.MakespanS/c.MakespanS, r.MakespanS, c.MakespanS, ratio(r.P50S, c.P50S), r.P50S, c.P50S))
		}
	}
	return out
}

func ratio(a, b float64) float64 {
	if b <= 0 {
		return 0
	}
	return a / b
}

// writeContainerTable writes, for the rows whose VMs ran containers, what
// each fetched before its container answered and the median time of each
// phase; nothing if there are none.
func writeContainerTable(w io.Writer, rows []Row) error {
	all := map[string]cluster.PhaseStats{}
	found := false
	for _, r := range rows {
		if r.Containers {
			found = true
			for k, v := range r.Phases {
				all[k] = v
			}
		}
	}
	if !found {
		return nil
	}
	phases := cluster.PhaseNames(all)
	fmt.Fprintln(w, "\ncontainers: bytes fetched before the container answered (most of any VM, share of the image), and the median time of each phase after the scale request")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "strategy\tVMs\tfetched before ready\tof image\t%s\t\n", strings.Join(phases, "\t"))
	for _, r := range rows {
		if !r.Containers {
			continue
		}
		cells := []string{r.label(), fmt.Sprint(r.VMs), units.FormatBytes(r.BytesBeforeReadyMax), fmt.Sprintf("%.1f%%", 100*r.FractionBeforeReady)}
		for _, p := range phases {
			cell := "-"
			if st, ok := r.Phases[p]; ok {
				cell = secs(st.MedianS)
			}
			cells = append(cells, cell)
		}
		fmt.Fprintf(tw, "%s\t\n", strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

func secs(s float64) string { return fmt.Sprintf("%.2fs", s) }

// Speedups compares faasnet with every other strategy at each VM count:
// ratios measured side by side in one run.
func Speedups(rows []Row) []string {
	var out []string
	for _, f := range rows {
		if f.Strategy != "faasnet" || f.FailedVMs > 0 || f.MakespanS <= 0 {
			continue
		}
		var parts []string
		for _, o := range rows {
			if o.VMs != f.VMs || o.Mode != f.Mode || o.Strategy == "faasnet" || o.FailedVMs > 0 || o.MakespanS <= 0 {
				continue
			}
			if o.Strategy == "faasnet-plaintext" {
				out = append(out, fmt.Sprintf("faasnet at %d VMs: TLS costs %+.1f%% makespan (over TLS %.2fs, plaintext %.2fs, side by side)",
					f.VMs, 100*(f.MakespanS/o.MakespanS-1), f.MakespanS, o.MakespanS))
				continue
			}
			parts = append(parts, fmt.Sprintf("%.1fx vs %s", o.MakespanS/f.MakespanS, o.Strategy))
		}
		if len(parts) > 0 {
			out = append(out, fmt.Sprintf("%s at %d VMs: %s (makespan ratio)", f.label(), f.VMs, strings.Join(parts, ", ")))
		}
	}
	return out
}

// Warnings explains the rows whose numbers the machine, not the emulated
// network, may have set: one warning per run during which this process
// used most of the CPUs, and one note if other processes kept the CPUs
// busy (timers then wake late and limited streams run below their rate,
// so makespans are, if anything, too long).
func Warnings(rows []Row) []string {
	var out []string
	busy, worst, ours := 0, 0.0, 0.0
	for _, r := range rows {
		if r.CPUUtilization >= cluster.CPUBusy {
			out = append(out, fmt.Sprintf("warning: %s at %d VMs: %s", r.label(), r.VMs, cluster.CPUWarning(r.CPUUtilization, r.MachineCPU)))
		} else if r.MachineCPU >= cluster.CPUBusy {
			busy++
			worst, ours = max(worst, r.MachineCPU), max(ours, r.CPUUtilization)
		}
		if r.Error != "" {
			out = append(out, fmt.Sprintf("warning: %s at %d VMs: %s", r.Strategy, r.VMs, r.Error))
		}
		if r.FailedVMs > 0 {
			out = append(out, fmt.Sprintf("warning: %s at %d VMs: %d VMs failed, for example %s", r.Strategy, r.VMs, r.FailedVMs, strings.Join(r.VMErrors, "; ")))
		}
	}
	if busy > 0 {
		out = append(out, fmt.Sprintf("note: during %d of %d runs other processes kept the %d CPUs up to %.0f%% busy (this process used at most %.0f%%): timers may have woken late, so limited links may have run below their rates and those makespans are, if anything, too long",
			busy, len(rows), runtime.NumCPU(), 100*worst, 100*ours))
	}
	return out
}
