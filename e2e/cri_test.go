package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/containerdcfg"
	"github.com/faasnet/faasnet/crinode"
	"github.com/faasnet/faasnet/internal/testenv"
)

// Issue 14's check: containerd's CRI, driven in kubelet's order
// (RunPodSandbox, PullImage, CreateContainer, StartContainer), starts the
// Python function (eStargz) on three VMs, each a worker process with its own
// containerd and `faasnet snapshotter`, pulling only through the function
// tree. Lazily through the faasnet snapshotter, each VM's function answers
// its readiness path after its node read at most 15% of the image, with
// its worker well short of the whole image; and whole, through the
// hosts.toml mirror with containerd's overlayfs snapshotter. Either way only the tree's root reads from the registry, each
// byte at most once.

// cniLoopback is the CNI plugin CRI's NetworkReady needs a configuration
// for; host-network pods never run it.
const cniLoopback = "/usr/lib/cni/loopback"

// pauseRef names the sandbox image, imported from a file rather than pulled:
// nodes preload it, and nothing but the function's image may reach the
// registry.
const pauseRef = "faasnet.test/pause:1"

func TestCRIPythonFunctionThreeVMs(t *testing.T) {
	t.Parallel() // mostly CPU, beside the HA tests, mostly waiting on leases
	testenv.NeedContainers(t)
	for _, tool := range []string{"containerd", "ctr", "debootstrap"} {
		testenv.NeedTool(t, tool)
	}
	if _, err := os.Stat(cniLoopback); err != nil {
		if testenv.InCI() {
			t.Fatalf("no CNI loopback plugin (apt-get install containernetworking-plugins): %v", err)
		}
		t.Skipf("no CNI loopback plugin (apt-get install containernetworking-plugins): %v", err)
	}
	if testing.Short() && !testenv.InCI() {
		t.Skip("builds the Python image (minutes on a fresh machine); run without -short")
	}
	reg := testenv.StartRegistry(t)
	proxy, counter := testenv.CountingProxy(t, reg)
	ref := proxy + "/fn/python:estargz"
	out := run(t, "image", "python", "--push-estargz", ref)
	t.Logf("faasnet image python: %s", strings.TrimSpace(out))

	sizes := blobSizes(t, reg+"/fn/python:estargz")

	pause := filepath.Join(t.TempDir(), "pause.tar")
	tag, err := name.NewTag(pauseRef)
	if err != nil {
		t.Fatal(err)
	}
	if err := tarball.WriteToFile(pause, tag, testenv.ServerImage(t, 0)); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name        string
		snapshotter string
		down, up    string // each worker's download and upload limits (uploads feed two children)
		lazy        bool
	}{
		// Links slow enough that a whole pull takes far longer than a lazy
		// start: the workers stream the whole image from assignment on.
		{name: "faasnet-snapshotter", snapshotter: containerdcfg.SnapshotterName, down: "4MiB/s", up: "8MiB/s", lazy: true},
		{name: "hosts-mirror-overlayfs", snapshotter: "overlayfs", down: "32MiB/s", up: "64MiB/s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			counter.Reset()
			runCRIVMs(t, ref, pause, tc.snapshotter, tc.down, tc.up, tc.lazy, counter, sizes)
		})
	}
}

// criVM is one VM: a worker, maybe a snapshotter, a containerd.
type criVM struct {
	id     string
	worker *proc
	dir    string
	snap   *daemon // nil without the faasnet snapshotter
	node   *crinode.Node
	rt     cri.RuntimeServiceClient
	images cri.ImageServiceClient
	port   int

	removePod func() // stops and removes the function's pod, once
}

// criResult is what one VM's start measured.
type criResult struct {
	ready       time.Duration // from PullImage to the first answer of /healthz
	bytesAtOK   int64         // the worker's fetched bytes, first report after ready
	imageBytes  int64
	depth       int
	fromReg     int64
	lazyMounts  int
	nodeRead    int64 // what the snapshotter read from the worker
	startFailed error
}

