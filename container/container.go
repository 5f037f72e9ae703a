// Package container runs the functions' containers of one worker.
//
// A container's read-only root filesystem is either a lazy FUSE mount of
// the image's eStargz layers, whose reads fetch just the blocks they need,
// or the image unpacked to a directory. The container runs with runc (see
// package runc) on a port of its own and counts as started once the
// function answers its readiness check. Everything a start built is torn
// down by Stop, or by the start itself when it fails; Cleanup removes what a
// crashed worker left behind.
package container

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	mathrand "math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/lazy"
	"github.com/faasnet/faasnet/runc"
	"github.com/faasnet/faasnet/unpack"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Host runs the containers of one worker, below one directory:
//
//	runc/         runc's state (runc --root)
//	bundles/      the containers' bundles
//	mnt/NAME      function NAME's lazy mount
//	rootfs/NAME   function NAME's unpacked image
//
// One Host may run containers from many goroutines, one per function name
// at a time.
type Host struct {
	dir     string
	vm      string
	rt      *runc.Runtime
	log     *slog.Logger
	limits  Limits
	sandbox Sandbox
	account func(int64) func()
}

// Limits bound what one function's image may cost the worker; a function
// over them is refused. Zero fields take the defaults of their packages.
type Limits struct {
	Lazy   lazy.Limits   // a lazy layer's TOC and chunks
	Unpack unpack.Limits // an unpacked image's bytes and files
	Log    int64         // a container's log on disk; 0 is runc.DefaultMaxLogSize
}

// Sandbox is how a Host fences its containers in beyond what runc always
// does (see package runc). Its zero value runs them on the host's network
// and as the host's root, for measuring what the sandbox costs.
type Sandbox struct {
	// Network gives each container a network namespace of its own, wired
	// by Network between runc create and runc start; nil shares the host's.
	Network Network
	// Users maps the container's root to an unprivileged host range; nil
	// runs it as the host's root. The directories above the Host's must
	// then be searchable by that range (mode o+x).
	Users *runc.IDRange
}

// Network wires a container's network namespace (see package netns).
type Network interface {
	// Attach connects the namespace of pid and returns its endpoint.
	Attach(ctx context.Context, id string, pid int) (Endpoint, error)
}

// Endpoint is a container's end of the network.
type Endpoint interface {
	Addr() netip.Addr // where the worker reaches the function
	Close(ctx context.Context) error
}

// Config is what New needs.
type Config struct {
	Dir     string       // the run directory, laid out as Host describes
	VM      string       // the worker's id: container ids are faasnet-VM-NAME, so workers may share a machine
	Runc    string       // the runc executable; "" finds runc in PATH or /usr/sbin
	Logger  *slog.Logger // nil is slog.Default()
	Limits  Limits
	Sandbox Sandbox
	// Account, when set, is told the disk a container takes beside the
	// worker's cache: the bytes of its unpacked image, and its log at its
	// largest. It returns the function that gives them back when the
	// container is stopped.
	Account func(bytes int64) (release func())
}

// New returns a Host for cfg. It touches nothing on disk: call Cleanup
// before the first Run.
func New(cfg Config) *Host {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Host{
		dir:     cfg.Dir,
		vm:      cfg.VM,
		rt:      &runc.Runtime{Root: filepath.Join(cfg.Dir, "runc"), StateDir: filepath.Join(cfg.Dir, "bundles"), Runc: cfg.Runc, MaxLogSize: cfg.Limits.Log, Logger: log},
		log:     log,
		limits:  cfg.Limits,
		sandbox: cfg.Sandbox,
		account: cfg.Account,
	}
}

// Function is a container to run.
type Function struct {
	Name   string    // the function (see api.ValidName); names its container, mount point and rootfs directory
	Config v1.Config // from the image's config: entrypoint, cmd, env, user, working directory

	// The root filesystem: the eStargz Layers are mounted lazily when
	// there are any, else Image is unpacked. Unpacking reads every layer of
	// Image, so they should be local by then.
	Layers []lazy.Layer
	Image  v1.Image

	Command       []string   // overrides the image's entrypoint and cmd when set
	Env           []string   // KEY=VALUE, added to the image's
	Limits        api.Limits // resources (see api.FunctionSpec.Limits); a zero field is no limit
	ReadinessPath string     // polled at http://ADDR:PORT until it answers 2xx (see Running.Addr)

	// Phase, when set, is told how far the start got: "mount" or
	// "unpacked" once the root filesystem is there, then "started" once
	// the container's process runs.
	Phase func(name string)
}

