// Package worker is the agent on every VM. It follows the manager's
// assignments, fetches every blob of a function's image from its tree parent
// (the root: from the registry) into a block cache, serves its children while
// it is still receiving, and serves the local container runtime as a
// read-only registry mirror.
//
// The peer listener carries the peer protocol (/peer/v1/), pushed
// assignments (/worker/v1/assignments), /metrics and /healthz, and nothing
// under /v2/. In a cluster (Config.Security) it is mutual TLS with
// certificates of the cluster CA only: pushes are accepted from the manager
// only, and a blob is served only to a VM whose grant covers it. The local
// runtime's OCI read endpoint (/v2/) has a listener of its own, loopback or
// a unix socket (Config.OCI, ListenOCI), serving only the images of this
// VM's functions.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/blobcache"
	"github.com/faasnet/faasnet/bwlimit"
	"github.com/faasnet/faasnet/container"
	"github.com/faasnet/faasnet/failover"
	"github.com/faasnet/faasnet/internal/httpserver"
	"github.com/faasnet/faasnet/internal/logthrottle"
	"github.com/faasnet/faasnet/peer"
	"github.com/faasnet/faasnet/pki"
	"github.com/faasnet/faasnet/upstream"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Config configures a Worker. Zero values take the defaults noted.
type Config struct {
	ID        string // VM name, registered with the manager
	Manager   string // manager URL
	Advertise string // address children dial; default: the listener's
	CacheDir  string
	CacheSize int64 // bytes; 0 = unlimited
	BlockSize int64 // default 512 KiB

	UploadLimit   int64 // bytes/s to children; 0 = unlimited
	DownloadLimit int64 // bytes/s from parent or registry; 0 = unlimited
	MaxUploads    int   // concurrent child streams; default 16
	Capacity      int   // functions; 0 = the manager's default

	Heartbeat time.Duration // default 1 s
	// ParentTimeout is how long blocks may be unavailable from a failed
	// parent (waiting for the manager to repair the tree) before the worker
	// fetches them from the registry. Default 5 s.
	ParentTimeout time.Duration
	// StallTimeout is how long a stream may deliver nothing before the
	// source counts as failed. Default 10 s.
	StallTimeout time.Duration
	// BusyTimeout is how long a parent at its upload cap (503 with
	// Retry-After) is waited for before the registry serves. Default 30 s.
	BusyTimeout time.Duration

	// Containers makes the worker run the containers of functions whose
	// spec has a readiness check (needs root and runc). RunDir holds their
	// bundles, runc state and mounts; default CacheDir + ".run".
	Containers bool
	RunDir     string
	Runc       string // the runc binary; "" finds it
	// Sandbox fences the containers in; its zero value is the full sandbox.
	Sandbox Sandbox
	// RunContainer, when set, stands in for runc: it is given each
	// function's container to start (its lazy layers read through the
	// tree, or its image once fetched) and returns once the function is
	// ready, with how to stop it. Containers is then implied and RunDir
	// unused. For benches that replay what a container reads instead of
	// running one (cluster's replay mode), not for production.
	RunContainer func(ctx context.Context, f container.Function) (stop func(context.Context) error, err error)

	// Limits bound what one image may cost this worker.
	Limits Limits

	// OCI is the listener of the local runtime endpoint (see ListenOCI);
	// nil: none. Serve serves it and closes it.
	OCI net.Listener

	// Security is the VM's certificate and the cluster CA; nil runs
	// without TLS or any check, for benchmarks and tests only (see
	// Security).
	Security *Security

	Registry []upstream.Option // registry access (auth, transport)
	// HTTP limits the worker's server; zero fields take
	// httpserver.Defaults. Its WriteTimeout is also how long a child may
	// stall an upload before it loses its slot.
	HTTP   httpserver.Options
	Logger *slog.Logger
}

