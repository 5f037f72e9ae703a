package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/enroll"
	"github.com/faasnet/faasnet/internal/httpserver"
	"github.com/faasnet/faasnet/lazy"
	"github.com/faasnet/faasnet/manager"
	"github.com/faasnet/faasnet/manager/store"
	"github.com/faasnet/faasnet/pki"
	"github.com/faasnet/faasnet/token"
	"github.com/faasnet/faasnet/units"
	"github.com/faasnet/faasnet/worker"
)

// Faasnet provisions through function trees: a manager and one faasnet
// worker per VM, the same code as in production. Provision scales every
// function onto all VMs at once; a VM is ready when its worker reports every
// function ready: all blobs in its cache, verified, or, when the harness
// runs a Function, the function's container answering (started over a lazy
// mount of the eStargz image, blocks fetched through the tree as it reads).
//
// Like production, it runs over TLS: the manager is the cluster's CA (a
// throwaway one in the deployment's directory), every worker enrolls, and
// peers speak mutual TLS with grants. Plaintext turns all of that off; it
// exists only so that a bench can measure what TLS costs, side by side.
//
// Stripes is the number of stripe trees per function (package stripe);
// 0 is the manager's default, api.DefaultStripes, and 1 the paper's single
// tree. A strategy with Stripes set names it ("faasnet-k1"), so that
// several can run side by side.
//
// Block is the block the manager assigns: 0 the scenario's BlockSize,
// AutoBlock the manager's pick per image whatever the scenario says. A
// strategy with Block set names it ("faasnet-k2-b512KiB",
// "faasnet-k2-bauto").
type Faasnet struct {
	Plaintext bool
	Stripes   int
	Block     int64
}

// AutoBlock as Faasnet.Block lets the manager pick the block per image.
const AutoBlock = -1

// Name implements Strategy.
func (f Faasnet) Name() string {
	name := "faasnet"
	if f.Plaintext {
		name += "-plaintext"
	}
	if f.Stripes > 0 {
		name += fmt.Sprintf("-k%d", f.Stripes)
	}
	switch {
	case f.Block == AutoBlock:
		name += "-bauto"
	case f.Block > 0:
		name += "-b" + units.Size(f.Block).String()
	}
	return name
}

// StripeCount is the number of stripe trees the strategy's functions get.
func (f Faasnet) StripeCount() int {
	if f.Stripes > 0 {
		return f.Stripes
	}
	return api.DefaultStripes
}

// Deploy implements Strategy: it starts the manager, defines one function
// per image, starts the workers and waits until all have registered.
func (f Faasnet) Deploy(ctx context.Context, env *Env) (Deployment, error) {
	block := env.Scenario.BlockSize
	switch {
	case f.Block == AutoBlock:
		block = 0
	case f.Block > 0:
		block = f.Block
	}
	return deployWorkers(ctx, env, f.Name(), env.Images, false, f.Plaintext, f.StripeCount(), block)
}

// OnDemand is the paper's "optimized baseline": every VM mounts the
// function's eStargz image lazily and fetches the blocks its container
// reads straight from the registry, with no tree. It is Faasnet's code
// with one difference, the tree: each VM is the only member of a function
// of its own (same image, same spec), so every VM is a root. Like a root,
// each VM streams the rest of the image from the registry once its
// container answered. It needs a Function (Options.Function).
type OnDemand struct{}

// Name implements Strategy.
func (OnDemand) Name() string { return "ondemand" }

// Deploy implements Strategy.
func (OnDemand) Deploy(ctx context.Context, env *Env) (Deployment, error) {
	if env.Spec == nil {
		return nil, errors.New("ondemand: fetches a function's eStargz image lazily, so it needs a function to run (a lazy bench: Options.Function)")
	}
	return deployWorkers(ctx, env, "ondemand", env.Images, true, false, 1, env.Scenario.BlockSize)
}

// Timeouts of the emulated control plane, looser than production's
// defaults: a busy 2-core machine running a hundred VMs delays heartbeats
// and streams without anything having failed.
const (
	vmTimeout     = time.Minute
	parentTimeout = 10 * time.Second
	stallTimeout  = 20 * time.Second
)