func runCRIVMs(t *testing.T, ref, pause, snapshotter, down, up string, lazy bool, counter *testenv.Counter, sizes map[string]int64) {
	ctx := t.Context()
	// One tree, as in the paper: its root alone reads the registry.
	mgr := startManager(t, "--vm-timeout", "5s", "--stripes", "1", "--block-size", "16KiB")
	c := mgr.admin(t)
	vms := make([]*criVM, 3)
	for i := range vms {
		id := fmt.Sprintf("vm-%d", i)
		w := start(t, id, append(mgr.workerArgs(t, id), "--oci-listen", "127.0.0.1:0", "--heartbeat", "200ms",
			"--download-limit", down, "--upload-limit", up)...)
		if w.oci == "" {
			t.Fatalf("%s logged no OCI endpoint", id)
		}
		dir, err := os.MkdirTemp("", "cri-") // unix socket paths stay short
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) }) // after everything below stopped
		vm := &criVM{id: id, worker: w, dir: dir, port: freePort(t)}
		if snapshotter == containerdcfg.SnapshotterName {
			vm.snap = startDaemon(t, id+"-snapshotter", filepath.Join(dir, "snapshotter.log"), binary, "snapshotter",
				"--root", filepath.Join(dir, "snapshots"), "--socket", filepath.Join(dir, "snap.sock"), "--worker", w.oci)
			waitSocket(t, vm.snap, filepath.Join(dir, "snap.sock"))
		}
		startCRIContainerd(t, vm, proxy(ref), snapshotter, pause)
		vms[i] = vm
	}
	waitVMs(t, c, len(vms))

	if _, err := c.PutFunction(ctx, "py", api.FunctionRequest{Image: ref}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Scale(ctx, "py", api.ScaleRequest{Count: len(vms)}); err != nil {
		t.Fatal(err)
	}
	waitManifests(t, c, "py", len(vms))

	results := make([]criResult, len(vms))
	var wg sync.WaitGroup
	for i, vm := range vms {
		wg.Go(func() { results[i] = vm.startFunction(t, ctx, c, ref) })
	}
	wg.Wait()

	st, err := c.Status(ctx, "py")
	if err != nil {
		t.Fatal(err)
	}
	byVM := map[string]api.VMStatus{}
	for _, v := range st.VMs {
		byVM[v.VM] = v
	}
	for i, vm := range vms {
		r := &results[i]
		if r.startFailed != nil {
			t.Errorf("%s: %v", vm.id, r.startFailed)
			continue
		}
		v := byVM[vm.id]
		r.depth, r.fromReg = v.Depth, v.BytesFromRegistry
		frac := float64(r.bytesAtOK) / float64(r.imageBytes)
		if vm.snap != nil {
			// The pod gone, nothing reads the layers any more: what the
			// snapshotter says it read when it stops is what the function
			// read before it answered, and a little after.
			vm.removePod()
			vm.snap.stop(t)
			r.nodeRead = snapshotterRead(vm.snap.logText())
		}
		reads := "no snapshotter"
		if vm.snap != nil {
			reads = fmt.Sprintf("the node read %d through the snapshotter (%.1f%%)", r.nodeRead, 100*float64(r.nodeRead)/float64(r.imageBytes))
		}
		t.Logf("%s (depth %d): ready %v after PullImage; its worker had fetched %d of %d bytes (%.1f%%), %s; %d bytes from the registry so far",
			vm.id, r.depth, r.ready.Round(time.Millisecond), r.bytesAtOK, r.imageBytes, 100*frac, reads, r.fromReg)
		if v.Parent != nil && v.BytesFromRegistry != 0 {
			t.Errorf("%s is not the root but fetched %d bytes from the registry", vm.id, v.BytesFromRegistry)
		}
		if !lazy {
			if r.bytesAtOK != r.imageBytes {
				t.Errorf("%s: a whole pull, but its worker had fetched %d of %d bytes when the function answered", vm.id, r.bytesAtOK, r.imageBytes)
			}
			continue
		}
		// Bytes before ready are what the container read, as the worker
		// counts them for its own lazy starts (api.FunctionReport).
		if nodeFrac := float64(r.nodeRead) / float64(r.imageBytes); r.nodeRead < 0 || nodeFrac > 0.15 {
			t.Errorf("%s: the node read %d bytes (%.1f%% of the image) through the snapshotter, want at most 15%%", vm.id, r.nodeRead, 100*nodeFrac)
		}
		// The worker streams the rest of the image from assignment on (it
		// cannot know when containerd's container is ready), alongside the
		// demands: well short of the whole image still.
		if frac > 0.5 {
			t.Errorf("%s: its worker had fetched %.1f%% of the image when the function answered, want well under half", vm.id, 100*frac)
		}
		r.lazyMounts = strings.Count(vm.snap.logText(), "mounted a layer lazily")
		if r.lazyMounts == 0 {
			t.Errorf("%s: the faasnet snapshotter mounted no layer lazily", vm.id)
		}
	}
	// The workers' streams from the registry end with them, and the
	// registry's count is complete: at least what they reported last.
	last, err := c.Status(ctx, "py")
	if err != nil {
		t.Fatal(err)
	}
	var reported int64
	for _, v := range last.VMs {
		reported += v.BytesFromRegistry
	}
	for _, vm := range vms {
		vm.worker.stop(t)
	}
	settle(t, counter, reported)
	checkRegistryOnce(t, counter, st, sizes)
	workerDownFails(t, vms[len(vms)-1], ref, counter)
}

