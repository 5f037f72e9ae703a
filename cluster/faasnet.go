package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/manager"
	"github.com/faasnet/faasnet/manager/store"
	"github.com/faasnet/faasnet/worker"
)

// Faasnet provisions through function trees: a manager and one faasnet
// worker per VM, the same code as in production. Provision scales every
// function onto all VMs at once; a VM is ready when its worker reports every
// function ready (all blobs in its cache, verified).
type Faasnet struct{}

// Name implements Strategy.
func (Faasnet) Name() string { return "faasnet" }

// Timeouts of the emulated control plane, looser than production's
// defaults: a busy 2-core machine running a hundred VMs delays heartbeats
// and streams without anything having failed.
const (
	vmTimeout     = time.Minute
	parentTimeout = 10 * time.Second
	stallTimeout  = 20 * time.Second
)

type faasnetDeployment struct {
	env     *Env
	cancel  context.CancelFunc
	mgr     *manager.Manager
	mgrSrv  *http.Server
	client  *api.Client
	fns     []string
	workers []*worker.Worker
	wwg     sync.WaitGroup // the workers' Serve
	mwg     sync.WaitGroup // the manager's Run and server

	mu    sync.Mutex
	trees []api.Tree
	ready map[string]time.Time
	errs  map[string]string
}

// Deploy implements Strategy: it starts the manager, defines one function
// per image, starts the workers and waits until all have registered.
func (Faasnet) Deploy(ctx context.Context, env *Env) (Deployment, error) {
	ctx, cancel := context.WithCancel(ctx)
	d := &faasnetDeployment{env: env, cancel: cancel, ready: map[string]time.Time{}, errs: map[string]string{}}
	if err := d.start(ctx); err != nil {
		d.Close()
		return nil, fmt.Errorf("faasnet: %w", err)
	}
	return d, nil
}

func (d *faasnetDeployment) start(ctx context.Context) error {
	m, err := manager.New(ctx, store.NewMemory(), manager.Options{VMTimeout: vmTimeout, Push: true, Logger: d.env.Logger})
	if err != nil {
		return err
	}
	d.mgr = m
	d.mwg.Go(func() { m.Run(ctx) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("manager listener: %w", err)
	}
	d.mgrSrv = &http.Server{Handler: m.Handler(), ReadHeaderTimeout: 10 * time.Second}
	d.mwg.Go(func() { d.mgrSrv.Serve(ln) })
	d.client = api.NewClient("http://" + ln.Addr().String())
	for i, im := range d.env.Images {
		fn := fmt.Sprintf("fn-%d", i)
		if _, err := m.PutFunction(ctx, fn, api.FunctionRequest{Image: im.Ref}); err != nil {
			return fmt.Errorf("defining %s: %w", fn, err)
		}
		d.fns = append(d.fns, fn)
	}
	sc := d.env.Scenario
	for _, vm := range d.env.VMs {
		w, err := worker.New(worker.Config{
			ID: vm.Name, Manager: d.client.Base, CacheDir: filepath.Join(d.env.Dir, vm.Name),
			BlockSize: sc.BlockSize, UploadLimit: sc.Bandwidth, DownloadLimit: sc.Bandwidth,
			ParentTimeout: parentTimeout, StallTimeout: stallTimeout, Logger: d.env.Logger,
		})
		if err != nil {
			return err
		}
		ln, err := listen(vm)
		if err != nil {
			return err
		}
		d.workers = append(d.workers, w)
		d.wwg.Go(func() { w.Serve(ctx, ln) })
	}
	return d.waitRegistered(ctx)
}

// waitRegistered polls the manager (another party's state, so polling with a
// deadline) until it knows every VM.
func (d *faasnetDeployment) waitRegistered(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second+time.Duration(len(d.workers))*100*time.Millisecond)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		n := len(d.mgr.VMs())
		if n == len(d.workers) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d of %d workers registered: %w", n, len(d.workers), ctx.Err())
		case <-t.C:
		}
	}
}

