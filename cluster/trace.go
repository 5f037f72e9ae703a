package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/burst"
	"github.com/faasnet/faasnet/lazy"
)

// TraceOptions configures RunTrace.
type TraceOptions struct {
	// Minute is how long a minute of the trace lasts here (the trace sped
	// up); the links keep their speed.
	Minute time.Duration
	// Drain bounds the wait, after the last minute, for starts still
	// under way; they count as unfinished.
	Drain time.Duration
	// Replay makes the VMs replay these reads instead of starting the
	// function's container (see Recording); nil starts containers.
	Replay []lazy.BlobRead
	// Progress, if set, is told about each minute as it is played.
	Progress func(minute int, starts, reclaims, running int, lag time.Duration)
}

// TraceStart is one cold start of a trace replay.
type TraceStart struct {
	Function int    `json:"function"`
	Instance int    `json:"instance"`
	VM       string `json:"vm"`
	// Minute is when the start was asked for, in minutes into the window.
	Minute int `json:"minute"`
	// LatencyS is the time from the minute's start (when the schedule
	// asked for the instance) until it was ready, in seconds; -1 if it
	// never was.
	LatencyS float64 `json:"latency_s"`
	// Fetched is what the VM fetched until it was ready.
	Fetched int64 `json:"fetched_bytes"`
	// Reclaimed says the schedule reclaimed the instance before it was
	// ready.
	Reclaimed bool   `json:"reclaimed,omitempty"`
	Err       string `json:"error,omitempty"`
}

// TraceResult is one strategy's replay of a schedule.
type TraceResult struct {
	Strategy string       `json:"strategy"`
	Pool     int          `json:"pool"`
	Starts   []TraceStart `json:"starts"`
	// Warm is the instances started before the clock (the window's
	// first minute).
	Warm int `json:"warm"`
	// RegistryEgress is what the registry sent from the first minute on.
	RegistryEgress int64 `json:"registry_egress_bytes"`
	// PeakTree is the most VMs any one function's tree held (1 for the
	// strategies without trees).
	PeakTree int `json:"peak_tree"`
	// Lag is how late, at worst, the emulation asked for a minute's
	// starts: a busy machine falls behind the schedule, and the latencies
	// include it.
	LagS       float64 `json:"lag_s"`
	WallS      float64 `json:"wall_s"`
	CPU        float64 `json:"cpu_utilization"`
	MachineCPU float64 `json:"machine_cpu_utilization"`
	Replayed   bool    `json:"replayed,omitempty"`
}

// Latencies returns the latencies of the starts that became ready, sorted.
func (r *TraceResult) Latencies() []time.Duration {
	var out []time.Duration
	for _, s := range r.Starts {
		if s.LatencyS >= 0 {
			out = append(out, time.Duration(s.LatencyS*float64(time.Second)))
		}
	}
	slices.Sort(out)
	return out
}

// Counts returns the starts that became ready, that were reclaimed before,
// and that failed or were still under way at the end.
func (r *TraceResult) Counts() (ready, reclaimed, failed int) {
	for _, s := range r.Starts {
		switch {
		case s.LatencyS >= 0:
			ready++
		case s.Reclaimed:
			reclaimed++
		default:
			failed++
		}
	}
	return
}

