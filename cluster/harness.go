package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/bound"
	"github.com/faasnet/faasnet/imagegen"
	"github.com/faasnet/faasnet/lazy"
)

// Options configures a Harness.
type Options struct {
	// Dir is where runs keep their VMs' caches, each run in a fresh
	// directory removed afterwards; default /dev/shm where it exists and
	// has room (on Linux), else os.TempDir().
	Dir string
	// Logger receives the components' logs; nil discards them.
	Logger *slog.Logger
	// OnEgress is passed to the registry (RegistryOptions.OnEgress).
	OnEgress func(n int)
	// Function, if set, replaces the scenario's generated images (its
	// ImageSize, Layers and Functions are then ignored): runs start the
	// function's container on every VM; see Function.
	Function *Function
	// RunDir is where runs with a Function keep their containers' bundles,
	// mounts and unpacked root file systems, each run in a fresh directory
	// removed afterwards; default os.TempDir(). A disk, not memory: a VM
	// unpacks an image to its disk.
	RunDir string
}

// Harness is a registry holding a scenario's images, ready for runs of any
// strategy on any number of VMs. Runs must not overlap: they share the
// registry and its egress count.
type Harness struct {
	sc     Scenario
	reg    *Registry
	images []Image
	plain  []Image         // with a Function: its image before conversion
	spec   json.RawMessage // with a Function: its definition
	dir    string
	runDir string
	log    *slog.Logger
}

// New starts the registry and pushes the scenario's images, one per
// function, or the Function's image and its eStargz conversion.
func New(ctx context.Context, sc Scenario, opts Options) (*Harness, error) {
	fn := opts.Function
	var spec json.RawMessage
	if fn != nil {
		var err error
		if spec, err = fn.spec(); err != nil {
			return nil, err
		}
		sc.ImageSize, sc.Layers, sc.Functions = 0, 1, 1
	}
	if err := sc.defaults(fn == nil); err != nil {
		return nil, err
	}
	h := &Harness{sc: sc, dir: opts.Dir, runDir: opts.RunDir, spec: spec, log: opts.Logger}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	reg, err := StartRegistry(RegistryOptions{Egress: sc.RegistryBandwidth, OnEgress: opts.OnEgress})
	if err != nil {
		return nil, err
	}
	h.reg = reg
	if fn != nil {
		plain, converted, err := reg.pushFunction(ctx, fn, "bench/fn-0")
		if err != nil {
			reg.Close()
			return nil, err
		}
		h.images, h.plain = []Image{converted}, []Image{plain}
		h.sc.ImageSize, h.sc.Layers = converted.Bytes(), len(converted.Layers)
		return h, nil
	}
	for i := range sc.Functions {
		spec := imagegen.Spec{TotalSize: sc.ImageSize, Layers: sc.Layers, Seed: sc.Seed + int64(i)}
		im, err := reg.Push(ctx, spec, fmt.Sprintf("bench/fn-%d", i), "v1")
		if err != nil {
			reg.Close()
			return nil, err
		}
		h.images = append(h.images, im)
	}
	return h, nil
}

// Scenario returns the scenario, defaults filled in.
func (h *Harness) Scenario() Scenario { return h.sc }

// Images returns the pushed images, one per function; with a Function, its
// eStargz conversion.
func (h *Harness) Images() []Image { return h.images }

// PlainImages returns the Function's image before conversion, or nil
// without a Function.
func (h *Harness) PlainImages() []Image { return h.plain }

// Containers reports whether runs start a Function's containers.
func (h *Harness) Containers() bool { return h.spec != nil }

// ImageBytes is what each VM receives: all images.
func (h *Harness) ImageBytes() int64 {
	var n int64
	for _, im := range h.images {
		n += im.Bytes()
	}
	return n
}

// Registry returns the registry.
func (h *Harness) Registry() *Registry { return h.reg }

// Close stops the registry.
func (h *Harness) Close() error { return h.reg.Close() }

// RunOptions configures one run.
type RunOptions struct {
	// Progress, if set, is called every Interval while provisioning runs,
	// and once when it ended, with the time since provisioning started.
	Progress func(elapsed time.Duration, s Snapshot)
	// Interval defaults to 250 ms.
	Interval time.Duration
	// Timeout bounds provisioning; VMs not ready by then count as failed.
	// 0 means no bound but ctx.
	Timeout time.Duration
	// OnDeploy, if set, is called once the VMs are deployed, before
	// provisioning, with where their control plane answers (strategies
	// with a manager; not called for the others).
	OnDeploy func(ControlPlane)
	// Hold, if set, is called with the result before the deployment is
	// closed: the VMs stay up until it returns (the demo's live view).
	Hold func(ctx context.Context, res *Result)
	// NoSandbox runs the containers on the host's network and as the
	// host's root, to measure what the sandbox costs.
	NoSandbox bool
	// Replay, with a Function, makes the VMs replay these reads (from
	// RecordReads) instead of starting its container: see Recording.
	Replay []lazy.BlobRead
	// record, with a Function, records what the containers read.
	record *recorder
}

