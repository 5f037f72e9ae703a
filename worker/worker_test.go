package worker

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/imagegen"
	"github.com/faasnet/faasnet/manager"
	"github.com/faasnet/faasnet/manager/store"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// blobCounter counts what a registry sends per blob digest.
type blobCounter struct {
	mu    sync.Mutex
	bytes map[string]int64
	gets  map[string]int
}

func (c *blobCounter) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := strings.LastIndex(r.URL.Path, "/blobs/")
		if r.Method != http.MethodGet || i < 0 {
			h.ServeHTTP(w, r)
			return
		}
		d := r.URL.Path[i+len("/blobs/"):]
		cw := &countingWriter{ResponseWriter: w}
		h.ServeHTTP(cw, r)
		c.mu.Lock()
		c.bytes[d] += cw.n
		c.gets[d]++
		c.mu.Unlock()
	})
}

type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (w *countingWriter) Write(p []byte) (int, error) {
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}

// cluster is a registry, a manager and workers in this process.
type cluster struct {
	t       *testing.T
	ctx     context.Context
	reg     string // registry host:port
	counter *blobCounter
	mgr     *api.Client
	workers map[string]*Worker
	stops   map[string]context.CancelFunc
	dones   map[string]chan struct{}
}

func newCluster(t *testing.T, vmTimeout time.Duration) *cluster {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c := &cluster{t: t, ctx: ctx, counter: &blobCounter{bytes: map[string]int64{}, gets: map[string]int{}},
		workers: map[string]*Worker{}, stops: map[string]context.CancelFunc{}, dones: map[string]chan struct{}{}}
	regSrv := httptest.NewServer(c.counter.wrap(registry.New(registry.Logger(nopLog()))))
	t.Cleanup(regSrv.Close)
	c.reg = strings.TrimPrefix(regSrv.URL, "http://")

	m, err := manager.New(ctx, store.NewMemory(), manager.Options{VMTimeout: vmTimeout, Push: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	go m.Run(ctx)
	mSrv := httptest.NewServer(m.Handler())
	t.Cleanup(mSrv.Close)
	t.Cleanup(m.Close)
	c.mgr = api.NewClient(mSrv.URL)
	return c
}

// testLogger discards logs unless FAASNET_TEST_LOG=1.
func testLogger() *slog.Logger {
	if os.Getenv("FAASNET_TEST_LOG") == "1" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func nopLog() *log.Logger { return log.New(io.Discard, "", 0) }

func (c *cluster) push(spec imagegen.Spec) (string, v1.Image) {
	return c.pushTag(spec, "v1")
}

// pushTag pushes an image as test/app:tag.
func (c *cluster) pushTag(spec imagegen.Spec, tag string) (string, v1.Image) {
	img, err := imagegen.Image(spec)
	if err != nil {
		c.t.Fatal(err)
	}
	ref := c.reg + "/test/app:" + tag
	if err := imagegen.Push(c.ctx, img, ref); err != nil {
		c.t.Fatal(err)
	}
	c.counter.mu.Lock()
	c.counter.bytes, c.counter.gets = map[string]int64{}, map[string]int{}
	c.counter.mu.Unlock()
	return ref, img
}

// start runs a worker on its own loopback listener.
func (c *cluster) start(id string, mod func(*Config)) *Worker {
	c.t.Helper()
	cfg := testConfig(c.t, id, c.mgr.Base)
	if mod != nil {
		mod(&cfg)
	}
	w, _, cancel, done := serveWorker(c.t, c.ctx, cfg)
	c.workers[id], c.stops[id], c.dones[id] = w, cancel, done
	return w
}

// testConfig is the configuration of a test cluster's workers: quick
// heartbeats and short failover times.
func testConfig(t *testing.T, id, manager string) Config {
	return Config{ID: id, Manager: manager, CacheDir: t.TempDir(), Heartbeat: 100 * time.Millisecond,
		ParentTimeout: 2 * time.Second, StallTimeout: 3 * time.Second, Logger: testLogger()}
}

// serveWorker runs a worker of cfg on a loopback listener until the test
// ends (or cancel), then checks that it leaked no cache reference. done is
// closed when Serve returned.
func serveWorker(t *testing.T, parent context.Context, cfg Config) (w *Worker, addr string, cancel context.CancelFunc, done chan struct{}) {
	t.Helper()
	w, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(parent)
	done = make(chan struct{})
	go func() { defer close(done); w.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		<-done
		checkNoReferences(t, w)
	})
	return w, ln.Addr().String(), cancel, done
}

// newWorker makes a worker that is not served, for tests of its parts. Its
// cache is closed, and checked for leaked references, when the test ends.
func newWorker(t *testing.T, cfg Config) *Worker {
	t.Helper()
	if cfg.ID == "" {
		cfg.ID = "vm"
	}
	if cfg.Manager == "" {
		cfg.Manager = "http://127.0.0.1:1"
	}
	if cfg.CacheDir == "" {
		cfg.CacheDir = t.TempDir()
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger()
	}
	w, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		checkNoReferences(t, w)
		w.cache.Close()
	})
	return w
}

// checkNoReferences fails t if w's cache still holds references: once a
// worker stopped, or a test of its parts released what it took, a blob still
// referenced could never be evicted, and a partial one's bitmap would not be
// flushed on release.
func checkNoReferences(t *testing.T, w *Worker) {
	t.Helper()
	if s := w.cache.Stats(); s.InUse != 0 {
		t.Errorf("worker %s: %d cache blobs still referenced after it stopped", w.ID(), s.InUse)
	}
}