// workerDeployment is a manager and one faasnet worker per VM: Faasnet,
// OnDemand, and RegistryPull when it runs containers.
type workerDeployment struct {
	env    *Env
	name   string
	images []Image // what every VM provisions
	// solo makes every VM the only member of functions of its own, one
	// per image: no VM has a parent.
	solo bool
	// plaintext runs without the CA, TLS and grants: only for measuring
	// what they cost.
	plaintext bool
	stripes   int // stripe trees per function
	cancel    context.CancelFunc
	mgr       *manager.Manager
	mgrSrv    *http.Server
	client    *api.Client
	fns       [][]string // fns[i][j]: VM i's function for image j
	workers   []*worker.Worker
	stops     []context.CancelFunc // stops[i] ends workers[i]
	wwg       sync.WaitGroup       // the workers' Serve
	// For recycle: the deployment's context, each worker's config, where
	// it listens, how many times it was recycled, and a channel closed
	// when its Serve returned.
	ctx    context.Context
	cfgs   []worker.Config
	addrs  []string
	gens   []int
	served []chan struct{}
	mwg    sync.WaitGroup // the manager's Run and server

	// block is the manager's Options.BlockSize (0: it picks per image);
	// assigned the block it gave the functions (the last defined).
	block, assigned int64

	mu    sync.Mutex
	trees []api.Tree
	ready map[string]time.Time
	errs  map[string]string
}

// deployWorkers starts the manager, defines the functions, starts the
// workers and waits until all have registered.
func deployWorkers(ctx context.Context, env *Env, name string, images []Image, solo, plaintext bool, stripes int, block int64) (Deployment, error) {
	ctx, cancel := context.WithCancel(ctx)
	d := &workerDeployment{env: env, name: name, images: images, solo: solo, plaintext: plaintext, stripes: stripes, block: block, cancel: cancel,
		ready: map[string]time.Time{}, errs: map[string]string{}}
	if err := d.start(ctx); err != nil {
		d.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return d, nil
}

func (d *workerDeployment) start(ctx context.Context) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("manager listener: %w", err)
	}
	opts := manager.Options{VMTimeout: vmTimeout, Push: true, Stripes: d.stripes, BlockSize: d.block, Logger: d.env.Logger}
	if !d.plaintext {
		opts.Security = &manager.Security{Dir: filepath.Join(d.env.Dir, "manager"), Addr: ln.Addr().String()}
	}
	m, err := manager.New(ctx, store.NewMemory(), opts)
	if err != nil {
		ln.Close()
		return err
	}
	d.mgr = m
	d.mwg.Go(func() { m.Run(ctx) })
	d.mgrSrv = httpserver.New(m.Handler(), httpserver.Options{})
	served := httpserver.Listener(ln, httpserver.Options{})
	if cfg := m.TLSConfig(); cfg != nil {
		served = tls.NewListener(served, cfg)
	}
	d.mwg.Go(func() { d.mgrSrv.Serve(served) })
	if d.client, err = d.operator(ln.Addr().String()); err != nil {
		return err
	}
	if err := d.define(ctx); err != nil {
		return err
	}
	sc := d.env.Scenario
	for _, vm := range d.env.VMs {
		cfg := worker.Config{
			ID: vm.Name, Manager: d.client.Base, CacheDir: filepath.Join(d.env.Dir, vm.Name),
			BlockSize: d.block, UploadLimit: sc.Bandwidth, DownloadLimit: sc.Bandwidth,
			ParentTimeout: parentTimeout, StallTimeout: stallTimeout, Logger: d.env.Logger,
		}
		if cfg.Security, err = d.enroll(ctx, vm.Name); err != nil {
			return err
		}
		if d.env.Spec != nil {
			cfg.Containers, cfg.RunDir = true, filepath.Join(d.env.RunDir, vm.Name)
			cfg.Sandbox.Off = d.env.NoSandbox
			switch {
			case d.env.Replay != nil:
				cfg.Containers, cfg.RunContainer = false, replayRunner(d.env.Replay, d.env.Logger)
			case d.env.record != nil:
				cfg.Containers, cfg.RunContainer = false, d.env.record.runner(cfg.RunDir, vm.Name, d.env.Logger)
			}
		}
		w, err := worker.New(cfg)
		if err != nil {
			return err
		}
		ln, err := listen(vm)
		if err != nil {
			return err
		}
		wctx, stop := context.WithCancel(ctx)
		served := make(chan struct{})
		d.workers = append(d.workers, w)
		d.stops = append(d.stops, stop)
		d.cfgs = append(d.cfgs, cfg)
		d.addrs = append(d.addrs, ln.Addr().String())
		d.gens = append(d.gens, 0)
		d.served = append(d.served, served)
		d.wwg.Go(func() {
			defer close(served)
			w.Serve(wctx, ln)
		})
	}
	d.ctx = ctx
	return d.waitRegistered(ctx)
}

