// Package demo is the body of `faasnet demo`: the whole system in one
// process (package cluster), one function scaled onto every VM at once,
// shown live and summed up.
package demo

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/bound"
	"github.com/faasnet/faasnet/cluster"
	"github.com/faasnet/faasnet/progress"
	"github.com/faasnet/faasnet/report"
	"github.com/faasnet/faasnet/treeview"
	"github.com/faasnet/faasnet/units"
)

// Config configures Run. Defaults holds the values the demo runs with when
// the user gives no flags.
type Config struct {
	VMs               int
	ImageSize         int64
	Layers            int
	Bandwidth         int64 // per VM, up and down, bytes/s; 0 unlimited
	RegistryBandwidth int64 // bytes/s; 0 unlimited
	BlockSize         int64 // 0: the worker's default
	// Timeout bounds provisioning; VMs not ready by then fail the demo.
	Timeout time.Duration
	// JSON, if set, is the file the summary is written to.
	JSON string
	// Out receives progress and the summary; Live redraws progress in
	// place (Out is a terminal).
	Out  io.Writer
	Live bool
	// Dir holds the VMs' caches (in a fresh directory, removed after);
	// default os.TempDir().
	Dir string
	// Lazy runs the Python function (cluster.PythonFunction) instead of a
	// generated image: converted to eStargz, its container started with
	// runc on every VM over a lazy mount; a VM is ready when the container
	// answers. ImageSize and Layers are then ignored. Needs root, runc and
	// /dev/fuse (cluster.CheckContainers), and debootstrap the first time.
	Lazy bool
	// RunDir holds the containers' bundles and mounts with Lazy (in a
	// fresh directory, removed after); default os.TempDir().
	RunDir string
	// CompareSandbox, with Lazy, runs the scale-out four times, the
	// containers' sandbox off (host network, host root) and on in turn
	// (off, on, off, on: neither side gets all the warm caches), and prints
	// what the sandbox added to each step of a container's start.
	CompareSandbox bool
	// UI prints the manager's live view address before the scale-out and
	// keeps the cluster up after the summary until ctx ends (Ctrl-C).
	UI     bool
	Logger *slog.Logger
}

// Defaults are chosen so that the demo shows the tree's benefit and
// ends in about 10 s on a busy 2-core machine: 16 VMs receive a 150 MiB
// image in 6 layers; each VM sends and receives at most 32 MiB/s, so down
// the binary tree the image flows at 16 MiB/s (a VM's uplink is shared by
// its two children), about 10 s, where every VM pulling it from the
// registry's 32 MiB/s would take at least 75 s. Faster links make the
// demo CPU-bound on such a machine (16 VMs move 2.4 GB in all).
var Defaults = Config{
	VMs:               16,
	ImageSize:         150 << 20,
	Layers:            6,
	Bandwidth:         32 << 20,
	RegistryBandwidth: 32 << 20,
	Timeout:           90 * time.Second,
}

// LazyVMs is the demo's default VM count with Lazy: the same as
// without. Measured on a busy 2-core machine with the default links, all
// 16 Python containers answer within about 4.5 s of the scale request (the
// whole demo, image from the caches, takes about 10 s); 32 take 11 to
// 14 s, the CPU being the limit (every VM parses the image's tables of
// contents and starts Python on the same two cores).
const LazyVMs = 16