// ControlPlane is where a deployment's manager answers and the files an
// operator needs to talk to it.
type ControlPlane struct {
	URL            string // https://HOST:PORT
	CAFile         string // the cluster CA certificate
	AdminTokenFile string
	Admin          *api.Client // a client with the admin token
	// Kill stops a VM's worker and removes the VM from the manager, as
	// its failure detector would.
	Kill func(ctx context.Context, vm string) error
}

// Result is the outcome of one run.
type Result struct {
	Strategy   string
	VMs        int
	ImageBytes int64 // what each VM had to receive
	Reports    []VMReport
	// Ready is each VM's ready time, from the start of provisioning, in
	// the order of Reports; -1 for a VM that never became ready.
	Ready []time.Duration
	// Makespan is the time from the start of provisioning (the scale
	// request) to the last VM ready; if some VM failed, the time until
	// provisioning ended.
	Makespan             time.Duration
	FirstReady           time.Duration
	P50, P90, P99        time.Duration // of the ready times of the VMs that became ready
	RegistryEgress       int64         // bytes the registry sent, counted at the registry
	MaxVMUpload          int64         // the busiest VM's upload bytes
	Received             int64         // image bytes all VMs received
	LowerBound           time.Duration // see package bound
	Efficiency           float64       // LowerBound / Makespan
	Wall                 time.Duration // provisioning, start to end
	CPU                  float64       // share of all cores the process used while provisioning; 0 if unknown
	MachineCPU           float64       // share of all cores busy machine-wide meanwhile (other processes too); 0 if unknown
	Failed               int           // VMs not ready or not correct
	Trees                []api.Tree    // for strategies that build trees
	BlockSize            int64         // the block faasnet's manager assigned; 0 for other strategies
	Err                  string        // why provisioning ended early, if it did
	CPUTime, CPUCapacity time.Duration
	// Containers says the VMs ran the Function's container: ready means
	// it answered.
	Containers bool
	// Replayed says the VMs replayed the container's recorded reads
	// instead (RunOptions.Replay): ready means the reads completed.
	Replayed bool
	// Phases are each VM's phases (VMReport.Phases) as times from the
	// start of provisioning, in the order of Reports.
	Phases []map[string]time.Duration
}

// Run deploys strategy s on vms fresh VMs, provisions every image onto all
// of them at once, and measures. A run that times out is a Result with
// failed VMs; only ctx ending, or the strategy failing to start, is an
// error.
func (h *Harness) Run(ctx context.Context, s Strategy, vms int, opts RunOptions) (*Result, error) {
	if vms <= 0 {
		return nil, fmt.Errorf("%s: %d VMs", s.Name(), vms)
	}
	parent := h.dir
	if parent == "" {
		// Twice the bytes: a swarm agent keeps pieces and the blob.
		if parent = ramDir(2 * int64(vms+1) * max(h.ImageBytes(), imageBytes(h.plain))); parent == "" {
			parent = os.TempDir()
		}
	}
	dir, err := os.MkdirTemp(parent, "faasnet-"+s.Name()+"-*")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	env := &Env{Registry: h.reg, Images: h.images, Plain: h.plain, VMs: makeVMs(vms), Scenario: h.sc, Dir: dir, Spec: h.spec, Logger: h.log,
		NoSandbox: opts.NoSandbox, Replay: opts.Replay, record: opts.record}
	if h.spec != nil {
		runParent := h.runDir
		if runParent == "" {
			runParent = os.TempDir()
		}
		if env.RunDir, err = os.MkdirTemp(runParent, "faasnet-run-"+s.Name()+"-*"); err != nil {
			return nil, err
		}
		// Searchable, not listable: the containers' users (a user
		// namespace's root is an unprivileged host uid) must reach their
		// root filesystems below it.
		if err := os.Chmod(env.RunDir, 0o711); err != nil {
			return nil, err
		}
		defer os.RemoveAll(env.RunDir)
	}
	blobs := 0
	for _, im := range h.images {
		blobs += 1 + len(im.Layers)
	}
	raiseOpenFiles(uint64(vms*blobs*40 + 4096))
	runtime.GC() // start every run with the same heap, not the previous run's garbage
	dep, err := s.Deploy(ctx, env)
	if err != nil {
		return nil, err
	}
	defer dep.Close()
	if cp, ok := dep.(interface{ controlPlane() (ControlPlane, bool) }); ok && opts.OnDeploy != nil {
		if c, ok := cp.controlPlane(); ok {
			opts.OnDeploy(c)
		}
	}

	pctx := ctx
	if opts.Timeout > 0 {
		var cancel context.CancelFunc
		pctx, cancel = context.WithTimeout(ctx, opts.Timeout)
		defer cancel()
	}
	h.reg.ResetEgress()
	cpu0, cpuOK := cpuTime()
	busy0, total0, machineOK := machineCPU()
	start := time.Now()
	stop := h.watch(dep, start, opts)
	perr := dep.Provision(pctx)
	wall := time.Since(start)
	cpu1, _ := cpuTime()
	busy1, total1, _ := machineCPU()
	egress := h.reg.Egress()
	if o, ok := dep.(interface{ standInEgress() int64 }); ok {
		egress += o.standInEgress()
	}
	stop()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	res := &Result{Strategy: s.Name(), VMs: vms, ImageBytes: env.ImageBytes(), Wall: wall, RegistryEgress: egress, Containers: h.spec != nil, Replayed: h.spec != nil && opts.Replay != nil}
	if o, ok := dep.(interface{ imageBytes() int64 }); ok {
		res.ImageBytes = o.imageBytes()
	}
	if perr != nil {
		res.Err = perr.Error()
		if errors.Is(perr, context.DeadlineExceeded) {
			res.Err = fmt.Sprintf("timed out after %v", opts.Timeout)
		}
	}
	if cpuOK {
		res.CPUTime = cpu1 - cpu0
		res.CPUCapacity = wall * time.Duration(runtime.NumCPU())
		res.CPU = float64(res.CPUTime) / float64(res.CPUCapacity)
	}
	if machineOK && total1 > total0 {
		res.MachineCPU = float64(busy1-busy0) / float64(total1-total0)
	}
	if t, ok := dep.(interface{ Trees() []api.Tree }); ok {
		res.Trees = t.Trees()
	}
	if b, ok := dep.(interface{ BlockSize() int64 }); ok {
		res.BlockSize = b.BlockSize()
	}
	res.Reports = dep.Report(ctx)
	sc := h.sc
	lb := bound.Delivery{
		Bytes: float64(res.neededBytes()), VMs: vms,
		Down: float64(sc.Bandwidth), Up: float64(sc.Bandwidth), Registry: float64(sc.RegistryBandwidth),
	}
	res.LowerBound = time.Duration(lb.Seconds() * float64(time.Second))
	res.summarize(start)
	if opts.Hold != nil {
		opts.Hold(ctx, res)
	}
	return res, nil
}