// recycle stops VM i's worker, removes its cache and run directory and
// starts a fresh worker for the VM on the same address: a VM back in the
// pool as new, holding nothing of the functions it hosted. Call it only
// for a VM that hosts no function, and not while Progress or Report run.
func (d *workerDeployment) recycle(i int) error {
	d.stops[i]()
	<-d.served[i]
	cfg := d.cfgs[i]
	if err := os.RemoveAll(cfg.CacheDir); err != nil {
		return fmt.Errorf("recycling %s: %w", cfg.ID, err)
	}
	os.RemoveAll(cfg.RunDir)
	d.gens[i]++
	base := filepath.Join(d.env.Dir, cfg.ID)
	cfg.CacheDir = fmt.Sprintf("%s.%d", base, d.gens[i])
	if cfg.RunDir != "" {
		cfg.RunDir = filepath.Join(d.env.RunDir, fmt.Sprintf("%s.%d", cfg.ID, d.gens[i]))
	}
	w, err := worker.New(cfg)
	if err != nil {
		return fmt.Errorf("recycling %s: %w", cfg.ID, err)
	}
	// The same address: the manager and the trees know the VM by it.
	ln, err := net.Listen("tcp", d.addrs[i])
	if err != nil {
		return fmt.Errorf("recycling %s: listening on %s again: %w", cfg.ID, d.addrs[i], err)
	}
	wctx, stop := context.WithCancel(d.ctx)
	served := make(chan struct{})
	d.mu.Lock()
	d.workers[i], d.stops[i], d.cfgs[i], d.served[i] = w, stop, cfg, served
	d.mu.Unlock()
	d.wwg.Go(func() {
		defer close(served)
		w.Serve(wctx, ln)
	})
	return nil
}

// worker returns VM i's current worker.
func (d *workerDeployment) worker(i int) *worker.Worker {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.workers[i]
}

// controlPlane is where the manager answers, when it runs secure.
func (d *workerDeployment) controlPlane() (ControlPlane, bool) {
	if d.mgr == nil || d.mgr.CA() == nil {
		return ControlPlane{}, false
	}
	ca, admin, _ := d.mgr.SecurityFiles()
	return ControlPlane{URL: d.client.Base, CAFile: ca, AdminTokenFile: admin, Admin: d.client, Kill: d.kill}, true
}

// kill stops vm's worker and removes the VM, as the manager's failure
// detector would once --vm-timeout passed (a minute here: too long to
// watch).
func (d *workerDeployment) kill(ctx context.Context, vm string) error {
	for i, w := range d.workers {
		if w.ID() == vm {
			d.stops[i]()
			return d.client.LeaveVM(ctx, vm)
		}
	}
	return fmt.Errorf("no VM %s", vm)
}

// operator returns the harness's client for the manager at addr: the
// admin token over TLS, or plain HTTP without security.
func (d *workerDeployment) operator(addr string) (*api.Client, error) {
	ca := d.mgr.CA()
	if ca == nil {
		return api.NewClient("http://" + addr), nil
	}
	_, adminFile, _ := d.mgr.SecurityFiles()
	admin, err := token.ReadFile(adminFile)
	if err != nil {
		return nil, fmt.Errorf("the manager's admin token: %w", err)
	}
	return api.NewTLSClient("https://"+addr, pki.NewVerifier(ca.Cert, nil).ManagerClient(nil), admin), nil
}

// enroll gets vm a certificate the way a worker does, with the join token
// (nil without security).
func (d *workerDeployment) enroll(ctx context.Context, vm string) (*worker.Security, error) {
	ca := d.mgr.CA()
	if ca == nil {
		return nil, nil
	}
	_, _, joinFile := d.mgr.SecurityFiles()
	join, err := token.ReadFile(joinFile)
	if err != nil {
		return nil, fmt.Errorf("the manager's join token: %w", err)
	}
	cert, err := enroll.Enroll(ctx, d.client.Base, ca.Cert, join, vm)
	if err != nil {
		return nil, err
	}
	return &worker.Security{Keeper: pki.NewKeeper(cert), CA: ca.Cert}, nil
}

// define defines the functions: one per image, or with solo one per image
// and VM.
func (d *workerDeployment) define(ctx context.Context) error {
	d.fns = make([][]string, len(d.env.VMs))
	for j, im := range d.images {
		shared := fmt.Sprintf("fn-%d", j)
		for i, vm := range d.env.VMs {
			fn := shared
			if d.solo {
				fn = shared + "-" + vm.Name
			}
			d.fns[i] = append(d.fns[i], fn)
			if !d.solo && i > 0 {
				continue
			}
			def, err := d.mgr.PutFunction(ctx, fn, api.FunctionRequest{Image: im.Ref, Spec: d.env.Spec})
			if err != nil {
				return fmt.Errorf("defining %s: %w", fn, err)
			}
			d.assigned = def.BlockSize
		}
	}
	return nil
}

// imageBytes is what each VM must hold: the images it provisions.
func (d *workerDeployment) imageBytes() int64 {
	var n int64
	for _, im := range d.images {
		n += im.Bytes()
	}
	return n
}