// Summary is the demo's outcome, the JSON summary. The first six field
// names are a contract (issue 4).
type Summary struct {
	VMs                 int     `json:"vms"`
	Ready               int     `json:"ready"` // VMs ready with every blob correct
	ImageBytes          int64   `json:"image_bytes"`
	RegistryEgressBytes int64   `json:"registry_egress_bytes"`
	FirstReadyS         float64 `json:"first_ready_s"`
	LastReadyS          float64 `json:"last_ready_s"`

	VMReceivedBytes    int64    `json:"vm_received_bytes"`
	LowerBoundS        float64  `json:"lower_bound_s"`
	Efficiency         float64  `json:"efficiency"`
	RegistryPullBoundS float64  `json:"registry_pull_bound_s"` // the least time all VMs pulling from the registry would need
	Height             int      `json:"tree_height"`
	Failed             []string `json:"failed,omitempty"`

	// Lazy says the VMs started the Python function's container over a
	// lazy mount of its eStargz image, and were ready when it answered.
	Lazy bool `json:"lazy,omitempty"`
	// BytesFetchedBeforeReady is the most any VM fetched until it was
	// ready: with Lazy, what its container read to answer (and what its
	// children asked for meanwhile); without, the whole image.
	BytesFetchedBeforeReady int64 `json:"bytes_fetched_before_ready"`
	// FractionBeforeReady is BytesFetchedBeforeReady of ImageBytes.
	FractionBeforeReady float64 `json:"fraction_fetched_before_ready"`
	// Phases is the distribution over the VMs of the time, from the scale
	// request, each phase was reached: assigned, manifest, with Lazy mount
	// and started, and ready.
	Phases map[string]cluster.PhaseStats `json:"phases"`
	// VMPhases are the same per VM.
	VMPhases []VMPhases `json:"vm_phases"`
	// WithoutSandbox are the same scale-out's runs with the containers'
	// sandbox off, and EarlierSandboxed its other runs with it on
	// (Config.CompareSandbox).
	WithoutSandbox   []Summary `json:"without_sandbox,omitempty"`
	EarlierSandboxed []Summary `json:"earlier_sandboxed,omitempty"`
}

// VMPhases is one VM's line of Summary.VMPhases.
type VMPhases struct {
	VM string `json:"vm"`
	// PhasesS maps each phase the VM reached to its time, in seconds from
	// the scale request.
	PhasesS                 map[string]float64 `json:"phases_s"`
	BytesFetchedBeforeReady int64              `json:"bytes_fetched_before_ready"`
}

// Run runs the whole system in this process: a registry holding a
// generated image (with cfg.Lazy, the Python function's image and its
// eStargz conversion), a manager and cfg.VMs workers with their bandwidth
// limits; it scales one function onto all of them at once, shows progress,
// and ends with a summary. It returns an error if any VM did not end with
// the image complete and correct (with Lazy: its container answering); the
// summary is written first.
func Run(ctx context.Context, cfg Config) (Summary, error) {
	out := cfg.Out
	if out == nil {
		out = io.Discard
	}
	h, err := demoHarness(ctx, cfg, out)
	if err != nil {
		return Summary{}, err
	}
	defer h.Close()
	if cfg.Lazy {
		fmt.Fprintf(out, "starting a manager (the cluster CA, a throwaway one) and %d workers, which enroll and speak mutual TLS as in production; scaling the function onto all of them at once: each VM mounts the image lazily and starts its container with runc\n\n", cfg.VMs)
	} else {
		fmt.Fprintf(out, "starting a manager (the cluster CA, a throwaway one) and %d workers, which enroll and speak mutual TLS as in production; scaling the function onto all of them at once\n\n", cfg.VMs)
	}

	view := &progress.Progress{W: out, Live: cfg.Live}
	var sum Summary
	written := false
	finish := func(res *cluster.Result) {
		sum = summarize(res, cfg, imageBytes(h))
		fmt.Fprintln(out)
		writeSummary(out, res, sum)
		written = true
	}
	opts := cluster.RunOptions{Progress: view.Update, Timeout: cfg.Timeout}
	if cfg.UI {
		var cp cluster.ControlPlane
		opts.OnDeploy = func(c cluster.ControlPlane) { cp = c; announceUI(out, c) }
		opts.Hold = func(ctx context.Context, res *cluster.Result) {
			finish(res)
			fmt.Fprintln(out, "\nthe cluster stays up for the live view")
			if err := runScript(ctx, out, cp, "fn-0"); err != nil {
				fmt.Fprintf(out, "the script stopped: %v\n", err)
			}
			<-ctx.Done()
		}
	}
	var offs, ons []Summary
	if cfg.CompareSandbox && cfg.Lazy {
		for i, off := range []bool{true, false, true} {
			what := "with the sandbox: a network and a user namespace per container"
			if off {
				what = "with the sandbox off: containers on the host's network, as the host's root"
			}
			fmt.Fprintf(out, "run %d of 4, %s\n", i+1, what)
			r, err := h.Run(ctx, cluster.Faasnet{}, cfg.VMs, cluster.RunOptions{Timeout: cfg.Timeout, NoSandbox: off})
			if err != nil {
				return Summary{}, fmt.Errorf("demo, run %d of 4: %w", i+1, err)
			}
			s := summarize(r, cfg, imageBytes(h))
			writePhases(out, s.Phases)
			if off {
				offs = append(offs, s)
			} else {
				ons = append(ons, s)
			}
		}
		fmt.Fprintln(out, "\nrun 4 of 4, with the sandbox, as always")
	}
	res, err := h.Run(ctx, cluster.Faasnet{}, cfg.VMs, opts)
	if err != nil && !(cfg.UI && written) {
		return Summary{}, err
	}
	if !written {
		finish(res)
	}
	if len(offs) > 0 {
		sum.WithoutSandbox, sum.EarlierSandboxed = offs, ons
		writeSandboxCost(out, offs, append(ons, sum))
	}
	if cfg.JSON != "" {
		if err := report.WriteJSON(cfg.JSON, sum); err != nil {
			return sum, err
		}
	}
	if len(sum.Failed) > 0 {
		return sum, fmt.Errorf("%d of %d VMs did not end with a correct image: %s", len(sum.Failed), sum.VMs, strings.Join(sum.Failed, "; "))
	}
	return sum, nil
}

