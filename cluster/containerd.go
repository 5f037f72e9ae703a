package cluster

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/containerdcfg"
	"github.com/faasnet/faasnet/crinode"
	"github.com/faasnet/faasnet/internal/httpserver"
	"github.com/faasnet/faasnet/snapshotter"
	"github.com/faasnet/faasnet/worker"
)

// Containerd is faasnet's workers and trees under containerd: every VM is
// a worker, a `faasnet snapshotter` reading through it and a containerd
// (package crinode) that starts the function through CRI, as kubelet
// would, pulling the eStargz image through the worker only. The workers
// fetch but run nothing; a VM is ready when its function answers its
// readiness path, and BytesBeforeReady is what its snapshotter read from
// the worker by then. It needs a Function, containerd, ctr and the CNI
// loopback plugin, and root.
type Containerd struct{}

// Name implements Strategy.
func (Containerd) Name() string { return "containerd" }

// cniBinDir holds the CNI loopback plugin CRI's NetworkReady needs
// (Debian's containernetworking-plugins).
const cniBinDir = "/usr/lib/cni"

// pauseRef is the sandbox image each VM's containerd imports: a node
// pulls nothing but the function.
const pauseRef = "faasnet.bench/pause:1"

// Deploy implements Strategy.
func (Containerd) Deploy(ctx context.Context, env *Env) (Deployment, error) {
	if env.Spec == nil {
		return nil, errors.New("containerd: needs a function (bench --lazy)")
	}
	var tools [2]string
	for i, tool := range []string{"containerd", "ctr"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			return nil, fmt.Errorf("containerd: %w (apt-get install containerd)", err)
		}
		tools[i] = p
	}
	if _, err := os.Stat(filepath.Join(cniBinDir, "loopback")); err != nil {
		return nil, fmt.Errorf("containerd: no CNI loopback plugin (apt-get install containernetworking-plugins): %w", err)
	}
	// The workers only fetch: containerd runs the function.
	wenv := *env
	wenv.Spec, wenv.RunDir = nil, ""
	wd, err := deployWorkers(ctx, &wenv, "containerd", env.Images, false, false, 1, env.Scenario.BlockSize)
	if err != nil {
		return nil, err
	}
	d := &criDeployment{env: env, wd: wd.(*workerDeployment), ctr: tools[1],
		ready: map[string]time.Time{}, read: map[string]int64{}, errs: map[string]string{}, phases: map[string]map[string]time.Time{}}
	if err := d.start(ctx, tools[0]); err != nil {
		d.Close()
		return nil, fmt.Errorf("containerd: %w", err)
	}
	return d, nil
}

// criDeployment is a workerDeployment whose VMs also run a snapshotter and
// a containerd each.
type criDeployment struct {
	env *Env
	wd  *workerDeployment
	ctr string
	vms []*criVM

	mu    sync.Mutex
	ready map[string]time.Time
	read  map[string]int64 // what the snapshotter had read at ready
	errs  map[string]string
	// phases of the CRI start by VM: pulled (PullImage returned) and
	// started (StartContainer returned).
	phases map[string]map[string]time.Time
}

// criVM is one VM's processes besides its worker.
type criVM struct {
	name   string
	dir    string
	oci    *http.Server
	ociWG  sync.WaitGroup
	snap   *snapshotter.Snapshotter
	stop   context.CancelFunc
	snapWG sync.WaitGroup
	node   *crinode.Node
	port   int
	pod    *crinode.Pod
}

func (d *criDeployment) start(ctx context.Context, containerd string) error {
	pause := filepath.Join(d.env.Dir, "pause.tar")
	if err := writePauseImage(pause); err != nil {
		return err
	}
	reg, err := containerdcfg.ParseRegistry("http://" + d.env.Registry.Addr())
	if err != nil {
		return err
	}
	for i, vm := range d.env.VMs {
		v := &criVM{name: vm.Name}
		d.vms = append(d.vms, v)
		// Unix socket paths must stay short: not under env.Dir.
		if v.dir, err = os.MkdirTemp("", "fn-cri-"); err != nil {
			return err
		}
		ln, err := listen(vm)
		if err != nil {
			return err
		}
		v.oci = httpserver.New(d.wd.worker(i).OCIHandler(), httpserver.Options{})
		v.ociWG.Go(func() { v.oci.Serve(ln) })
		sock := filepath.Join(v.dir, "snap.sock")
		v.snap, err = snapshotter.New(ctx, snapshotter.Config{Root: filepath.Join(v.dir, "snapshots"), Socket: sock,
			Worker: ln.Addr().String(), Logger: d.env.Logger})
		if err != nil {
			return fmt.Errorf("%s: %w", vm.Name, err)
		}
		sctx, stop := context.WithCancel(context.Background())
		v.stop = stop
		v.snapWG.Go(func() { v.snap.Serve(sctx) })
		v.node, err = crinode.Start(ctx, crinode.Config{Dir: v.dir, Containerd: containerd, Worker: ln.Addr().String(),
			Registry: reg, Snapshotter: containerdcfg.SnapshotterName, SnapshotterSocket: sock,
			SandboxImage: pauseRef, CNIBinDir: cniBinDir})
		if err != nil {
			return fmt.Errorf("%s: %w", vm.Name, err)
		}
		if err := v.node.Import(ctx, d.ctr, pause); err != nil {
			return fmt.Errorf("%s: %w", vm.Name, err)
		}
		if v.port, err = freePort(); err != nil {
			return err
		}
	}
	return nil
}