// Provision implements Deployment: one scale request per function, all VMs
// at once, then it waits for every worker.
func (d *faasnetDeployment) Provision(ctx context.Context) error {
	n := len(d.workers)
	errs := make([]error, len(d.fns))
	var wg sync.WaitGroup
	for i, fn := range d.fns {
		wg.Go(func() {
			_, errs[i] = d.client.Scale(ctx, fn, api.ScaleRequest{Count: n})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("faasnet: scaling: %w", err)
	}
	var trees []api.Tree
	for _, fn := range d.fns {
		t, err := d.mgr.Tree(fn)
		if err != nil {
			return fmt.Errorf("faasnet: tree of %s: %w", fn, err)
		}
		trees = append(trees, t)
	}
	d.mu.Lock()
	d.trees = trees
	d.mu.Unlock()

	for _, w := range d.workers {
		wg.Go(func() { d.wait(ctx, w) })
	}
	wg.Wait()
	return ctx.Err()
}

// wait waits until every function is ready on w and records when the last
// one became ready, by the worker's own clock of phases.
func (d *faasnetDeployment) wait(ctx context.Context, w *worker.Worker) {
	for _, fn := range d.fns {
		if err := w.WaitState(ctx, fn, api.StateReady); err != nil {
			d.mu.Lock()
			d.errs[w.ID()] = err.Error()
			d.mu.Unlock()
			return
		}
	}
	var last time.Time
	for _, r := range w.Functions() {
		if t := r.Phases["ready"]; t.After(last) {
			last = t
		}
	}
	d.mu.Lock()
	d.ready[w.ID()] = last
	d.mu.Unlock()
}

// Progress implements Deployment.
func (d *faasnetDeployment) Progress() Snapshot {
	total := d.env.ImageBytes()
	s := Snapshot{VMs: make([]VMProgress, len(d.workers))}
	d.mu.Lock()
	s.Trees = d.trees
	d.mu.Unlock()
	for i, w := range d.workers {
		p := VMProgress{VM: w.ID(), Total: total}
		ready := 0
		for _, r := range w.Functions() {
			p.Received += r.BytesFetched
			if r.State == api.StateReady {
				ready++
			}
			if r.State == api.StateFailed {
				p.Failed = r.Error
			}
		}
		p.Ready = ready == len(d.fns)
		s.VMs[i] = p
	}
	return s
}

// Report implements Deployment. A VM is correct when everything of every
// image read back through its OCI endpoint, as a container runtime would,
// matches the digests.
func (d *faasnetDeployment) Report(ctx context.Context) []VMReport {
	out := make([]VMReport, len(d.workers))
	var wg sync.WaitGroup
	for i, w := range d.workers {
		wg.Go(func() { out[i] = d.report(ctx, w) })
	}
	wg.Wait()
	return out
}

func (d *faasnetDeployment) report(ctx context.Context, w *worker.Worker) VMReport {
	d.mu.Lock()
	r := VMReport{VM: w.ID(), Ready: d.ready[w.ID()], Err: d.errs[w.ID()]}
	d.mu.Unlock()
	for _, f := range w.Functions() {
		r.Received += f.BytesFetched
		r.FromRegistry += f.BytesFromRegistry
	}
	r.Uploaded = scrapeCounter(w.Handler(), "faasnet_worker_bytes_out_total")
	if r.Ready.IsZero() {
		if r.Err == "" {
			r.Err = "not ready"
		}
		return r
	}
	var errs []error
	for _, im := range d.env.Images {
		errs = append(errs, verifyOCI(ctx, w.Handler(), im))
	}
	if err := errors.Join(errs...); err != nil {
		r.Err = err.Error()
		return r
	}
	r.Correct = true
	return r
}

// Trees returns the function trees as placed by the scale requests.
func (d *faasnetDeployment) Trees() []api.Tree {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.trees
}

// Close implements Deployment: workers first, while the manager still
// answers them, then the manager.
func (d *faasnetDeployment) Close() error {
	d.cancel()
	d.wwg.Wait()
	if d.mgrSrv != nil {
		d.mgrSrv.Close()
	}
	d.mwg.Wait()
	if d.mgr != nil {
		d.mgr.Close()
	}
	return nil
}