// settle waits until the counting proxy has recorded the responses it was
// sending when the workers stopped (it records a response when it ends):
// at least the bytes the workers said they received from it, and no change
// for half a second.
func settle(t *testing.T, counter *testenv.Counter, atLeast int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	last, since := counter.TotalBytes(), time.Now()
	for last < atLeast || time.Since(since) < 500*time.Millisecond {
		if time.Now().After(deadline) {
			t.Fatalf("the registry's count is %d bytes 30s after the workers stopped, they reported %d from it", last, atLeast)
		}
		time.Sleep(50 * time.Millisecond) // polling the proxy's count, with a deadline
		if n := counter.TotalBytes(); n != last {
			last, since = n, time.Now()
		}
	}
}

// workerDownFails pulls the image again on vm, whose worker is stopped:
// the pull fails naming the worker, and nothing reaches the registry, where
// a mirror that fails over would have gone.
func workerDownFails(t *testing.T, vm *criVM, ref string, counter *testenv.Counter) {
	t.Helper()
	before := counter.Requests()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	if _, err := vm.images.RemoveImage(ctx, &cri.RemoveImageRequest{Image: &cri.ImageSpec{Image: ref}}); err != nil {
		t.Fatalf("%s: RemoveImage: %v", vm.id, err)
	}
	_, err := vm.images.PullImage(ctx, &cri.PullImageRequest{Image: &cri.ImageSpec{Image: ref}})
	switch {
	case err == nil:
		t.Errorf("%s: PullImage with the worker down succeeded", vm.id)
	case !strings.Contains(err.Error(), vm.worker.oci):
		t.Errorf("%s: PullImage with the worker down: %v; want an error naming the worker at %s", vm.id, err, vm.worker.oci)
	default:
		t.Logf("%s: PullImage with the worker down: %v", vm.id, err)
	}
	if after := counter.Requests(); after != before {
		t.Errorf("%s: with its worker down, the node sent %d requests to the registry", vm.id, after-before)
	}
}