// announceUI tells where the live view is and how to get in.
func announceUI(out io.Writer, cp cluster.ControlPlane) {
	fmt.Fprintf(out, "live view: %s/ui/\n  sign in with the admin token: %s\n  the page is served with a certificate of this demo's throwaway CA (%s): let the browser accept it\n  from another machine: ssh -L PORT:127.0.0.1:PORT to this one, then open https://127.0.0.1:PORT/ui/\n\n",
		cp.URL, cp.AdminTokenFile, cp.CAFile)
}

// demoHarness starts the registry with the demo's image: generated, or
// with Lazy the Python function and its conversion.
func demoHarness(ctx context.Context, cfg Config, out io.Writer) (*cluster.Harness, error) {
	sc := cluster.Scenario{
		ImageSize: cfg.ImageSize, Layers: cfg.Layers, Bandwidth: cfg.Bandwidth,
		RegistryBandwidth: cfg.RegistryBandwidth, BlockSize: cfg.BlockSize, Seed: 1,
	}
	opts := cluster.Options{Dir: cfg.Dir, RunDir: cfg.RunDir, Logger: cfg.Logger}
	start := time.Now()
	if !cfg.Lazy {
		fmt.Fprintf(out, "faasnet demo: %d VMs, an image of %s in %d layers, each VM %s up and down, registry %s\n",
			cfg.VMs, units.FormatBytes(cfg.ImageSize), cfg.Layers, units.FormatRate(cfg.Bandwidth), units.FormatRate(cfg.RegistryBandwidth))
		h, err := cluster.New(ctx, sc, opts)
		if err != nil {
			return nil, err
		}
		im := h.Images()[0]
		fmt.Fprintf(out, "registry on %s holds %s (%s in %d layers), generated and pushed in %s\n",
			h.Registry().Addr(), im.Ref, units.FormatBytes(im.Bytes()), len(im.Layers), seconds(time.Since(start)))
		return h, nil
	}
	fmt.Fprintf(out, "faasnet demo --lazy: %d VMs start the Python function's container, each VM %s up and down, registry %s\n",
		cfg.VMs, units.FormatRate(cfg.Bandwidth), units.FormatRate(cfg.RegistryBandwidth))
	fn, err := cluster.PythonFunction(ctx, out)
	if err != nil {
		return nil, fmt.Errorf("demo --lazy: %w", err)
	}
	opts.Function = fn
	h, err := cluster.New(ctx, sc, opts)
	if err != nil {
		return nil, fmt.Errorf("demo --lazy: %w", err)
	}
	fmt.Fprintf(out, "registry on %s holds %s, ready in %s\n", h.Registry().Addr(), h.DescribeFunction(), seconds(time.Since(start)))
	return h, nil
}

