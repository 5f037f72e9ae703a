// Package runc starts a function's container with runc and tells when it
// is ready.
//
// A container runs the image's entrypoint (or a given command) on a
// read-only root filesystem, typically a lazily fetched FUSE mount of the
// function's image, with tmpfs at /tmp, /run and /dev/shm for whatever the
// function writes. It has its own pid, mount, ipc and uts namespaces, and
// with a sandbox (Spec.OwnNetwork, Spec.Users) its own network namespace
// and a user namespace whose root is an unprivileged host uid; without one
// it shares the host's network and the worker reaches the function on
// 127.0.0.1:PORT. It keeps one capability (binding ports below 1024),
// cannot gain privileges, runs under a seccomp profile no spec can loosen
// (seccomp.go), and within the limits of its spec: memory, CPU, pids, the
// tmpfs sizes and open files (limits.go).
//
// Containers are created and started in two steps (`runc create`, `runc
// start`) so that the worker can wire a container's network namespace in
// between; they run detached from the worker, and the next worker
// removes those a crashed worker left with Cleanup. The container's
// standard output and error, and runc's own errors, go through a pipe to a
// log file in its bundle that keeps the newest Runtime.MaxLogSize bytes at
// most; errors quote its tail. A container whose worker crashed loses its
// output (EPIPE) until Cleanup removes it.
package runc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// DefaultStopGrace is how long Stop waits after SIGTERM before SIGKILL when
// Runtime.StopGrace is zero.
const DefaultStopGrace = 5 * time.Second

// Runtime starts containers with runc. Its zero value is not usable: Root
// and StateDir must be set. Several Runtimes on one machine must have
// distinct Roots and StateDirs; one Runtime may start containers from many
// goroutines.
type Runtime struct {
	Root      string        // runc --root: runc's state, a directory per worker
	StateDir  string        // bundles, a directory per container below it
	Runc      string        // the runc executable; "" finds runc in PATH or /usr/sbin
	StopGrace time.Duration // between SIGTERM and SIGKILL in Stop; 0 is DefaultStopGrace
	// MaxLogSize bounds a container's log on disk (see logWriter); 0 is
	// DefaultMaxLogSize.
	MaxLogSize int64
	Logger     *slog.Logger // nil is slog.Default()
}

// logFile is the name of the container's log in its bundle.
const logFile = "container.log"

// Start creates the bundle of s under StateDir (config.json from the OCI
// runtime specification, see package doc) and runs it detached. It returns
// once the container's process has started; use Container.WaitReady to know
// when the function answers. Start fails, quoting the tail of the log, when
// runc cannot start the process (for example, the command does not exist in
// the image). A bundle directory left from an earlier container with the
// same id is an error: Stop or Cleanup remove it.
func (r *Runtime) Start(ctx context.Context, s Spec) (*Container, error) {
	if err := r.check(); err != nil {
		return nil, err
	}
	if err := checkID(s.ID); err != nil {
		return nil, err
	}
	rootfs, err := filepath.Abs(s.Rootfs)
	if err != nil {
		return nil, fmt.Errorf("runc: container %s: rootfs %q: %w", s.ID, s.Rootfs, err)
	}
	if fi, err := os.Stat(rootfs); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("runc: container %s: rootfs %s is not a directory (%v)", s.ID, rootfs, err)
	}
	spec, err := ociSpec(s, rootfs, cgroupsPath(r.Root, s.ID))
	if err != nil {
		return nil, err
	}
	bundle := filepath.Join(r.StateDir, s.ID)
	if err := writeBundle(bundle, spec); err != nil {
		return nil, fmt.Errorf("runc: container %s: %w", s.ID, err)
	}
	c := &Container{r: r, id: s.ID, bundle: bundle, logPath: filepath.Join(bundle, logFile)}
	pid, err := r.run(ctx, c, s.BeforeStart)
	if err != nil {
		// A cancelled or failed runc may leave a created container behind,
		// holding the log's pipe: the log is complete once it is gone.
		cleanup, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if derr := r.delete(cleanup, s.ID); derr != nil {
			r.logger().Warn("removing a container that failed to start", "id", s.ID, "err", derr)
		}
		c.closeLog(cleanup)
		tail := c.LogTail()
		os.RemoveAll(bundle)
		return nil, fmt.Errorf("runc: start container %s: %w%s", s.ID, err, quoteLog(tail))
	}
	c.pid = pid
	c.watch()
	r.logger().Info("container started", "id", s.ID, "pid", pid, "rootfs", rootfs, "args", spec.Process.Args)
	return c, nil
}

// writeBundle creates the bundle directory with config.json in it.
func writeBundle(bundle string, spec any) error {
	if err := os.MkdirAll(filepath.Dir(bundle), 0o755); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	if err := os.Mkdir(bundle, 0o700); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("bundle %s exists: the container is running or was left by a crash (Stop or Cleanup it): %w", bundle, err)
		}
		return fmt.Errorf("bundle: %w", err)
	}
	b, err := json.MarshalIndent(spec, "", "\t")
	if err != nil {
		return fmt.Errorf("config.json: %w", err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o600); err != nil {
		os.RemoveAll(bundle)
		return fmt.Errorf("config.json: %w", err)
	}
	return nil
}