// checkRegistryOnce checks the registry's egress: no blob of the image
// sent more than once (a range at most once, in total at most its size).
func checkRegistryOnce(t *testing.T, counter *testenv.Counter, st api.Status, sizes map[string]int64) {
	t.Helper()
	var total int64
	for d, bc := range counter.Blobs() {
		total += bc.Bytes
		t.Logf("registry sent %d bytes of %s in %d GETs", bc.Bytes, d, bc.Gets)
	}
	var image int64
	for _, v := range st.VMs {
		image = max(image, v.ImageBytes)
	}
	t.Logf("registry egress: %d bytes of blobs for a %d-byte image", total, image)
	if total > image {
		t.Errorf("the registry sent %d bytes of blobs, more than the image's %d: some bytes went out twice", total, image)
	}
	for d, bc := range counter.Blobs() {
		if size, ok := sizes[d]; !ok || bc.Bytes > size {
			t.Errorf("the registry sent %d bytes of %s (a blob of %d bytes): some went out twice", bc.Bytes, d, size)
		}
	}
}

// startFunction drives CRI as kubelet does and waits for the function's
// readiness path.
func (vm *criVM) startFunction(t *testing.T, ctx context.Context, c *api.Client, ref string) (r criResult) {
	fail := func(format string, args ...any) criResult {
		r.startFailed = fmt.Errorf(format, args...)
		return r
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	pod, err := vm.node.RunPod(ctx, "py-"+vm.id)
	if err != nil {
		return fail("%w", err)
	}
	vm.removePod = sync.OnceFunc(func() {
		sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := pod.Remove(sctx); err != nil {
			t.Errorf("%s: %v", vm.id, err)
		}
	})
	t.Cleanup(vm.removePod)
	start := time.Now()
	if err := pod.Pull(ctx, ref); err != nil {
		return fail("%w", err)
	}
	t.Logf("%s: PullImage returned after %v", vm.id, time.Since(start).Round(time.Millisecond))
	id, err := pod.StartFunction(ctx, ref, vm.port)
	if err != nil {
		return fail("%w", err)
	}
	if err := pod.WaitHealthy(ctx, id, fmt.Sprintf("http://127.0.0.1:%d/healthz", vm.port)); err != nil {
		return fail("%w", err)
	}
	r.ready = time.Since(start)
	r.bytesAtOK, r.imageBytes, err = reportAfter(ctx, c, vm.id)
	if err != nil {
		return fail("%w", err)
	}
	return r
}

// reportAfter returns vm's fetched bytes from the first two of its reports
// that the manager takes after now: the second is surely sent after now,
// so it is an upper bound of what the worker had at now.
func reportAfter(ctx context.Context, c *api.Client, vm string) (fetched, image int64, err error) {
	var seen []int64
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := c.Status(ctx, "py")
		if err != nil {
			return 0, 0, fmt.Errorf("status: %w", err)
		}
		for _, v := range st.VMs {
			if v.VM != vm {
				continue
			}
			if len(seen) == 0 || seen[len(seen)-1] != v.BytesFetched {
				seen = append(seen, v.BytesFetched)
			}
			// Two changes after the first read, or the whole image (no
			// more changes to come): either is at least what it had.
			if len(seen) == 3 || v.BytesFetched >= v.ImageBytes && v.ImageBytes > 0 {
				return v.BytesFetched, v.ImageBytes, nil
			}
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("%s reported no progress for 10s after ready (reports %v)", vm, seen)
		}
		select {
		case <-ctx.Done():
			return 0, 0, ctx.Err()
		case <-time.After(20 * time.Millisecond): // polling the manager's view
		}
	}
}

// waitManifests waits until every VM of fn has the image's manifest (it
// then serves the image on its OCI endpoint).
func waitManifests(t *testing.T, c *api.Client, fn string, n int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		st, err := c.Status(t.Context(), fn)
		ok := 0
		if err == nil {
			for _, v := range st.VMs {
				if v.ImageBytes > 0 {
					ok++
				}
				if v.State == api.StateFailed {
					t.Fatalf("%s failed: %s", v.VM, v.Error)
				}
			}
		}
		if ok == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d VMs know the image after a minute (%v)", ok, n, err)
		}
		time.Sleep(50 * time.Millisecond) // polling the manager's view, with a deadline
	}
}

