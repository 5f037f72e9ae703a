package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/internal/testenv"
)

// binary is the faasnet binary all tests run: make's (FAASNET_BIN), or one
// built once here.
var binary string

func TestMain(m *testing.M) {
	if binary = os.Getenv(testenv.FaasnetBinEnv); binary != "" {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "faasnet-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "faasnet")
	build := exec.Command("go", "build", "-o", binary, "../cmd/faasnet")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building faasnet:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running faasnet process.
type proc struct {
	name   string
	cmd    *exec.Cmd
	addr   string
	oci    string        // a worker's OCI endpoint (host:port), if it logged one
	exited chan struct{} // closed when the process has exited

	mu  sync.Mutex
	log strings.Builder
}

var (
	addrRE = regexp.MustCompile(`serving.* addr=(\d+\.\d+\.\d+\.\d+:\d+)`)
	// A worker logs its OCI endpoint before its peer address.
	ociRE = regexp.MustCompile(`serving the local runtime.* oci=(127\.0\.0\.1:\d+)`)
)

// start runs "faasnet args..." and waits until it logs the address it serves
// (and a worker, before that, its OCI endpoint's).
func start(t testing.TB, name string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	cmd.Stdout = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	p := &proc{name: name, cmd: cmd, exited: exited}
	go func() { cmd.Wait(); pw.Close(); close(exited) }()
	t.Cleanup(func() {
		// SIGTERM first: a worker removes its containers' network rules
		// and mounts on the way out, which SIGKILL would leave behind.
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("--- log of %s ---\n%s", name, p.tail(30))
		}
	})
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.log.WriteString(line + "\n")
			p.mu.Unlock()
			if m := ociRE.FindStringSubmatch(line); m != nil {
				p.mu.Lock()
				p.oci = m[1]
				p.mu.Unlock()
			}
			if m := addrRE.FindStringSubmatch(line); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
	}()
	select {
	case p.addr = <-found: // sent after p.oci was set
		return p
	case <-exited:
		t.Fatalf("%s exited before serving:\n%s", name, p.tail(30))
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not start serving:\n%s", name, p.tail(30))
	}
	return nil
}

func (p *proc) tail(n int) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	lines := strings.Split(strings.TrimRight(p.log.String(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// stop ends p with SIGTERM, so it can finish what it writes on exit (a
// CPU profile), and waits for it.
func (p *proc) stop(t testing.TB) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not exit 30 s after SIGTERM", p.name)
	}
}

// kill9 ends p with SIGKILL.
func (p *proc) kill9(t testing.TB) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
}

// waitStatus polls the manager until every VM of fn is ready, or fails on
// the deadline. Polling is how an operator watches a cluster of processes.
func waitStatus(t testing.TB, c *api.Client, fn string, n int, timeout time.Duration) api.Status {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(timeout)
	for {
		s, err := c.Status(ctx, fn)
		ready := 0
		for _, v := range s.VMs {
			switch v.State {
			case api.StateReady:
				ready++
			case api.StateFailed:
				t.Fatalf("%s failed: %s", v.VM, v.Error)
			}
		}
		if err == nil && len(s.VMs) == n && ready == n {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d VMs ready after %v: %+v (%v)", ready, n, timeout, s, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitVMs waits until the manager knows n VMs.
func waitVMs(t testing.TB, c *api.Client, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		vms, err := c.VMs(context.Background())
		if err == nil && len(vms) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d VMs registered (%v)", len(vms), n, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