// RunTrace replays sched on a pool of fresh VMs with strategy s (faasnet,
// ondemand or registry; the harness needs a Function). Each trace function
// is a function of its own with the harness's image; each VM hosts one
// instance at a time. The first minute's instances start before the
// clock and are not measured; then, every Minute, the minute's reclaims
// release their VMs (from the function's tree, through the manager), which
// then start afresh with an empty cache (a VM back in the pool holds
// nothing), and the minute's cold starts scale out onto free VMs: for
// faasnet one scale request per function adding all its new VMs to its
// tree, for the others one function per VM. A start's latency runs from
// its minute to its VM being ready.
//
// Lazy images are fetched as read (no background streaming of the rest
// after ready): otherwise every instance would move the whole image, which
// a 2-core machine cannot hold at this scale.
func (h *Harness) RunTrace(ctx context.Context, s Strategy, pool int, sched *burst.Schedule, opts TraceOptions) (*TraceResult, error) {
	if h.spec == nil {
		return nil, errors.New("trace: replaying a trace needs a function to run (Options.Function)")
	}
	if opts.Minute <= 0 {
		return nil, errors.New("trace: no minute length")
	}
	fns := len(sched.Trace.Functions)
	var solo bool
	var image Image
	switch s.(type) {
	case Faasnet:
		image = h.images[0]
	case OnDemand:
		image, solo = h.images[0], true
	case RegistryPull:
		image, solo = h.plain[0], true
	default:
		return nil, fmt.Errorf("trace: strategy %s cannot replay a trace (faasnet, ondemand and registry can)", s.Name())
	}
	var spec api.FunctionSpec
	if err := json.Unmarshal(h.spec, &spec); err != nil {
		return nil, fmt.Errorf("trace: the function's spec: %w", err)
	}
	spec.NoStream = true
	rawSpec, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}

	parent := h.dir
	if parent == "" {
		if parent = ramDir(2 * int64(pool+1) * image.Bytes()); parent == "" {
			parent = os.TempDir()
		}
	}
	dir, err := os.MkdirTemp(parent, "faasnet-trace-"+s.Name()+"-*")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	runParent := h.runDir
	if runParent == "" {
		runParent = os.TempDir()
	}
	runDir, err := os.MkdirTemp(runParent, "faasnet-run-trace-*")
	if err != nil {
		return nil, err
	}
	// Searchable: the containers' users must reach their root filesystems.
	if err := os.Chmod(runDir, 0o711); err != nil {
		return nil, err
	}
	defer os.RemoveAll(runDir)
	images := make([]Image, fns)
	for i := range images {
		images[i] = image
	}
	env := &Env{Registry: h.reg, Images: images, VMs: makeVMs(pool), Scenario: h.sc, Dir: dir, Spec: rawSpec,
		RunDir: runDir, Replay: opts.Replay, Logger: h.log}
	raiseOpenFiles(uint64(pool*(1+len(image.Layers))*40*2 + 4096))
	runtime.GC()
	stripes, block := 1, h.sc.BlockSize
	if f, ok := s.(Faasnet); ok {
		stripes = f.StripeCount()
		if f.Block != 0 {
			block = max(f.Block, 0)
		}
	}
	dep, err := deployWorkers(ctx, env, s.Name(), images, solo, false, stripes, block)
	if err != nil {
		return nil, err
	}
	d := dep.(*workerDeployment)
	defer d.Close()
	t := &traceRun{d: d, sched: sched, opts: opts, solo: solo,
		res:     &TraceResult{Strategy: s.Name(), Pool: pool, PeakTree: 1, Replayed: opts.Replay != nil},
		running: map[int]*traceInstance{}, members: make([]int, fns)}
	for i := range pool {
		t.free = append(t.free, i)
	}
	t.freed = make(chan struct{}, pool)
	if err := t.run(ctx); err != nil {
		return nil, err
	}
	return t.res, nil
}

// traceInstance is an instance of the replay: where it runs and the
// waiter for its readiness.
type traceInstance struct {
	vm     int
	fn     string
	start  int // index into res.Starts; -1 for a warm instance
	cancel context.CancelFunc
	done   chan struct{}
}

type traceRun struct {
	d     *workerDeployment
	sched *burst.Schedule
	opts  TraceOptions
	solo  bool
	res   *TraceResult

	mu      sync.Mutex
	free    []int         // VMs with a fresh worker and no function
	freed   chan struct{} // a VM was recycled
	running map[int]*traceInstance
	members []int // VMs per function, for the peak tree
	recycle sync.WaitGroup
	waiters sync.WaitGroup
	errs    []error
}

// fnName is the manager's name of trace function f on VM vm.
func (t *traceRun) fnName(f, vm int) string {
	name := fmt.Sprintf("fn-%d", f)
	if t.solo {
		name += "-" + t.d.env.VMs[vm].Name
	}
	return name
}