// Running is a function's container that answered its readiness check.
type Running struct {
	name  string
	addr  netip.Addr
	port  int
	steps []func(context.Context) error // undo what Run built, last first
}

// Addr returns the address the function is reached at: its own with a
// sandboxed network, else the host's loopback.
func (r *Running) Addr() netip.Addr { return r.addr }

// Port returns the port the function listens on.
func (r *Running) Port() int { return r.port }

// Stop ends the container, then unmounts or removes its root filesystem.
// It tries every step even when one fails, and returns their errors.
func (r *Running) Stop(ctx context.Context) error {
	var errs []error
	for i := len(r.steps) - 1; i >= 0; i-- {
		errs = append(errs, r.steps[i](ctx))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("container: stopping function %s: %w", r.name, err)
	}
	return nil
}

// stopTimeout bounds the tear-down of a start that failed: the start's own
// context may be what ended it.
const stopTimeout = 30 * time.Second

// Run builds f's root filesystem, starts its container and returns once the
// function answers its readiness check. If any of that fails, whatever was
// built is removed again before Run returns.
func (h *Host) Run(ctx context.Context, f Function) (_ *Running, err error) {
	if err := api.ValidName("function", f.Name); err != nil {
		return nil, fmt.Errorf("container: %w", err)
	}
	r := &Running{name: f.Name}
	defer func() {
		if err == nil {
			return
		}
		sctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
		defer cancel()
		if serr := r.Stop(sctx); serr != nil {
			h.log.Warn("removing a container that failed to start", "function", f.Name, "err", serr)
		}
	}()
	phase := f.Phase
	if phase == nil {
		phase = func(string) {}
	}

	var rootfs string
	if len(f.Layers) > 0 {
		if rootfs, err = h.mount(ctx, r, f); err != nil {
			return nil, err
		}
		phase("mount")
	} else {
		if rootfs, err = h.unpack(r, f); err != nil {
			return nil, err
		}
		phase("unpacked")
	}

	if h.sandbox.Users != nil {
		if err := h.ownDir(); err != nil {
			return nil, fmt.Errorf("container: %w", err)
		}
		if err := searchable(rootfs); err != nil {
			return nil, fmt.Errorf("container: function %s: %w", f.Name, err)
		}
	}
	logSize := h.limits.Log
	if logSize <= 0 {
		logSize = runc.DefaultMaxLogSize
	}
	h.charge(r, logSize)
	spec := runc.Spec{
		ID: h.containerID(f.Name), Rootfs: rootfs, Image: f.Config,
		Command: f.Command, Env: f.Env, Limits: runc.Limits(f.Limits),
		Users: h.sandbox.Users,
	}
	if err := h.network(r, &spec); err != nil {
		return nil, err
	}
	c, err := h.rt.Start(ctx, spec)
	if err != nil {
		return nil, err
	}
	r.steps = append(r.steps, c.Stop)
	phase("started")
	path := f.ReadinessPath
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	url := "http://" + netip.AddrPortFrom(r.addr, uint16(r.port)).String() + path
	if _, err := c.WaitReady(ctx, url); err != nil {
		return nil, err
	}
	return r, nil
}

// SandboxPort is the port of a function with a network of its own: every
// container has the whole port range to itself.
const SandboxPort = 8080

// network sets where r's function listens and, with a sandboxed network,
// the hook that wires its namespace; the endpoint is closed after the
// container stops (Stop undoes steps last first).
func (h *Host) network(r *Running, spec *runc.Spec) error {
	if h.sandbox.Network == nil {
		var err error
		r.addr = netip.AddrFrom4([4]byte{127, 0, 0, 1})
		r.port, err = freePort()
		spec.Port = r.port
		return err
	}
	r.port, spec.Port, spec.OwnNetwork = SandboxPort, SandboxPort, true
	spec.BeforeStart = func(ctx context.Context, pid int) error {
		ep, err := h.sandbox.Network.Attach(ctx, spec.ID, pid)
		if err != nil {
			return fmt.Errorf("container network: %w", err)
		}
		r.addr = ep.Addr()
		r.steps = append(r.steps, ep.Close)
		return nil
	}
	return nil
}

// mount mounts f's lazy layers at mnt/NAME, replacing a mount left there.
func (h *Host) mount(ctx context.Context, r *Running, f Function) (string, error) {
	mountpoint := filepath.Join(h.dir, "mnt", f.Name)
	lazy.Unmount(mountpoint)
	if err := os.MkdirAll(mountpoint, 0o755); err != nil {
		return "", fmt.Errorf("container: function %s: mount point: %w", f.Name, err)
	}
	fsys, err := lazy.Mount(ctx, mountpoint, f.Layers, lazy.Options{Logger: h.log, Limits: h.limits.Lazy, IDShift: h.idShift()})
	if err != nil {
		return "", fmt.Errorf("container: function %s: %w", f.Name, err)
	}
	r.steps = append(r.steps, func(context.Context) error { return fsys.Close() })
	return mountpoint, nil
}

