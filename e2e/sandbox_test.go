package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/imagegen"
	"github.com/faasnet/faasnet/internal/testenv"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"golang.org/x/sys/unix"
)

// TestSandboxAttacks is issue 11's attack suite on real processes: a
// manager and a worker listening on the machine's own address (not
// loopback, so that only the sandbox stands between them and a
// container), a victim function and a hostile one (internal/hostile) in
// runc containers. From inside its container the hostile function tries
// what a tenant must not do; each try must fail in the named way, while
// what it may do (reach an address beyond the VM) works, so that the test
// can fail.
func TestSandboxAttacks(t *testing.T) {
	testenv.NeedRoot(t)
	for _, tool := range []string{"runc", "ip", "nft"} {
		testenv.NeedTool(t, tool)
	}
	ctx := context.Background()
	hostIP := machineAddr(t)
	outside := newOutside(t)

	reg := testenv.StartRegistry(t)
	hostile := reg + "/sandbox/hostile:1"
	push(t, hostileImage(t, nil, ""), hostile)
	victim := reg + "/sandbox/victim:1"
	push(t, testenv.ServerImage(t, 0), victim)
	// /etc/passwd planted as a link to a host file that would make the
	// function's user root: the worker must read inside the image only.
	hostPasswd := filepath.Join(t.TempDir(), "passwd")
	os.WriteFile(hostPasswd, []byte("evil:x:0:0::/:/bin/sh\n"), 0o644)
	passwd := reg + "/sandbox/passwd:1"
	push(t, hostileImage(t, map[string]string{"etc/passwd": hostPasswd}, "evil"), passwd)

	mgr := startManager(t, "--listen", hostIP+":0", "--vm-timeout", "2s")
	c := mgr.admin(t)
	w := start(t, "vm-0", append(mgr.workerArgs(t, "vm-0"), "--listen", hostIP+":0", "--oci-listen", "none",
		"--containers", "--run-dir", testenv.RunDir(t), "--heartbeat", "200ms")...)
	waitVMs(t, c, 1)

	const pids = 64
	deploy := func(fn, ref string, spec api.FunctionSpec) {
		t.Helper()
		spec.Readiness = &api.Readiness{Path: "/healthz"}
		b, _ := json.Marshal(spec)
		if _, err := c.PutFunction(ctx, fn, api.FunctionRequest{Image: ref, Spec: b}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Scale(ctx, fn, api.ScaleRequest{Count: 1}); err != nil {
			t.Fatal(err)
		}
	}
	limit := int64(pids)
	deploy("hostile", hostile, api.FunctionSpec{Pids: &limit, Memory: "128MiB"})
	deploy("victim", victim, api.FunctionSpec{Memory: "64MiB"})
	at := waitStatus(t, c, "hostile", 1, 2*time.Minute).VMs[0].Address
	victimAt := waitStatus(t, c, "victim", 1, 2*time.Minute).VMs[0].Address
	ap, err := netip.ParseAddrPort(at)
	if err != nil || ap.Addr().IsLoopback() {
		t.Fatalf("the hostile function answers at %q (%v): want an address of its own", at, err)
	}
	gateway := ap.Addr().Prev() // the host's end of the container's /30
	try := func(op string, args ...string) tryResult {
		t.Helper()
		return hostileTry(t, at, op, args...)
	}
	port := func(addr string) string { _, p, _ := net.SplitHostPort(addr); return p }

	t.Run("network", func(t *testing.T) {
		if r := try("connect", "addr", outside.allowed); !r.OK {
			t.Fatalf("reaching %s beyond the VM: %s; the sandbox should let it through (without this, nothing below means anything)", outside.allowed, r.Err)
		}
		forbidden := map[string]string{
			"the worker's listener":          w.addr,
			"the worker, via the gateway":    net.JoinHostPort(gateway.String(), port(w.addr)),
			"the manager":                    mgr.addr,
			"the manager, via the gateway":   net.JoinHostPort(gateway.String(), port(mgr.addr)),
			"a link-local address":           outside.linkLocal,
			"the other function's container": victimAt,
		}
		// At once: each refused dial takes the hostile function's 2 s timeout.
		var wg sync.WaitGroup
		for what, addr := range forbidden {
			wg.Go(func() {
				if r, err := hostileTryErr(at, "connect", "addr", addr); err != nil {
					t.Errorf("asking to reach %s: %v", what, err)
				} else if t.Logf("connect %s (%s): %+v", addr, what, r); r.OK {
					t.Errorf("the container reached %s at %s", what, addr)
				}
			})
		}
		wg.Wait()
		// The host reaches the victim, so it is there to be reached.
		if resp, err := http.Get("http://" + victimAt + "/healthz"); err != nil {
			t.Errorf("the victim does not answer the host: %v", err)
		} else {
			resp.Body.Close()
		}
	})

	t.Run("namespaces and mounts", func(t *testing.T) {
		for _, tc := range [][]string{{"unshare", "ns", "user"}, {"unshare", "ns", "mount"}, {"clone", "ns", "user"}, {"mount"}, {"ptrace"}, {"keyctl"}, {"bpf"}} {
			if r := try(tc[0], tc[1:]...); r.OK || r.Errno != int(syscall.EPERM) {
				t.Errorf("%v: ok %v, %q (errno %d); want EPERM", tc, r.OK, r.Err, r.Errno)
			}
		}
		var self struct {
			UID     int    `json:"uid"`
			Seccomp string `json:"seccomp"`
		}
		hostileGet(t, at, "/self", &self)
		if self.Seccomp != "2" {
			t.Errorf("Seccomp: %q, want 2 (a filter)", self.Seccomp)
		}
		if r := try("write", "path", "/owned"); r.OK || r.Errno != int(syscall.EROFS) {
			t.Errorf("writing /: ok %v, %q; want EROFS", r.OK, r.Err)
		}
		if r := try("read", "path", "/etc/passwd"); r.OK && strings.Contains(r.Data, "root:") {
			t.Errorf("the container reads a passwd with root in it: %q", r.Data)
		}
	})

	t.Run("fork bomb", func(t *testing.T) {
		r := try("forkbomb", "n", "1000", "hold", "3s") // held past the manager's 2 s VM timeout
		if r.Got >= pids || r.Got == 0 {
			t.Errorf("the fork bomb started %d processes (%s); want some, fewer than the limit %d", r.Got, r.Err, pids)
		}
		vms, err := c.VMs(ctx)
		if err != nil || len(vms) != 1 {
			t.Fatalf("after the fork bomb the manager knows %d VMs (%v): the worker stopped heartbeating", len(vms), err)
		}
		st := waitStatus(t, c, "victim", 1, 10*time.Second)
		if resp, err := http.Get("http://" + st.VMs[0].Address + "/healthz"); err != nil {
			t.Errorf("after the fork bomb the victim does not answer: %v", err)
		} else {
			resp.Body.Close()
		}
	})

	t.Run("passwd link", func(t *testing.T) {
		deploy("passwd", passwd, api.FunctionSpec{})
		deadline := time.Now().Add(time.Minute)
		for {
			st, err := c.Status(ctx, "passwd")
			if err == nil && len(st.VMs) == 1 && st.VMs[0].State == api.StateFailed {
				t.Logf("refused: %s", st.VMs[0].Error)
				if !strings.Contains(st.VMs[0].Error, "passwd") {
					t.Errorf("the refusal does not say why: %s", st.VMs[0].Error)
				}
				return
			}
			if err == nil && len(st.VMs) == 1 && st.VMs[0].State == api.StateReady {
				t.Fatalf("a function whose /etc/passwd links out of its image started")
			}
			if time.Now().After(deadline) {
				t.Fatalf("the passwd function neither failed nor started: %+v (%v)", st, err)
			}
			time.Sleep(100 * time.Millisecond) // polling the manager, with a deadline
		}
	})
}

// tryResult is internal/hostile's answer to /try.
type tryResult struct {
	OK    bool   `json:"ok"`
	Err   string `json:"err"`
	Errno int    `json:"errno"`
	Got   int64  `json:"got"`
	Data  string `json:"data"`
}

// hostileTry asks the hostile function at addr to try op with the given
// parameter names and values.
func hostileTry(t *testing.T, addr, op string, kv ...string) tryResult {
	t.Helper()
	r, err := hostileTryErr(addr, op, kv...)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s %v: %+v", op, kv, r)
	return r
}

// hostileTryErr is hostileTry for any goroutine.
func hostileTryErr(addr, op string, kv ...string) (tryResult, error) {
	q := url.Values{"op": {op}}
	for i := 0; i+1 < len(kv); i += 2 {
		q.Set(kv[i], kv[i+1])
	}
	var r tryResult
	err := hostileGetErr(addr, "/try?"+q.Encode(), &r)
	return r, err
}

func hostileGet(t *testing.T, addr, path string, v any) {
	t.Helper()
	if err := hostileGetErr(addr, path, v); err != nil {
		t.Fatal(err)
	}
}

func hostileGetErr(addr, path string, v any) error {
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Get("http://" + addr + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	return nil
}

// hostileImage is internal/hostile at /app/hostile, with links (name in
// the image to target), run as user.
func hostileImage(t *testing.T, links map[string]string, user string) v1.Image {
	t.Helper()
	return testenv.FunctionImage(t, testenv.ImageSpec{
		Files:      []testenv.File{{Name: "app/hostile", Data: testenv.HostileBinary(t), Mode: 0o755}},
		Links:      links,
		Entrypoint: []string{"/app/hostile"},
		User:       user,
	})
}

func push(t *testing.T, img v1.Image, ref string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := imagegen.Push(ctx, img, ref); err != nil {
		t.Fatal(err)
	}
}

// machineAddr is this machine's own IPv4 address on its default route:
// listening there, unlike on loopback, a process is reachable from a
// container whose packets the host routes. Connecting a UDP socket sends
// nothing.
func machineAddr(t *testing.T) string {
	t.Helper()
	c, err := net.Dial("udp4", "198.51.100.1:9")
	if err != nil {
		t.Fatalf("no IPv4 route off the machine to find its address: %v", err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).IP.String()
}

// outside is a network namespace the test creates to stand for the world
// beyond the VM, joined to the host by a veth: a listener on an ordinary
// address there (allowed), and one on a link-local address there, routed
// from the host (forbidden). No traffic leaves the machine.
type outside struct {
	allowed, linkLocal string // HOST:PORT
}

func newOutside(t *testing.T) *outside {
	t.Helper()
	id := os.Getpid() % 100000
	ns := fmt.Sprintf("fo-%d", id)
	hostEnd, nsEnd := fmt.Sprintf("fo%dh", id), fmt.Sprintf("fo%dn", id)
	// 198.18.0.0/15 is for benchmarks; each test process takes a /30 of
	// its top /24s, by pid, so that tests side by side differ.
	base := netip.AddrFrom4([4]byte{198, 19, byte(200 + id%50), byte(4 * (id % 60))})
	hostIP, nsIP := base.Next(), base.Next().Next()
	const linkLocal = "169.254.77.99"
	ipCmd := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	ipCmd("netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", ns).Run() })
	ipCmd("link", "add", hostEnd, "type", "veth", "peer", "name", nsEnd, "netns", ns)
	t.Cleanup(func() { exec.Command("ip", "link", "delete", hostEnd).Run() })
	ipCmd("addr", "add", hostIP.String()+"/30", "dev", hostEnd)
	ipCmd("link", "set", hostEnd, "up")
	ipCmd("-n", ns, "addr", "add", nsIP.String()+"/30", "dev", nsEnd)
	ipCmd("-n", ns, "link", "set", nsEnd, "up")
	ipCmd("-n", ns, "link", "set", "lo", "up")
	// On the namespace's loopback: it stands in for a dummy interface,
	// which this kernel lacks (no CONFIG_DUMMY).
	ipCmd("-n", ns, "addr", "add", linkLocal+"/32", "dev", "lo")
	ipCmd("-n", ns, "route", "add", "default", "via", hostIP.String())
	ipCmd("route", "add", linkLocal+"/32", "via", nsIP.String(), "dev", hostEnd)
	t.Cleanup(func() { exec.Command("ip", "route", "delete", linkLocal+"/32").Run() })
	o := &outside{
		allowed:   listenIn(t, ns, nsIP.String()),
		linkLocal: listenIn(t, ns, linkLocal),
	}
	return o
}

// listenIn listens on addr:0 inside the named network namespace and
// accepts (and closes) connections until the test ends. The socket stays
// in the namespace whichever thread uses it later.
func listenIn(t *testing.T, ns, addr string) string {
	t.Helper()
	f, err := os.Open("/run/netns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	type res struct {
		ln  net.Listener
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- res{nil, err}
			return
		}
		ln, err := net.Listen("tcp4", net.JoinHostPort(addr, "0"))
		ch <- res{ln, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatalf("listening on %s in %s: %v", addr, ns, r.err)
	}
	t.Cleanup(func() { r.ln.Close() })
	go func() {
		for {
			c, err := r.ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return net.JoinHostPort(addr, strconv.Itoa(r.ln.Addr().(*net.TCPAddr).Port))
}