func (c *Config) defaults() error {
	if err := api.ValidName("VM", c.ID); err != nil {
		return err
	}
	if c.Manager == "" {
		return errors.New("worker: no manager URL")
	}
	if c.CacheDir == "" {
		return errors.New("worker: no cache directory")
	}
	if c.BlockSize <= 0 {
		c.BlockSize = blobcache.DefaultBlockSize
	}
	if c.MaxUploads <= 0 {
		c.MaxUploads = 16
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = time.Second
	}
	if c.ParentTimeout <= 0 {
		c.ParentTimeout = 5 * time.Second
	}
	if c.StallTimeout <= 0 {
		c.StallTimeout = 10 * time.Second
	}
	if c.BusyTimeout <= 0 {
		c.BusyTimeout = failover.Default.BusyTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Security != nil {
		if err := c.Security.check(c.ID, c.Manager); err != nil {
			return err
		}
	}
	c.HTTP = c.HTTP.WithDefaults()
	c.Limits = c.Limits.withDefaults()
	if c.RunDir == "" {
		c.RunDir = filepath.Clean(c.CacheDir) + ".run"
	}
	if c.Containers && !c.Sandbox.Off {
		if err := checkRunDir(c.RunDir); err != nil {
			return fmt.Errorf("worker: %w", err)
		}
	}
	c.Logger = c.Logger.With("vm", c.ID)
	return nil
}

// Worker is one VM's agent.
type Worker struct {
	cfg     Config
	log     *slog.Logger
	cache   *blobcache.Cache
	reg     *upstream.Registry
	peers   *peer.Client
	peerSrv *peer.Server
	mgr     *api.Client
	down    *bwlimit.Limiter
	metrics *metrics
	policy  failover.Policy // when fetches wait, retry or fail over
	handler http.Handler

	// Set with Config.Security: the checks of peers, the manager and
	// grants against the CA, and the serials the manager revoked.
	verifier *pki.Verifier
	revoked  *pki.Revocations

	ociHandler http.Handler // the local runtime endpoint, on Config.OCI

	refusalLog logthrottle.Throttle // one refusal line per reason a second

	containers *container.Host // nil unless Config.Containers
	sandboxNet *sandboxNet     // the containers' network; nil without a sandbox

	// serving is read-held by every request Serve's server runs, so that
	// Serve can wait for them: they hold cache references.
	serving  sync.RWMutex
	stopping bool           // guarded by serving: refuse new requests
	bg       sync.WaitGroup // provisioning, fetch jobs and child demands; Serve waits for them

	kick   chan struct{} // heartbeat now
	report chan struct{} // send a status report soon

	mu       sync.Mutex
	ctx      context.Context // the worker's lifetime, set by Serve
	fns      map[string]*function
	removed  map[string]uint64 // generation at which a function was dropped
	revision uint64            // newest assignments document applied
	jobs     map[string]*job   // blob fetches by digest
	known    map[string]*blobInfo
	images   map[string]peer.Descriptor // image reference -> manifest
	changed  chan struct{}              // closed and replaced when known or images grow
	stateCh  chan struct{}              // closed and replaced when a function's state changes

	inflight   map[string]map[int]chan struct{} // blocks being fetched on demand, by digest
	demands    int                              // on-demand fetches in flight
	demandIdle chan struct{}                    // closed when demands drops to zero
}

// New opens the cache and prepares a worker; Serve runs it.
func New(cfg Config) (*Worker, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	cache, err := blobcache.Open(cfg.CacheDir, blobcache.Options{BlockSize: cfg.BlockSize, MaxBytes: cfg.CacheSize, Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("worker %s: %w", cfg.ID, err)
	}
	down := bwlimit.New(cfg.DownloadLimit)
	w := &Worker{
		cfg:      cfg,
		log:      cfg.Logger,
		cache:    cache,
		reg:      upstream.New(cfg.Registry...),
		peers:    &peer.Client{HTTP: peer.NewHTTPClient(), Download: down},
		mgr:      api.NewClient(cfg.Manager),
		down:     down,
		kick:     make(chan struct{}, 1),
		report:   make(chan struct{}, 1),
		fns:      map[string]*function{},
		removed:  map[string]uint64{},
		jobs:     map[string]*job{},
		known:    map[string]*blobInfo{},
		images:   map[string]peer.Descriptor{},
		changed:  make(chan struct{}),
		stateCh:  make(chan struct{}),
		inflight: map[string]map[int]chan struct{}{},
	}
	w.policy = failover.Default
	w.policy.ParentTimeout, w.policy.BusyTimeout = cfg.ParentTimeout, cfg.BusyTimeout
	var authz peer.Authorizer
	if cfg.Security != nil {
		w.secure()
		authz = newGrants(w)
	}
	w.peerSrv = peer.NewServer(w, peer.ServerOptions{
		Upload:     bwlimit.New(cfg.UploadLimit),
		MaxUploads: cfg.MaxUploads,
		// The server bounds each write by the same time anyway.
		StallTimeout: cfg.HTTP.WriteTimeout,
		BlockSize:    int(cfg.BlockSize),
		Resolver:     w,
		Authorizer:   authz,
		Logger:       w.log,
	})
	if cfg.Containers {
		sandbox, net := cfg.containerSandbox()
		w.sandboxNet = net
		w.containers = container.New(container.Config{Dir: cfg.RunDir, VM: cfg.ID, Runc: cfg.Runc, Logger: w.log, Limits: cfg.Limits.container(),
			Sandbox: sandbox, Account: func(n int64) func() { return cache.Reserve(n).Release }})
	}
	w.metrics = newMetrics(w)
	mux := http.NewServeMux()
	mux.Handle(peer.PathPrefix, w.peerSrv)
	mux.HandleFunc("POST "+api.WorkerAssignmentsPath, w.handlePush)
	mux.Handle("GET /metrics", w.Metrics())
	mux.HandleFunc("GET /healthz", func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(rw, "{\"status\":\"ok\",\"vm\":%q}\n", cfg.ID)
	})
	w.handler = w.authenticate(mux)
	w.ociHandler = newOCIHandler(w)
	return w, nil
}

// Metrics serves the worker's Prometheus metrics without the peer
// listener's checks, for a caller in this process (the emulated cluster).
func (w *Worker) Metrics() http.Handler {
	return promhttp.HandlerFor(w.metrics.reg, promhttp.HandlerOpts{})
}

// Handler serves the worker's endpoints on the peer listener.
func (w *Worker) Handler() http.Handler { return w.handler }

// Serve runs the worker on ln until ctx is done: it serves HTTP, registers
// with the manager, heartbeats and provisions. On return everything it
// started has stopped and the cache is closed.
func (w *Worker) Serve(ctx context.Context, ln net.Listener) error {
	if w.cfg.Advertise == "" {
		w.cfg.Advertise = ln.Addr().String()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w.mu.Lock()
	w.ctx = ctx
	w.mu.Unlock()

	w.cleanupRuns(ctx)
	stopSandbox, err := w.startSandbox(ctx)
	if err != nil {
		w.cache.Close()
		return err
	}
	defer stopSandbox() // after stopAll below: the containers go first
	srv := httpserver.New(w.tracked(w.handler), w.cfg.HTTP)
	srv.BaseContext = func(net.Listener) context.Context { return ctx }
	// Refused TLS handshakes are logged here, with the client's address.
	srv.ErrorLog = slog.NewLogLogger(w.log.Handler(), slog.LevelWarn)
	stopOCI := w.serveOCI(srv, cancel)
	var wg sync.WaitGroup
	if w.cfg.Security != nil {
		wg.Go(func() { w.renewLoop(ctx) })
	}
	wg.Add(3)
	go func() {
		defer wg.Done()
		// Connections are limited before TLS, so that handshakes count.
		if err := srv.Serve(w.listen(httpserver.Listener(ln, w.cfg.HTTP))); err != nil && !errors.Is(err, http.ErrServerClosed) {
			w.log.Error("serving", "err", err)
			cancel()
		}
	}()
	go func() { defer wg.Done(); w.heartbeatLoop(ctx) }()
	go func() { defer wg.Done(); w.reportLoop(ctx) }()
	w.log.Info("worker serving", "addr", w.cfg.Advertise, "manager", w.cfg.Manager, "cache", w.cfg.CacheDir)

	<-ctx.Done()
	shutdown, stop := context.WithTimeout(context.Background(), 2*time.Second)
	defer stop()
	srv.Shutdown(shutdown)
	srv.Close()
	stopOCI(shutdown)
	wg.Wait()
	// Close returns before the handlers do; they end soon, as ctx is done.
	w.serving.Lock()
	w.stopping = true
	w.serving.Unlock()
	w.stopAll()
	return w.cache.Close()
}

// tracked serves h until Serve stops, which waits for every request in it.
func (w *Worker) tracked(h http.Handler) http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.serving.RLock()
		defer w.serving.RUnlock()
		if w.stopping {
			http.Error(rw, "worker stopping", http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(rw, r)
	})
}

// Addr is the address the worker registers.
func (w *Worker) Addr() string { return w.cfg.Advertise }

// ID is the worker's VM name.
func (w *Worker) ID() string { return w.cfg.ID }