// imageBytes is what a full pull of the demo's image moves: the plain
// image with Lazy.
func imageBytes(h *cluster.Harness) int64 {
	if p := h.PlainImages(); len(p) > 0 {
		return p[0].Bytes()
	}
	return h.ImageBytes()
}

// summarize makes the summary of res; fullPull is the bytes a VM pulling
// the whole image from the registry receives.
func summarize(res *cluster.Result, cfg Config, fullPull int64) Summary {
	s := Summary{
		VMs: res.VMs, ImageBytes: res.ImageBytes, RegistryEgressBytes: res.RegistryEgress,
		FirstReadyS: res.FirstReady.Seconds(), LastReadyS: res.Makespan.Seconds(),
		VMReceivedBytes: res.Received, LowerBoundS: res.LowerBound.Seconds(), Efficiency: res.Efficiency,
		Lazy: res.Containers, Phases: res.PhaseStats(), VMPhases: []VMPhases{},
	}
	s.BytesFetchedBeforeReady, _ = res.BeforeReady()
	s.FractionBeforeReady = res.FractionBeforeReady()
	for i, r := range res.Reports {
		s.VMPhases = append(s.VMPhases, VMPhases{VM: r.VM, PhasesS: phaseSeconds(res.Phases[i]), BytesFetchedBeforeReady: r.BytesBeforeReady})
	}
	for _, r := range res.Reports {
		if r.Correct && !r.Ready.IsZero() {
			s.Ready++
		} else {
			s.Failed = append(s.Failed, fmt.Sprintf("%s: %s", r.VM, r.Err))
		}
	}
	if len(res.Trees) > 0 {
		s.Height = res.Trees[0].Height
	}
	// Every VM pulling alone from the registry: the registry sends the
	// image once per VM, and each VM receives at its download rate.
	pull := bound.Delivery{
		Bytes: float64(fullPull), VMs: res.VMs, NoUploads: true,
		Down: float64(cfg.Bandwidth), Registry: float64(cfg.RegistryBandwidth),
	}
	s.RegistryPullBoundS = pull.Seconds()
	return s
}

func writeSummary(w io.Writer, res *cluster.Result, s Summary) {
	byVM := map[string]cluster.VMReport{}
	ready := map[string]time.Duration{}
	for i, r := range res.Reports {
		byVM[r.VM] = r
		ready[r.VM] = res.Ready[i]
	}
	if len(res.Trees) > 0 {
		fmt.Fprintln(w, "The function tree, with the time each VM was ready after the scale request:")
		treeview.Draw(w, res.Trees[0], func(n api.TreeNode) string {
			r := byVM[n.VM]
			label := "not ready"
			if d := ready[n.VM]; d >= 0 {
				label = "ready " + seconds(d)
			}
			switch {
			case !r.Correct:
				label += ", WRONG: " + r.Err
			case res.Containers:
				label += fmt.Sprintf(", container answered after fetching %s", units.FormatBytes(r.BytesBeforeReady))
				if n.Parent == nil {
					label += " from the registry"
				}
			case n.Parent == nil:
				label += fmt.Sprintf(", %s from the registry", units.FormatBytes(r.FromRegistry))
			}
			if r.Uploaded > 0 {
				label += fmt.Sprintf(", sent %s", units.FormatBytes(r.Uploaded))
			}
			return label
		})
		fmt.Fprintln(w)
	}
	what := "ready and verified"
	if s.Lazy {
		what = "with their container answering"
	}
	fmt.Fprintf(w, "first VM ready after %.2fs, last after %.2fs (%d of %d VMs %s)\n",
		s.FirstReadyS, s.LastReadyS, s.Ready, s.VMs, what)
	if s.Lazy {
		fmt.Fprintf(w, "each VM fetched at most %s before its container answered: %.1f%% of the %s image\n",
			units.FormatBytes(s.BytesFetchedBeforeReady), 100*s.FractionBeforeReady, units.FormatBytes(s.ImageBytes))
	}
	writePhases(w, s.Phases)
	ratio := 0.0
	if s.RegistryEgressBytes > 0 {
		ratio = float64(s.VMReceivedBytes) / float64(s.RegistryEgressBytes)
	}
	fmt.Fprintf(w, "the registry served %s; the VMs received %s together (%.1fx what the registry sent)\n",
		units.FormatBytes(s.RegistryEgressBytes), units.FormatBytes(s.VMReceivedBytes), ratio)
	if s.Lazy {
		fmt.Fprintf(w, "lower bound for receiving the least any VM fetched before it was ready %.2fs (container start-up left out; efficiency %.2f); every VM pulling the whole image from the registry would need at least %.1fs, before unpacking it\n",
			s.LowerBoundS, s.Efficiency, s.RegistryPullBoundS)
	} else {
		fmt.Fprintf(w, "lower bound for any strategy here %.2fs (efficiency %.2f); every VM pulling from the registry would need at least %.1fs\n",
			s.LowerBoundS, s.Efficiency, s.RegistryPullBoundS)
	}
	if msg := cluster.CPUWarning(res.CPU, res.MachineCPU); msg != "" {
		fmt.Fprintf(w, "note: %s\n", msg)
	}
}