func (t *traceRun) run(ctx context.Context) error {
	defer t.waiters.Wait()
	defer t.recycle.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	byMinute := map[int][]burst.Event{}
	for _, e := range t.sched.Events {
		byMinute[e.Minute] = append(byMinute[e.Minute], e)
	}
	// The first minute's instances run before the clock starts.
	warm, err := t.play(ctx, 0, byMinute[0], time.Now())
	if err != nil {
		return err
	}
	for _, in := range warm {
		<-in.done
	}
	t.mu.Lock()
	for _, in := range warm {
		if s := t.res.Starts[in.start]; s.LatencyS < 0 {
			t.mu.Unlock()
			return fmt.Errorf("trace: warm instance %d on %s did not start: %s", s.Instance, s.VM, s.Err)
		}
	}
	// Warm instances are not cold starts.
	t.res.Warm = len(warm)
	t.res.Starts = t.res.Starts[:0]
	for _, in := range t.running {
		in.start = -1
	}
	t.mu.Unlock()

	h := t.d.env.Registry
	h.ResetEgress()
	cpu0, cpuOK := cpuTime()
	busy0, total0, machineOK := machineCPU()
	clock := time.Now()
	for m := 1; m < t.sched.Trace.Minutes; m++ {
		at := clock.Add(time.Duration(m) * t.opts.Minute)
		timer := time.NewTimer(time.Until(at))
		select {
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-timer.C:
		}
		t.res.LagS = max(t.res.LagS, time.Since(at).Seconds())
		if _, err := t.play(ctx, m, byMinute[m], at); err != nil {
			return err
		}
	}
	// Wait for the starts under way, at most Drain.
	drained := make(chan struct{})
	go func() {
		t.waiters.Wait()
		close(drained)
	}()
	drain := time.NewTimer(t.opts.Drain)
	select {
	case <-drained:
	case <-drain.C:
	case <-ctx.Done():
	}
	drain.Stop()
	wall := time.Since(clock)
	t.res.RegistryEgress = h.Egress()
	cancel() // the waiters still under way give up
	t.res.WallS = wall.Seconds()
	if cpu1, _ := cpuTime(); cpuOK {
		t.res.CPU = float64(cpu1-cpu0) / float64(wall*time.Duration(runtime.NumCPU()))
	}
	if busy1, total1, _ := machineCPU(); machineOK && total1 > total0 {
		t.res.MachineCPU = float64(busy1-busy0) / float64(total1-total0)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return errors.Join(t.errs...)
}

// play does one minute's reclaims, then its starts, asked for at at.
func (t *traceRun) play(ctx context.Context, m int, events []burst.Event, at time.Time) ([]*traceInstance, error) {
	starts := map[int][]burst.Event{} // by function
	var order []int
	reclaims := 0
	for _, e := range events {
		if !e.Start {
			if err := t.reclaim(ctx, e); err != nil {
				return nil, err
			}
			reclaims++
			continue
		}
		if _, ok := starts[e.Function]; !ok {
			order = append(order, e.Function)
		}
		starts[e.Function] = append(starts[e.Function], e)
	}
	var all []*traceInstance
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for _, f := range order {
		es := starts[f]
		vms := make([]int, len(es))
		for i := range es {
			vm, err := t.takeVM(ctx)
			if err != nil {
				return nil, err
			}
			vms[i] = vm
		}
		ins := t.begin(ctx, m, es, vms, at)
		all = append(all, ins...)
		if !t.solo {
			wg.Go(func() {
				names := make([]string, len(vms))
				for i, vm := range vms {
					names[i] = t.d.env.VMs[vm].Name
				}
				if _, err := t.d.client.Scale(ctx, t.fnName(f, 0), api.ScaleRequest{VMs: names}); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("trace: minute %d: scaling function %d onto %v: %w", m, f, names, err))
					mu.Unlock()
				}
				t.noteTree(f)
			})
			continue
		}
		for _, vm := range vms {
			wg.Go(func() {
				fn := t.fnName(f, vm)
				if _, err := t.d.client.Scale(ctx, fn, api.ScaleRequest{VMs: []string{t.d.env.VMs[vm].Name}}); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("trace: minute %d: scaling %s: %w", m, fn, err))
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	if t.opts.Progress != nil && m > 0 {
		t.mu.Lock()
		running := len(t.running)
		t.mu.Unlock()
		t.opts.Progress(m, len(all), reclaims, running, time.Since(at))
	}
	return all, errors.Join(errs...)
}

// begin registers the instances of es on vms and starts their waiters.
func (t *traceRun) begin(ctx context.Context, m int, es []burst.Event, vms []int, at time.Time) []*traceInstance {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*traceInstance
	for i, e := range es {
		vm := vms[i]
		ictx, cancel := context.WithCancel(ctx)
		in := &traceInstance{vm: vm, fn: t.fnName(e.Function, vm), start: len(t.res.Starts), cancel: cancel, done: make(chan struct{})}
		t.res.Starts = append(t.res.Starts, TraceStart{Function: e.Function, Instance: e.Instance, VM: t.d.env.VMs[vm].Name, Minute: m, LatencyS: -1})
		t.running[e.Instance] = in
		t.members[e.Function]++
		out = append(out, in)
		w := t.d.worker(vm)
		t.waiters.Go(func() {
			defer close(in.done)
			t.wait(ictx, w, in, at)
		})
	}
	return out
}

// wait waits until in is ready on w and records its latency from asked,
// the start of the minute that asked for it: reclaims before it and a wait
// for a free VM count, as the schedule asked for the instance then.
func (t *traceRun) wait(ctx context.Context, w interface {
	WaitState(context.Context, string, string) error
	Functions() []api.FunctionReport
}, in *traceInstance, asked time.Time) {
	err := w.WaitState(ctx, in.fn, api.StateReady)
	var ready time.Time
	var fetched int64
	if err == nil {
		for _, r := range w.Functions() {
			if r.Function == in.fn {
				ready, fetched = r.Phases["ready"], r.BytesBeforeReady
			}
		}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if in.start < 0 {
		return // a warm instance, whose start was not measured
	}
	s := &t.res.Starts[in.start]
	switch {
	case err == nil && !ready.IsZero():
		s.LatencyS, s.Fetched = ready.Sub(asked).Seconds(), fetched
	case err != nil && !s.Reclaimed:
		s.Err = err.Error()
	}
}

// reclaim releases e's instance from its function and recycles its VM.
func (t *traceRun) reclaim(ctx context.Context, e burst.Event) error {
	t.mu.Lock()
	in := t.running[e.Instance]
	delete(t.running, e.Instance)
	if in != nil {
		t.members[e.Function]--
		if in.start >= 0 && t.res.Starts[in.start].LatencyS < 0 {
			t.res.Starts[in.start].Reclaimed = true
		}
	}
	t.mu.Unlock()
	if in == nil {
		return fmt.Errorf("trace: reclaiming instance %d, which is not running", e.Instance)
	}
	in.cancel()
	if err := t.d.client.Release(ctx, in.fn, t.d.env.VMs[in.vm].Name); err != nil {
		return fmt.Errorf("trace: releasing %s from %s: %w", t.d.env.VMs[in.vm].Name, in.fn, err)
	}
	t.recycle.Go(func() {
		<-in.done
		if err := t.d.recycle(in.vm); err != nil {
			t.mu.Lock()
			t.errs = append(t.errs, err)
			t.mu.Unlock()
			return
		}
		t.mu.Lock()
		t.free = append(t.free, in.vm)
		t.mu.Unlock()
		select { // a token is enough: takeVM looks at the free list again
		case t.freed <- struct{}{}:
		default:
		}
	})
	return nil
}

// takeVM takes a free VM, waiting for one being recycled if none is free.
func (t *traceRun) takeVM(ctx context.Context) (int, error) {
	for {
		t.mu.Lock()
		if n := len(t.free); n > 0 {
			vm := t.free[0]
			t.free = t.free[1:]
			t.mu.Unlock()
			return vm, nil
		}
		t.mu.Unlock()
		select {
		case <-t.freed:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// noteTree updates the peak tree size with function f's tree as the
// manager holds it.
func (t *traceRun) noteTree(f int) {
	tree, err := t.d.mgr.Tree(t.fnName(f, 0))
	if err != nil {
		return
	}
	t.mu.Lock()
	t.res.PeakTree = max(t.res.PeakTree, len(tree.Nodes))
	t.mu.Unlock()
}
