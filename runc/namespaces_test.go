package runc

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// testUsers is the host range the sandbox tests map the container's users
// to: far above any account on the machine.
var testUsers = IDRange{Host: 3_100_000, Size: 65536}

// getInNetns sends GET path to 127.0.0.1:port inside the network namespace
// of pid, the only place a sandboxed container's loopback is reachable
// from. It dials from a goroutine locked to a thread that joins the
// namespace and is never unlocked, so the thread dies with it.
func getInNetns(pid, port int, path string) ([]byte, error) {
	type result struct {
		body []byte
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		body, err := func() ([]byte, error) {
			f, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
			if err != nil {
				return nil, err
			}
			defer f.Close()
			if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
				return nil, fmt.Errorf("setns: %w", err)
			}
			conn, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
			if err != nil {
				return nil, err
			}
			defer conn.Close()
			fmt.Fprintf(conn, "GET %s HTTP/1.0\r\nHost: x\r\n\r\n", path)
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				return nil, err
			}
			defer resp.Body.Close()
			return io.ReadAll(resp.Body)
		}()
		ch <- result{body, err}
	}()
	r := <-ch
	return r.body, r.err
}

// hostIDs returns the real uid and gid of pid as the host sees them.
func hostIDs(t *testing.T, pid int) (uid, gid int) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "Uid:":
			uid, _ = strconv.Atoi(f[1])
		case "Gid:":
			gid, _ = strconv.Atoi(f[1])
		}
	}
	return uid, gid
}

// TestSandboxNamespaces starts a container with its own user and network
// namespaces: its root is an unprivileged host uid, the host's loopback is
// not its loopback, and the hook between create and start sees the pid.
func TestSandboxNamespaces(t *testing.T) {
	r := newRuntime(t)
	rootfs := testRootfs(t)
	// t.TempDir is 0700: the mapped root must be able to reach the rootfs.
	if err := os.Chmod(rootfs, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Dir(rootfs), 0o711); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	port := freePort(t)
	var hooked int
	c, err := r.Start(ctx, Spec{
		ID: containerID(t), Rootfs: rootfs, Command: []string{"/server"}, Port: port,
		OwnNetwork: true, Users: &testUsers,
		BeforeStart: func(_ context.Context, pid int) error {
			hooked = pid
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop(context.WithoutCancel(ctx))
	if hooked != c.PID() {
		t.Errorf("BeforeStart saw pid %d, the container's is %d", hooked, c.PID())
	}
	if uid, gid := hostIDs(t, c.PID()); uid != int(testUsers.Host) || gid != int(testUsers.Host) {
		t.Errorf("container process runs as host uid %d gid %d, want %d", uid, gid, testUsers.Host)
	}
	for _, ns := range []string{"net", "user"} {
		mine, _ := os.Readlink("/proc/self/ns/" + ns)
		theirs, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", c.PID(), ns))
		if err != nil || theirs == mine {
			t.Errorf("%s namespace: container %q (%v), host %q: want its own", ns, theirs, err, mine)
		}
	}
	if resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/healthz"); err == nil {
		resp.Body.Close()
		t.Error("the container's loopback answered on the host's")
	}
	var body []byte
	for { // the server binds its port soon after start; its exit ends the wait
		body, err = getInNetns(c.PID(), port, "/")
		if err == nil {
			break
		}
		select {
		case <-c.Exited():
			t.Fatalf("container exited: %s", c.LogTail())
		case <-ctx.Done():
			t.Fatalf("no answer inside the namespace: %v", err)
		default:
			runtime.Gosched()
		}
	}
	var in inside
	if err := json.Unmarshal(body, &in); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	if in.UID != 0 || in.PID != 1 {
		t.Errorf("inside: uid %d pid %d, want 0 1 (root of its own namespace)", in.UID, in.PID)
	}
	if !strings.Contains(in.RootErr, "read-only file system") {
		t.Errorf("writing / inside: %q, want a read-only file system error", in.RootErr)
	}
}

// TestBeforeStartFails checks that a failing hook aborts the start and
// leaves nothing behind.
func TestBeforeStartFails(t *testing.T) {
	r := newRuntime(t)
	rootfs := testRootfs(t)
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	_, err := r.Start(ctx, Spec{
		ID: containerID(t), Rootfs: rootfs, Command: []string{"/server"}, Port: freePort(t), OwnNetwork: true,
		BeforeStart: func(context.Context, int) error { return fmt.Errorf("no address left") },
	})
	if err == nil || !strings.Contains(err.Error(), "no address left") {
		t.Fatalf("Start = %v, want the hook's error", err)
	}
	if ids := runcIDs(t, r); len(ids) != 0 {
		t.Errorf("after a failed hook, runc list = %v", ids)
	}
}