// writePhases writes the phases' distribution as a small table.
func writePhases(w io.Writer, stats map[string]cluster.PhaseStats) {
	if len(stats) == 0 {
		return
	}
	fmt.Fprintf(w, "  %-9s %8s %8s %8s  (seconds after the scale request, over the VMs)\n", "phase", "first", "median", "last")
	for _, k := range cluster.PhaseNames(stats) {
		s := stats[k]
		fmt.Fprintf(w, "  %-9s %8.2f %8.2f %8.2f\n", k, s.FirstS, s.MedianS, s.LastS)
	}
}

// writeSandboxCost compares the runs without the sandbox and with it: what
// the namespaces' setup adds to a container's start. The steps are per VM,
// pooled over the runs of each side: from the mounted root filesystem to a
// running process (runc, and with the sandbox the user and network
// namespaces, the veth and the rules), and from there to the first answer.
func writeSandboxCost(w io.Writer, offs, ons []Summary) {
	fmt.Fprintf(w, "\nwhat the sandbox adds (runs alternating off, on, off, on on the same machine):\n")
	fmt.Fprintf(w, "  %-22s %12s %12s %10s %7s\n", "step, median over VMs", "off", "on", "on - off", "on/off")
	for _, step := range [][2]string{{"mount", "started"}, {"started", "ready"}, {"assigned", "ready"}} {
		a, b := medianStep(offs, step[0], step[1]), medianStep(ons, step[0], step[1])
		if a > 0 && b > 0 {
			fmt.Fprintf(w, "  %-22s %11.3fs %11.3fs %+9.3fs %6.2fx\n", step[0]+" to "+step[1], a, b, b-a, b/a)
		}
	}
	var line []string
	for i := range max(len(offs), len(ons)) {
		if i < len(offs) {
			line = append(line, fmt.Sprintf("off %.2fs", offs[i].LastReadyS))
		}
		if i < len(ons) {
			line = append(line, fmt.Sprintf("on %.2fs", ons[i].LastReadyS))
		}
	}
	fmt.Fprintf(w, "  last VM ready, run by run: %s\n", strings.Join(line, ", "))
}

// medianStep is the median over the runs' VMs of the time from phase a to
// phase b.
func medianStep(runs []Summary, a, b string) float64 {
	var d []float64
	for _, s := range runs {
		for _, v := range s.VMPhases {
			ta, oka := v.PhasesS[a]
			tb, okb := v.PhasesS[b]
			if oka && okb {
				d = append(d, tb-ta)
			}
		}
	}
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	return d[len(d)/2]
}

// phaseSeconds converts a VM's phases to seconds.
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

// seconds formats d for people.
func seconds(d time.Duration) string { return fmt.Sprintf("%.2fs", d.Seconds()) }