// blobSizes maps the config's and each layer's digest of the image ref to
// its size, asked of the registry itself, not through the counting proxy.
func blobSizes(t *testing.T, ref string) map[string]int64 {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r, remote.WithContext(t.Context()))
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	sizes := map[string]int64{m.Config.Digest.String(): m.Config.Size}
	for _, l := range m.Layers {
		sizes[l.Digest.String()] = l.Size
	}
	return sizes
}

// snapshotterRead is the read_from_worker a stopped snapshotter logged.
func snapshotterRead(log string) int64 {
	const key = "read_from_worker="
	i := strings.LastIndex(log, key)
	if i < 0 {
		return -1
	}
	f := strings.Fields(log[i+len(key):])
	if len(f) == 0 {
		return -1
	}
	n, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		return -1
	}
	return n
}

// proxy is the registry host of ref.
func proxy(ref string) string { return ref[:strings.Index(ref, "/")] }

// startCRIContainerd starts vm's containerd (package crinode: pulls of
// registry going to vm's worker only) and loads the sandbox image into it.
func startCRIContainerd(t *testing.T, vm *criVM, registry, snapshotter, pause string) {
	t.Helper()
	r, err := containerdcfg.ParseRegistry("http://" + registry)
	if err != nil {
		t.Fatal(err)
	}
	vm.node, err = crinode.Start(t.Context(), crinode.Config{
		Dir:               vm.dir,
		Containerd:        testenv.NeedTool(t, "containerd"),
		Worker:            vm.worker.oci,
		Registry:          r,
		Snapshotter:       snapshotter,
		SnapshotterSocket: filepath.Join(vm.dir, "snap.sock"),
		SandboxImage:      pauseRef,
		CNIBinDir:         filepath.Dir(cniLoopback),
	})
	if err != nil {
		t.Fatalf("%s: %v", vm.id, err)
	}
	t.Cleanup(func() {
		if err := vm.node.Close(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("--- log of %s-containerd ---\n%s", vm.id, crinode.LastLines(vm.node.Log(), 40))
		}
	})
	vm.rt, vm.images = vm.node.Runtime, vm.node.Images
	if err := vm.node.Import(t.Context(), testenv.NeedTool(t, "ctr"), pause); err != nil {
		t.Fatalf("%s: %v", vm.id, err)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// daemon is a process the test started that logs to a file.
type daemon struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}

	stopOnce sync.Once
}

// startDaemon starts bin with args, its output to logPath, and stops it in
// t.Cleanup: SIGTERM, then SIGKILL after 20 s.
func startDaemon(t *testing.T, name, logPath, bin string, args ...string) *daemon {
	t.Helper()
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = crinode.Environ()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatal(err)
	}
	d := &daemon{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { cmd.Wait(); f.Close(); close(d.done) }()
	t.Cleanup(func() {
		d.stop(t)
		if t.Failed() {
			t.Logf("--- log of %s (%s) ---\n%s", name, logPath, crinode.LastLines(d.logText(), 40))
		}
	})
	return d
}

// stop ends d with SIGTERM, or SIGKILL 20 s later, and waits for it.
func (d *daemon) stop(t *testing.T) {
	d.stopOnce.Do(func() {
		d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(20 * time.Second):
			d.cmd.Process.Kill()
			<-d.done
			t.Errorf("%s did not stop within 20s of SIGTERM", d.name)
		}
	})
}

func (d *daemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

func (d *daemon) logText() string {
	b, _ := os.ReadFile(d.log)
	return string(b)
}

// waitSocket waits until d accepts connections on sock.
func waitSocket(t *testing.T, d *daemon, sock string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := net.Dial("unix", sock)
		if err == nil {
			conn.Close()
			return
		}
		if d.exited() || time.Now().After(deadline) {
			t.Fatalf("%s does not serve %s: %v\n%s", d.name, sock, err, d.logText())
		}
		time.Sleep(50 * time.Millisecond) // polling the socket, with a deadline
	}
}