// Provision implements Deployment: the function goes to every VM in one
// scale request, as for faasnet; once a VM's worker has the manifest, its
// containerd starts the function through CRI.
func (d *criDeployment) Provision(ctx context.Context) error {
	if len(d.wd.fns) == 0 || len(d.wd.fns[0]) != 1 {
		return errors.New("containerd: one function image, please")
	}
	fn := d.wd.fns[0][0]
	if _, err := d.wd.client.Scale(ctx, fn, api.ScaleRequest{Count: len(d.wd.workers)}); err != nil {
		return fmt.Errorf("containerd: scaling: %w", err)
	}
	if t, err := d.wd.mgr.Tree(fn); err == nil {
		d.wd.mu.Lock()
		d.wd.trees = []api.Tree{t}
		d.wd.mu.Unlock()
	}
	var wg sync.WaitGroup
	for i, v := range d.vms {
		wg.Go(func() {
			if err := d.run(ctx, i, v, fn); err != nil {
				d.mu.Lock()
				d.errs[v.name] = err.Error()
				d.mu.Unlock()
			}
		})
	}
	wg.Wait()
	return ctx.Err()
}

// run starts the function on VM i as kubelet would, once its worker
// serves the image.
func (d *criDeployment) run(ctx context.Context, i int, v *criVM, fn string) error {
	if err := waitManifest(ctx, d.wd.worker(i), fn); err != nil {
		return err
	}
	ref := d.env.Images[0].Ref
	pod, err := v.node.RunPod(ctx, "fn-"+v.name)
	if err != nil {
		return err
	}
	v.pod = pod
	if err := pod.Pull(ctx, ref); err != nil {
		return err
	}
	d.phase(v.name, "pulled")
	id, err := pod.StartFunction(ctx, ref, v.port)
	if err != nil {
		return err
	}
	d.phase(v.name, "started")
	var rd api.Readiness
	if err := specReadiness(d.env.Spec, &rd); err != nil {
		return err
	}
	if err := pod.WaitHealthy(ctx, id, fmt.Sprintf("http://127.0.0.1:%d%s", v.port, rd.Path)); err != nil {
		return err
	}
	d.mu.Lock()
	d.ready[v.name] = time.Now()
	d.read[v.name] = v.snap.BytesRead()
	d.mu.Unlock()
	return nil
}

// phase records that VM vm reached phase p of its CRI start now.
func (d *criDeployment) phase(vm, p string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.phases[vm] == nil {
		d.phases[vm] = map[string]time.Time{}
	}
	d.phases[vm][p] = time.Now()
}

// Progress implements Deployment: the workers' bytes, ready by CRI.
func (d *criDeployment) Progress() Snapshot {
	s := d.wd.Progress()
	d.mu.Lock()
	defer d.mu.Unlock()
	for i := range s.VMs {
		_, s.VMs[i].Ready = d.ready[s.VMs[i].VM]
		if e := d.errs[s.VMs[i].VM]; e != "" {
			s.VMs[i].Failed = e
		}
	}
	return s
}

// Report implements Deployment. A VM is correct when its function
// answered: the snapshotter checked every chunk it read against the TOC.
func (d *criDeployment) Report(ctx context.Context) []VMReport {
	out := make([]VMReport, len(d.wd.workers))
	for i, w := range d.wd.workers {
		r := VMReport{VM: w.ID(), Phases: map[string]time.Time{}}
		for _, f := range w.Functions() {
			r.Received += f.BytesFetched
			r.FromRegistry += f.BytesFromRegistry
			for k, t := range f.Phases {
				if k == "assigned" || k == "manifest" {
					r.Phases[k] = t
				}
			}
		}
		r.Uploaded = scrapeCounter(w.Metrics(), "faasnet_worker_bytes_out_total")
		d.mu.Lock()
		r.Ready, r.BytesBeforeReady, r.Err = d.ready[w.ID()], d.read[w.ID()], d.errs[w.ID()]
		for k, t := range d.phases[w.ID()] {
			r.Phases[k] = t
		}
		d.mu.Unlock()
		if !r.Ready.IsZero() {
			r.Phases["ready"] = r.Ready
		}
		r.Correct = !r.Ready.IsZero() && r.Err == ""
		if r.Ready.IsZero() && r.Err == "" {
			r.Err = "not ready"
		}
		out[i] = r
	}
	return out
}