// unpack writes f's image to rootfs/NAME, replacing what was there.
func (h *Host) unpack(r *Running, f Function) (string, error) {
	if f.Image == nil {
		return "", fmt.Errorf("container: function %s: neither lazy layers nor an image to unpack", f.Name)
	}
	rootfs := filepath.Join(h.dir, "rootfs", f.Name)
	if err := os.RemoveAll(rootfs); err != nil {
		return "", fmt.Errorf("container: function %s: removing an old rootfs: %w", f.Name, err)
	}
	r.steps = append(r.steps, func(context.Context) error { return os.RemoveAll(rootfs) })
	n, err := unpack.Image(f.Image, rootfs, unpack.Options{Limits: h.limits.Unpack, IDShift: int(h.idShift())})
	if err != nil {
		return "", fmt.Errorf("container: function %s: %w", f.Name, err)
	}
	h.charge(r, n)
	return rootfs, nil
}

// ownDir makes the Host's directory searchable by the containers' users:
// runc, for one, creates it 0700 for its state when it is missing.
func (h *Host) ownDir() error {
	if err := os.MkdirAll(h.dir, 0o711); err != nil {
		return err
	}
	return os.Chmod(h.dir, 0o711)
}

// searchable checks that a user-namespaced container's root, an
// unprivileged host uid, can reach rootfs: runc mounts it from inside the
// namespace. It fails naming the first directory on the way that others
// may not search, rather than leaving runc's "permission denied".
func searchable(rootfs string) error {
	for d := filepath.Dir(rootfs); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return err
		}
		if fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("the root filesystem %s is out of reach of the containers' users: %s has mode %v (give it o+x, or choose a run directory below searchable ones)", rootfs, d, fi.Mode().Perm())
		}
		if d == "/" || d == "." {
			return nil
		}
	}
}

// charge accounts n bytes of disk to r until it stops.
func (h *Host) charge(r *Running, n int64) {
	if h.account == nil {
		return
	}
	release := h.account(n)
	r.steps = append(r.steps, func(context.Context) error { release(); return nil })
}

// Cleanup removes what a worker that crashed left below the Host's
// directory: its containers (killed if running), lazy mounts and unpacked
// images. Call it before the first Run.
func (h *Host) Cleanup(ctx context.Context) error {
	var errs []error
	if h.sandbox.Users != nil {
		if err := h.ownDir(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := h.rt.Cleanup(ctx); err != nil {
		errs = append(errs, fmt.Errorf("removing stale containers: %w", err))
	}
	mnts, _ := filepath.Glob(filepath.Join(h.dir, "mnt", "*"))
	for _, m := range mnts {
		if err := lazy.Unmount(m); err != nil {
			errs = append(errs, fmt.Errorf("removing the stale mount %s: %w", m, err))
		}
	}
	if err := os.RemoveAll(filepath.Join(h.dir, "rootfs")); err != nil {
		errs = append(errs, fmt.Errorf("removing stale root filesystems: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("container: cleanup of %s: %w", h.dir, err)
	}
	return nil
}

// idShift is the host uid of the containers' root: their files must show
// as theirs.
func (h *Host) idShift() uint32 {
	if h.sandbox.Users == nil {
		return 0
	}
	return h.sandbox.Users.Host
}

func (h *Host) containerID(fn string) string { return "faasnet-" + h.vm + "-" + fn }

// Container ports come from below the kernel's ephemeral range (usually
// 32768-60999): a port taken from that range and released could be handed
// to some outgoing connection before the function binds it.
const (
	portLow  = 20000
	portHigh = 32000
)

// freePort picks a port for a container that nothing on the machine uses
// now (checked by binding it on all addresses, as a function may).
func freePort() (int, error) {
	start := portLow + mathrand.IntN(portHigh-portLow)
	for i := range portHigh - portLow {
		p := portLow + (start-portLow+i)%(portHigh-portLow)
		ln, err := net.Listen("tcp", fmt.Sprintf(":%d", p))
		if err != nil {
			continue
		}
		ln.Close()
		return p, nil
	}
	return 0, fmt.Errorf("container: no free port in %d-%d", portLow, portHigh)
}