// waitRegistered polls the manager (another party's state, so polling with a
// deadline) until it knows every VM.
func (d *workerDeployment) waitRegistered(ctx context.Context) error {
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
// of each at once (with solo, one VM each), then it waits for every worker.
func (d *workerDeployment) Provision(ctx context.Context) error {
	type scale struct {
		fn  string
		req api.ScaleRequest
	}
	var scales []scale
	for j := range d.images {
		if !d.solo {
			scales = append(scales, scale{d.fns[0][j], api.ScaleRequest{Count: len(d.workers)}})
			continue
		}
		for i, vm := range d.env.VMs {
			scales = append(scales, scale{d.fns[i][j], api.ScaleRequest{VMs: []string{vm.Name}}})
		}
	}
	errs := make([]error, len(scales))
	var wg sync.WaitGroup
	for i, s := range scales {
		wg.Go(func() {
			_, errs[i] = d.client.Scale(ctx, s.fn, s.req)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%s: scaling: %w", d.name, err)
	}
	if !d.solo { // one-VM trees say nothing
		var trees []api.Tree
		for _, fn := range d.fns[0] {
			t, err := d.mgr.Tree(fn)
			if err != nil {
				return fmt.Errorf("%s: tree of %s: %w", d.name, fn, err)
			}
			trees = append(trees, t)
		}
		d.mu.Lock()
		d.trees = trees
		d.mu.Unlock()
	}

	for i, w := range d.workers {
		wg.Go(func() { d.wait(ctx, w, d.fns[i]) })
	}
	wg.Wait()
	return ctx.Err()
}

// wait waits until every function of fns is ready on w and records when
// the last one became ready, by the worker's own clock of phases.
func (d *workerDeployment) wait(ctx context.Context, w *worker.Worker, fns []string) {
	for _, fn := range fns {
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
func (d *workerDeployment) Progress() Snapshot {
	total := d.imageBytes()
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
		p.Ready = ready == len(d.images)
		s.VMs[i] = p
	}
	return s
}

// Report implements Deployment. Without containers, a VM is correct when
// everything of every image read back through its OCI endpoint, as a
// container runtime would, matches the digests. With containers, when its
// container answered: the worker verified every blob before unpacking it,
// and the lazy mount every chunk before the container read it (reading the
// whole image back would fetch what lazy fetching saves).
func (d *workerDeployment) Report(ctx context.Context) []VMReport {
	out := make([]VMReport, len(d.workers))
	var wg sync.WaitGroup
	for i, w := range d.workers {
		wg.Go(func() { out[i] = d.report(ctx, w) })
	}
	wg.Wait()
	return out
}

func (d *workerDeployment) report(ctx context.Context, w *worker.Worker) VMReport {
	d.mu.Lock()
	r := VMReport{VM: w.ID(), Ready: d.ready[w.ID()], Err: d.errs[w.ID()]}
	d.mu.Unlock()
	for _, f := range w.Functions() {
		r.Received += f.BytesFetched
		r.FromRegistry += f.BytesFromRegistry
		r.BytesBeforeReady += f.BytesBeforeReady
		for k, t := range f.Phases {
			if r.Phases == nil {
				r.Phases = map[string]time.Time{}
			}
			if t.After(r.Phases[k]) {
				r.Phases[k] = t
			}
		}
	}
	r.Uploaded = scrapeCounter(w.Metrics(), "faasnet_worker_bytes_out_total")
	if r.Ready.IsZero() {
		if r.Err == "" {
			r.Err = "not ready"
		}
		return r
	}
	if d.env.Spec == nil {
		var errs []error
		for _, im := range d.images {
			errs = append(errs, verifyOCI(ctx, w.OCIHandler(), im))
		}
		if err := errors.Join(errs...); err != nil {
			r.Err = err.Error()
			return r
		}
	}
	r.Correct = true
	return r
}

// BlockSize is the block the manager assigned the functions.
func (d *workerDeployment) BlockSize() int64 { return d.assigned }

// Trees returns the function trees as placed by the scale requests.
func (d *workerDeployment) Trees() []api.Tree {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.trees
}

// Close implements Deployment: workers first, while the manager still
// answers them, then the manager.
func (d *workerDeployment) Close() error {
	d.cancel()
	d.wwg.Wait()
	if d.mgrSrv != nil {
		d.mgrSrv.Close()
	}
	d.mwg.Wait()
	if d.mgr != nil {
		d.mgr.Close()
	}
	// A worker unmounts its functions as it stops; this is the safety net
	// for one that could not, so that the run's directory can go.
	if d.env.RunDir != "" {
		mnts, _ := filepath.Glob(filepath.Join(d.env.RunDir, "*", "mnt", "*"))
		for _, m := range mnts {
			lazy.Unmount(m)
		}
	}
	return nil
}