// Close implements Deployment: pods, containerd, snapshotters, then the
// workers and the manager.
func (d *criDeployment) Close() error {
	var errs []error
	for _, v := range d.vms {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if v.pod != nil {
			errs = append(errs, v.pod.Remove(ctx))
		}
		cancel()
		if v.node != nil {
			errs = append(errs, v.node.Close())
		}
		if v.stop != nil {
			v.stop()
			v.snapWG.Wait()
		}
		if v.oci != nil {
			v.oci.Close()
			v.ociWG.Wait()
		}
	}
	errs = append(errs, d.wd.Close())
	for _, v := range d.vms {
		if v.dir != "" {
			os.RemoveAll(v.dir)
		}
	}
	return errors.Join(errs...)
}

// Trees returns the function tree.
func (d *criDeployment) Trees() []api.Tree { return d.wd.Trees() }

func specReadiness(spec []byte, rd *api.Readiness) error {
	var s api.FunctionSpec
	if err := json.Unmarshal(spec, &s); err != nil {
		return fmt.Errorf("the function's spec: %w", err)
	}
	if s.Readiness == nil || s.Readiness.Path == "" {
		return errors.New("the function's spec has no readiness path")
	}
	*rd = *s.Readiness
	return nil
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// pauseELF is a static x86-64 Linux program that calls pause(2) forever:
// the sandbox's process, built here since a node pulls nothing but the
// function, and Go binaries here are linked dynamically.
func pauseELF() []byte {
	code := []byte{0xb8, 34, 0, 0, 0, 0x0f, 0x05, 0xeb, 0xf7} // mov eax, SYS_pause; syscall; jmp back
	const base, hdr = 0x400000, 64 + 56
	var b bytes.Buffer
	le := binary.LittleEndian
	b.Write([]byte{0x7f, 'E', 'L', 'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	for _, v := range []any{uint16(2), uint16(0x3e), uint32(1), uint64(base + hdr), uint64(64), uint64(0), uint32(0),
		uint16(64), uint16(56), uint16(1), uint16(0), uint16(0), uint16(0)} {
		binary.Write(&b, le, v)
	}
	n := uint64(hdr + len(code))
	for _, v := range []any{uint32(1), uint32(5), uint64(0), uint64(base), uint64(base), n, n, uint64(0x1000)} {
		binary.Write(&b, le, v)
	}
	b.Write(code)
	return b.Bytes()
}

// writePauseImage writes the sandbox image, pauseRef, as a tarball.
func writePauseImage(path string) error {
	if runtime.GOARCH != "amd64" {
		return fmt.Errorf("the sandbox image's program is x86-64 only, this is %s", runtime.GOARCH)
	}
	prog := pauseELF()
	var lb bytes.Buffer
	tw := tar.NewWriter(&lb)
	tw.WriteHeader(&tar.Header{Name: "pause", Mode: 0o755, Size: int64(len(prog)), Typeflag: tar.TypeReg})
	tw.Write(prog)
	tw.Close()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(lb.Bytes())), nil })
	if err != nil {
		return err
	}
	// The config first, then the layer: AppendLayers records its diff id.
	base, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{OS: "linux", Architecture: "amd64",
		RootFS: v1.RootFS{Type: "layers"}, Config: v1.Config{Entrypoint: []string{"/pause"}}})
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(base, layer)
	if err != nil {
		return err
	}
	tag, err := name.NewTag(pauseRef)
	if err != nil {
		return err
	}
	return tarball.WriteToFile(path, tag, img)
}

// waitManifest waits until w has fn's manifest, and so serves its image.
// The worker signals states, not this phase: poll, with ctx's deadline.
func waitManifest(ctx context.Context, w *worker.Worker, fn string) error {
	for {
		for _, f := range w.Functions() {
			if f.Function == fn && f.State == api.StateFailed {
				return fmt.Errorf("function %s failed on %s: %s", fn, w.ID(), f.Error)
			}
			if f.Function == fn && f.ImageBytes > 0 {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the manifest of %s: %w", fn, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