// waitRegistered waits until the manager knows n VMs.
func (c *cluster) waitRegistered(n int) {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		vms, err := c.mgr.VMs(c.ctx)
		if err == nil && len(vms) == n {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%d VMs registered, want %d (%v)", len(vms), n, err)
		}
		time.Sleep(20 * time.Millisecond) // polling another party's state, with a deadline
	}
}

func (c *cluster) waitReady(fn string, ids []string, timeout time.Duration) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.ctx, timeout)
	defer cancel()
	for _, id := range ids {
		if err := c.workers[id].WaitState(ctx, fn, api.StateReady); err != nil {
			c.t.Fatal(err)
		}
	}
}

func ids(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("vm-%02d", i)
	}
	return out
}

func TestTreeStreamsImageAndRegistryServesEachBlobOnce(t *testing.T) {
	c := newCluster(t, 10*time.Second)
	ref, img := c.push(imagegen.Spec{TotalSize: 6 << 20, Layers: 3, Seed: 1})
	names := ids(7)
	for _, id := range names {
		c.start(id, func(cfg *Config) { cfg.BlockSize = 64 << 10; cfg.DownloadLimit = 16 << 20; cfg.UploadLimit = 16 << 20 })
	}
	c.waitRegistered(7)
	if _, err := c.mgr.PutFunction(c.ctx, "f", api.FunctionRequest{Image: ref}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.mgr.Scale(c.ctx, "f", api.ScaleRequest{VMs: names}); err != nil {
		t.Fatal(err)
	}
	c.waitReady("f", names, time.Minute)

	layers, _ := img.Layers()
	cfgDigest, _ := img.ConfigName()
	want := map[string]int64{}
	for _, l := range layers {
		d, _ := l.Digest()
		sz, _ := l.Size()
		want[d.String()] = sz
	}
	cfgRaw, _ := img.RawConfigFile()
	want[cfgDigest.String()] = int64(len(cfgRaw))
	c.counter.mu.Lock()
	for d, sz := range want {
		if c.counter.bytes[d] != sz {
			t.Errorf("registry sent %d bytes of %s in %d requests, want exactly its %d bytes once", c.counter.bytes[d], d, c.counter.gets[d], sz)
		}
	}
	c.counter.mu.Unlock()

	tree, err := c.mgr.Tree(c.ctx, "f")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range tree.Nodes {
		for _, r := range c.workers[n.VM].Functions() {
			if n.Parent != nil && r.BytesFromRegistry != 0 {
				t.Errorf("%s (not the root) fetched %d bytes from the registry", n.VM, r.BytesFromRegistry)
			}
			if n.Parent == nil && r.BytesFromParent != 0 {
				t.Errorf("root %s fetched %d bytes from a parent", n.VM, r.BytesFromParent)
			}
		}
		for d := range want {
			b, ok := c.workers[n.VM].cache.Lookup(d)
			if !ok || !b.Complete() {
				t.Errorf("%s: blob %s not complete", n.VM, d)
			}
			if ok {
				b.Release()
			}
		}
	}
}

// waitProgress waits until worker id has fetched at least n bytes of fn.
func (c *cluster) waitProgress(id, fn string, n int64) {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, r := range c.workers[id].Functions() {
			if r.Function == fn && r.BytesFetched >= n {
				if r.State == api.StateReady {
					c.t.Fatalf("%s finished before the fault could be injected", id)
				}
				return
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s did not fetch %d bytes of %s in time", id, n, fn)
		}
		time.Sleep(10 * time.Millisecond) // polling progress, with a deadline
	}
}

// TestInteriorWorkerDiesMidTransfer stops an interior VM while its
// subtree fetches through it: the manager repairs the tree and every other
// VM ends with the whole image. With two stripes the victim is interior in
// one stripe and a leaf of the other: only that stripe's fetches fail over.
func TestInteriorWorkerDiesMidTransfer(t *testing.T) {
	for _, k := range []int{1, 2} {
		t.Run(fmt.Sprintf("stripes=%d", k), func(t *testing.T) { interiorDies(t, k) })
	}
}

func interiorDies(t *testing.T, k int) {
	c := newCluster(t, time.Second)
	ref, _ := c.push(imagegen.Spec{TotalSize: 12 << 20, Layers: 3, Seed: 2})
	names := ids(7)
	for _, id := range names {
		c.start(id, func(cfg *Config) { cfg.BlockSize = 128 << 10; cfg.DownloadLimit = 4 << 20; cfg.UploadLimit = 8 << 20 })
	}
	c.waitRegistered(7)
	c.mgr.PutFunction(c.ctx, "f", api.FunctionRequest{Image: ref, Stripes: k})
	if _, err := c.mgr.Scale(c.ctx, "f", api.ScaleRequest{VMs: names}); err != nil {
		t.Fatal(err)
	}
	tree, _ := c.mgr.Tree(c.ctx, "f")
	var victim string
	for _, n := range tree.StripeTrees()[k-1].Nodes {
		if n.Depth == 1 && len(n.Children) > 0 {
			victim = n.VM
			break
		}
	}
	if victim == "" {
		t.Fatalf("no interior VM at depth 1 in %+v", tree)
	}
	c.waitProgress(victim, "f", 3<<20)
	c.stops[victim]()
	<-c.dones[victim]

	var rest []string
	for _, id := range names {
		if id != victim {
			rest = append(rest, id)
		}
	}
	c.waitReady("f", rest, 2*time.Minute)
	after, _ := c.mgr.Tree(c.ctx, "f")
	if len(after.Nodes) != 6 {
		t.Errorf("tree has %d VMs after the failure, want 6", len(after.Nodes))
	}
	for _, id := range rest {
		for _, r := range c.workers[id].Functions() {
			if r.BytesFetched < r.ImageBytes {
				t.Errorf("%s: fetched %d of %d bytes", id, r.BytesFetched, r.ImageBytes)
			}
		}
	}
}
