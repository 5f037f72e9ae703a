package runc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/faasnet/faasnet/internal/testenv"
)

// testTimeout bounds each step against a real runc on a noisy machine.
const testTimeout = 60 * time.Second

var (
	serverOnce sync.Once
	serverBin  string
	serverErr  error
)

// TestMain removes the test server binary that the tests build.
func TestMain(m *testing.M) {
	code := m.Run()
	if serverBin != "" {
		os.RemoveAll(filepath.Dir(serverBin))
	}
	os.Exit(code)
}

// buildServer compiles testdata/server statically, once per test binary.
func buildServer(t *testing.T) string {
	t.Helper()
	serverOnce.Do(func() {
		dir, err := os.MkdirTemp("", "runc-server-")
		if err != nil {
			serverErr = err
			return
		}
		bin := filepath.Join(dir, "server")
		cmd := exec.Command("go", "build", "-o", bin, "./testdata/server")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			serverErr = fmt.Errorf("go build testdata/server: %v\n%s", err, out)
			return
		}
		serverBin = bin
	})
	if serverErr != nil {
		t.Fatal(serverErr)
	}
	return serverBin
}

// testRootfs is a minimal root filesystem: the static server, the mount
// points runc needs (the root is read-only, so they cannot be created), and
// an /etc/passwd.
func testRootfs(t *testing.T) string {
	t.Helper()
	bin := buildServer(t)
	dir := t.TempDir()
	for _, d := range []string{"proc", "sys", "dev", "tmp", "run", "etc", "work"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "server"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "etc/passwd"), []byte("root:x:0:0::/:/server\nnobody:x:65534:65534::/:/server\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// newRuntime needs root and runc, and gives a Runtime with its own
// directories whose leftovers are cleaned up after the test.
func newRuntime(t *testing.T) *Runtime {
	t.Helper()
	testenv.NeedRoot(t)
	runc := testenv.NeedTool(t, "runc")
	dir := t.TempDir()
	r := &Runtime{Root: filepath.Join(dir, "runc"), StateDir: filepath.Join(dir, "bundles"), Runc: runc}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		if err := r.Cleanup(ctx); err != nil {
			t.Errorf("final cleanup: %v", err)
		}
		parent := filepath.Dir(cgroupsPath(r.Root, "x"))
		if left, _ := filepath.Glob(filepath.Join(cgroupRoot, "*", parent)); len(left) > 0 {
			t.Errorf("Cleanup left cgroups %v", left)
		}
	})
	return r
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// containerID gives a test's container an id of its own, as parallel
// test binaries share the machine's cgroups.
func containerID(t *testing.T) string {
	return fmt.Sprintf("rt-%d-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "-"))
}

// inside is what testdata/server reports about its container.
type inside struct {
	PID      int      `json:"pid"`
	UID      int      `json:"uid"`
	Hostname string   `json:"hostname"`
	Cwd      string   `json:"cwd"`
	Env      []string `json:"env"`
	RootErr  string   `json:"root_err"`
	TmpErr   string   `json:"tmp_err"`
}

func getInside(t *testing.T, url string) inside {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var in inside
	if err := json.NewDecoder(resp.Body).Decode(&in); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return in
}

// runcIDs lists the containers runc knows under r.Root.
func runcIDs(t *testing.T, r *Runtime) []string {
	t.Helper()
	ids, err := r.list(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// gone reports whether pid no longer runs: no such process, or a zombie
// that init has yet to reap.
func gone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && (s[i+2] == 'Z' || s[i+2] == 'X')
}

func TestContainerLifecycle(t *testing.T) {
	r := newRuntime(t)
	rootfs := testRootfs(t)
	port := freePort(t)
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	id := containerID(t)
	c, err := r.Start(ctx, Spec{
		ID:      id,
		Rootfs:  rootfs,
		Command: []string{"/server"},
		Env:     []string{"FOO=bar"},
		Limits:  Limits{Memory: 64 << 20},
		Port:    port,
	})
	if err != nil {
		t.Fatal(err)
	}
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	if _, err := c.WaitReady(ctx, base+"/healthz"); err != nil {
		t.Fatal(err)
	}
	in := getInside(t, base+"/")
	if in.PID != 1 || in.UID != 0 || in.Hostname != id || in.Cwd != "/" {
		t.Errorf("inside: pid %d uid %d hostname %q cwd %q; want 1 0 %q /", in.PID, in.UID, in.Hostname, in.Cwd, id)
	}
	if !strings.Contains(in.RootErr, "read-only file system") {
		t.Errorf("writing / inside the container: %q, want a read-only file system error", in.RootErr)
	}
	if in.TmpErr != "" {
		t.Errorf("writing /tmp inside the container: %s", in.TmpErr)
	}
	for _, kv := range []string{"FOO=bar", "PORT=" + strconv.Itoa(port)} {
		if !slices.Contains(in.Env, kv) {
			t.Errorf("environment %q lacks %s", in.Env, kv)
		}
	}
	if _, err := os.Stat(filepath.Join(rootfs, "probe")); err == nil {
		t.Error("the container wrote to its root filesystem")
	}
	checkMemoryLimit(t, r, id, 64<<20)
	if !slices.Contains(runcIDs(t, r), id) {
		t.Errorf("runc list lacks %s", id)
	}

	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Exited():
	default:
		t.Error("Stop returned but Exited is open")
	}
	if ids := runcIDs(t, r); len(ids) != 0 {
		t.Errorf("after Stop, runc list = %v", ids)
	}
	if !gone(c.PID()) {
		t.Errorf("after Stop, process %d still runs", c.PID())
	}
	if _, err := os.Stat(filepath.Join(r.StateDir, id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("after Stop, bundle: %v", err)
	}
	if err := c.Stop(ctx); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

// checkMemoryLimit reads the container's cgroup (v1 or v2) memory limit.
func checkMemoryLimit(t *testing.T, r *Runtime, id string, want int64) {
	t.Helper()
	cg := cgroupsPath(r.Root, id)
	for _, f := range []string{"/sys/fs/cgroup/memory" + cg + "/memory.limit_in_bytes", "/sys/fs/cgroup" + cg + "/memory.max"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if got := strings.TrimSpace(string(b)); got != strconv.FormatInt(want, 10) {
			t.Errorf("%s = %s, want %d", f, got, want)
		}
		return
	}
	t.Errorf("no memory limit file for cgroup %s", cg)
}

// TestStopIgnoredTERM stops a process that ignores SIGTERM: Stop must
// SIGKILL it after the grace period.
func TestStopIgnoredTERM(t *testing.T) {
	r := newRuntime(t)
	r.StopGrace = 100 * time.Millisecond
	port := freePort(t)
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	c, err := r.Start(ctx, Spec{ID: containerID(t), Rootfs: testRootfs(t), Command: []string{"/server", "-ignore-term"}, Port: port})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitReady(ctx, "http://127.0.0.1:"+strconv.Itoa(port)+"/healthz"); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if !gone(c.PID()) || len(runcIDs(t, r)) != 0 {
		t.Errorf("after Stop: process gone %v, runc list %v", gone(c.PID()), runcIDs(t, r))
	}
}

// TestCleanup leaves a container behind, as a crashed worker would, and
// removes it with a new Runtime on the same directories.
func TestCleanup(t *testing.T) {
	r := newRuntime(t)
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	id := containerID(t)
	c, err := r.Start(ctx, Spec{ID: id, Rootfs: testRootfs(t), Command: []string{"/server"}, Port: freePort(t)})
	if err != nil {
		t.Fatal(err)
	}
	// A stray bundle without a container, and a file that is not a bundle.
	if err := os.Mkdir(filepath.Join(r.StateDir, "orphan"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(r.StateDir, "not a bundle"), nil, 0o600); err != nil {
		t.Fatal(err)
	}

	restarted := &Runtime{Root: r.Root, StateDir: r.StateDir, Runc: r.Runc}
	if err := restarted.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Exited():
	case <-ctx.Done():
		t.Fatal("the left container still runs after Cleanup")
	}
	if ids := runcIDs(t, r); len(ids) != 0 {
		t.Errorf("after Cleanup, runc list = %v", ids)
	}
	entries, _ := os.ReadDir(r.StateDir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{"not a bundle"}) {
		t.Errorf("after Cleanup, state directory holds %v, want only the file that is not a bundle", names)
	}
	// The first Runtime's handle still stops cleanly: nothing is left to do.
	if err := c.Stop(ctx); err != nil {
		t.Errorf("Stop after Cleanup: %v", err)
	}
}

func TestStartFailures(t *testing.T) {
	r := newRuntime(t)
	rootfs := testRootfs(t)
	for _, tc := range []struct {
		name       string
		command    []string
		startErr   string // Start fails with this
		exitErrHas string // otherwise WaitReady fails with ErrExited and this
	}{
		{name: "missing command", command: []string{"/no-such-binary"}, startErr: "no-such-binary"},
		{name: "exits at once", command: []string{"/server", "-fail", "boom: the handler could not load"}, exitErrHas: "boom: the handler could not load"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
			defer cancel()
			id := containerID(t)
			port := freePort(t)
			c, err := r.Start(ctx, Spec{ID: id, Rootfs: rootfs, Command: tc.command, Port: port})
			if tc.startErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.startErr) {
					t.Fatalf("Start: %v, want an error naming %q", err, tc.startErr)
				}
				t.Logf("Start: %v", err)
				if _, serr := os.Stat(filepath.Join(r.StateDir, id)); !errors.Is(serr, os.ErrNotExist) || len(runcIDs(t, r)) != 0 {
					t.Errorf("a failed Start left its bundle (%v) or container (%v)", serr, runcIDs(t, r))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Stop(ctx)
			_, err = c.WaitReady(ctx, "http://127.0.0.1:"+strconv.Itoa(port)+"/healthz")
			if !errors.Is(err, ErrExited) || !strings.Contains(err.Error(), tc.exitErrHas) {
				t.Fatalf("WaitReady: %v, want ErrExited quoting %q", err, tc.exitErrHas)
			}
			t.Logf("WaitReady: %v", err)
			if err := c.Stop(ctx); err != nil {
				t.Fatal(err)
			}
			if ids := runcIDs(t, r); len(ids) != 0 {
				t.Errorf("after Stop, runc list = %v", ids)
			}
		})
	}
}

// TestStartInvalid checks the errors Start gives before it runs runc; it
// needs neither root nor runc.
func TestStartInvalid(t *testing.T) {
	dir := t.TempDir()
	r := &Runtime{Root: filepath.Join(dir, "runc"), StateDir: filepath.Join(dir, "bundles"), Runc: "/nonexistent/runc"}
	if err := os.MkdirAll(filepath.Join(r.StateDir, "taken"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		r    *Runtime
		spec Spec
		want string
	}{
		{"no directories", &Runtime{}, Spec{ID: "a", Rootfs: dir, Command: []string{"x"}}, "Root and StateDir"},
		{"bad id", r, Spec{ID: "a/b", Rootfs: dir, Command: []string{"x"}}, "invalid container id"},
		{"no rootfs", r, Spec{ID: "a", Rootfs: filepath.Join(dir, "missing"), Command: []string{"x"}}, "not a directory"},
		{"no command", r, Spec{ID: "a", Rootfs: dir}, "no command"},
		{"bundle exists", r, Spec{ID: "taken", Rootfs: dir, Command: []string{"x"}}, "exists"},
		{"no runc", r, Spec{ID: "b", Rootfs: dir, Command: []string{"x"}}, "runc create"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.r.Start(t.Context(), tc.spec)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Start: %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(r.StateDir, "b")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed Start left its bundle: %v", err)
	}
}