// neededBytes is what each VM had to receive to be ready: the image, or,
// when containers ran, the least any VM fetched before its container
// answered (a container over a lazy mount needs only what it read; the
// bound then leaves out the container's own start-up time).
func (r *Result) neededBytes() int64 {
	if !r.Containers {
		return r.ImageBytes
	}
	least := int64(0)
	for _, v := range r.Reports {
		if v.BytesBeforeReady > 0 && (least == 0 || v.BytesBeforeReady < least) {
			least = v.BytesBeforeReady
		}
	}
	if least == 0 {
		return r.ImageBytes
	}
	return least
}

// imageBytes is what a VM receives to hold images.
func imageBytes(images []Image) int64 {
	var n int64
	for _, im := range images {
		n += im.Bytes()
	}
	return n
}

// watch calls opts.Progress every interval until the returned stop is
// called, which calls it a last time and waits for the watcher to end.
func (h *Harness) watch(dep Deployment, start time.Time, opts RunOptions) (stop func()) {
	if opts.Progress == nil {
		return func() {}
	}
	every := opts.Interval
	if every <= 0 {
		every = 250 * time.Millisecond
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				opts.Progress(time.Since(start), dep.Progress())
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
		opts.Progress(time.Since(start), dep.Progress())
	}
}

// summarize computes the statistics of the reports.
func (r *Result) summarize(start time.Time) {
	var ready []time.Duration
	r.Ready = make([]time.Duration, len(r.Reports))
	r.Phases = make([]map[string]time.Duration, len(r.Reports))
	for i, v := range r.Reports {
		if len(v.Phases) > 0 {
			r.Phases[i] = make(map[string]time.Duration, len(v.Phases))
			for k, t := range v.Phases {
				r.Phases[i][k] = t.Sub(start)
			}
		}
		r.Received += v.Received
		r.MaxVMUpload = max(r.MaxVMUpload, v.Uploaded)
		r.Ready[i] = -1
		if !v.Ready.IsZero() {
			r.Ready[i] = v.Ready.Sub(start)
			ready = append(ready, r.Ready[i])
		}
		if v.Ready.IsZero() || !v.Correct {
			r.Failed++
		}
	}
	slices.Sort(ready)
	if len(ready) > 0 {
		r.FirstReady = ready[0]
		r.Makespan = ready[len(ready)-1]
		r.P50, r.P90, r.P99 = Percentile(ready, 50), Percentile(ready, 90), Percentile(ready, 99)
	}
	if len(ready) < len(r.Reports) {
		r.Makespan = r.Wall
	}
	if r.Makespan > 0 {
		r.Efficiency = float64(r.LowerBound) / float64(r.Makespan)
	}
}

// Percentile returns the p-th percentile (0 < p <= 100) of sorted by the
// nearest-rank method: the smallest value with at least p% of the values at
// or below it. It returns 0 for no values.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(float64(len(sorted)) * p / 100))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}