// run creates c with `runc create`, with the container's output going to
// c's log through a pipe, runs before (if any) with the pid of the
// container's process, then starts it with `runc start`, and returns the
// pid. Between create and start the process exists in all its namespaces
// but has not run the function's command. The pipe, rather than the file
// itself, lets the worker bound the log (see logWriter); c.closeLog waits
// for its last bytes.
func (r *Runtime) run(ctx context.Context, c *Container, before func(context.Context, int) error) (int, error) {
	limit := r.MaxLogSize
	if limit <= 0 {
		limit = DefaultMaxLogSize
	}
	lw, err := newLogWriter(c.logPath, limit)
	if err != nil {
		return 0, fmt.Errorf("log: %w", err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		lw.Close()
		return 0, fmt.Errorf("log: %w", err)
	}
	defer pw.Close() // the container keeps its own descriptors
	c.logR, c.logDone = pr, make(chan struct{})
	go func() { defer close(c.logDone); copyLog(pr, lw) }()
	pidFile := filepath.Join(c.bundle, "pid")
	cmd := exec.CommandContext(ctx, r.runcPath(), "--root", r.Root, "create", "--bundle", c.bundle, "--pid-file", pidFile, c.id)
	// An *os.File, not a Writer: the container inherits it, and Wait does
	// not wait for the container to close it.
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("runc create: %w", err)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return 0, fmt.Errorf("runc pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("runc pid file %s holds %q", pidFile, b)
	}
	if before != nil {
		if err := before(ctx, pid); err != nil {
			return 0, fmt.Errorf("before start: %w", err)
		}
	}
	if _, err := r.runc(ctx, "start", c.id); err != nil {
		return 0, err
	}
	return pid, nil
}

// Cleanup removes every container under Root, every bundle under StateDir
// and the Runtime's empty parent cgroups: what a worker that crashed left
// behind. Running containers are killed. Call it when a worker starts,
// before it starts containers, and when it stops.
func (r *Runtime) Cleanup(ctx context.Context) error {
	if err := r.check(); err != nil {
		return err
	}
	ids, err := r.list(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		if err := r.delete(ctx, id); err != nil {
			errs = append(errs, err)
			continue
		}
		r.logger().Info("removed stale container", "id", id)
	}
	entries, err := os.ReadDir(r.StateDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, fmt.Errorf("runc: cleanup: %w", err))
	}
	for _, e := range entries {
		if checkID(e.Name()) != nil || !e.IsDir() {
			continue // not a bundle of ours
		}
		if err := os.RemoveAll(filepath.Join(r.StateDir, e.Name())); err != nil {
			errs = append(errs, fmt.Errorf("runc: cleanup: %w", err))
		}
	}
	if len(errs) == 0 {
		r.removeParentCgroups()
	}
	return errors.Join(errs...)
}

// cgroupRoot is where the cgroup hierarchies are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// removeParentCgroups removes the Runtime's parent cgroup (see
// cgroupsPath) in every hierarchy: runc deletes a container's cgroup but
// not the parents it created. Only empty cgroups can be removed, so a
// failure means another container still uses it and is ignored.
func (r *Runtime) removeParentCgroups() {
	parent := filepath.Dir(cgroupsPath(r.Root, "x"))
	dirs := []string{filepath.Join(cgroupRoot, parent)} // cgroup v2
	hierarchies, _ := os.ReadDir(cgroupRoot)
	for _, h := range hierarchies {
		if h.IsDir() {
			dirs = append(dirs, filepath.Join(cgroupRoot, h.Name(), parent)) // v1
		}
	}
	for _, d := range dirs {
		os.Remove(d)
	}
}

// list returns the ids of the containers runc knows under Root.
func (r *Runtime) list(ctx context.Context) ([]string, error) {
	out, err := r.runc(ctx, "list", "--format", "json")
	if err != nil {
		return nil, err
	}
	return parseList(out)
}

// parseList parses the output of `runc list --format json`: a JSON array
// of containers, or null when there are none.
func parseList(out []byte) ([]string, error) {
	var cs []struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(out, &cs); err != nil {
		return nil, fmt.Errorf("runc: parsing runc list: %w", err)
	}
	ids := make([]string, 0, len(cs))
	for _, c := range cs {
		if checkID(c.ID) == nil {
			ids = append(ids, c.ID)
		}
	}
	return ids, nil
}

// delete runs `runc delete --force`, which kills a running container first.
// A container that does not exist is not an error.
func (r *Runtime) delete(ctx context.Context, id string) error {
	_, err := r.runc(ctx, "delete", "--force", id)
	if err != nil && strings.Contains(err.Error(), "does not exist") {
		return nil
	}
	return err
}

// kill sends sig (a name such as TERM) to the container's process.
func (r *Runtime) kill(ctx context.Context, id, sig string) error {
	_, err := r.runc(ctx, "kill", id, sig)
	return err
}

// runc runs runc with --root and args, and returns its standard output. Its
// error quotes what runc wrote to standard error.
func (r *Runtime) runc(ctx context.Context, args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, r.runcPath(), append([]string{"--root", r.Root}, args...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = time.Second
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("runc: runc %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.Bytes(), nil
}

// check reports a Runtime that lacks its directories.
func (r *Runtime) check() error {
	if r.Root == "" || r.StateDir == "" {
		return errors.New("runc: Runtime needs Root and StateDir")
	}
	return nil
}

func (r *Runtime) runcPath() string {
	if r.Runc != "" {
		return r.Runc
	}
	if p, err := exec.LookPath("runc"); err == nil {
		return p
	}
	return "/usr/sbin/runc" // Debian's, outside a non-root PATH
}

func (r *Runtime) logger() *slog.Logger {
	if r.Logger != nil {
		return r.Logger
	}
	return slog.Default()
}

func (r *Runtime) stopGrace() time.Duration {
	if r.StopGrace > 0 {
		return r.StopGrace
	}
	return DefaultStopGrace
}
