package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/digest"
	"github.com/faasnet/faasnet/internal/testenv"
	"github.com/faasnet/faasnet/pki"
	"github.com/faasnet/faasnet/token"
)

// TestMain lets tests run this binary's main as a real subprocess: the test
// binary re-executes itself with FAASNET_RUN_MAIN=1.
func TestMain(m *testing.M) {
	if os.Getenv("FAASNET_RUN_MAIN") == "1" {
		os.Args = append([]string{"faasnet"}, os.Args[1:]...)
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// proc is a faasnet subprocess.
type proc struct {
	cmd     *exec.Cmd
	stderr  *strings.Builder // read only once scanned is closed
	pw      *io.PipeWriter   // closing it after the process exited ends the scan
	scanned chan struct{}
}

var addrRE = regexp.MustCompile(`addr=(127\.0\.0\.1:\d+)`)

// startFaasnet runs "faasnet args..." and waits for its "serving ... addr="
// log line, whose address it returns.
func startFaasnet(t *testing.T, args ...string) (*proc, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "FAASNET_RUN_MAIN=1")
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, stderr: &strings.Builder{}, pw: pw, scanned: make(chan struct{})}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		pw.Close()
	})
	found := make(chan string, 1)
	go func() {
		defer close(p.scanned)
		sc := bufio.NewScanner(pr)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			p.stderr.WriteString(line + "\n")
			if m := addrRE.FindStringSubmatch(line); m != nil && !sent {
				found <- m[1]
				sent = true
			}
		}
	}()
	select {
	case addr := <-found:
		return p, addr
	case <-time.After(30 * time.Second):
		t.Fatalf("faasnet %v did not report its address", args)
		return nil, ""
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return append(b, '\n')
}

// managerAccess is what a test needs to talk to a manager process as an
// operator and as VMs: its CA (from --data) and admin token, and one
// certificate per VM, enrolled with the join token.
type managerAccess struct {
	t      *testing.T
	data   string
	v      *pki.Verifier
	admin  string
	vmKeys map[string]*pki.Keeper
}

func newManagerAccess(t *testing.T, data string) *managerAccess {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(data, pki.CertFile))
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.ParseCert(b)
	if err != nil {
		t.Fatal(err)
	}
	adminTok, err := token.ReadFile(filepath.Join(data, token.AdminFile))
	if err != nil {
		t.Fatal(err)
	}
	return &managerAccess{t: t, data: data, v: pki.NewVerifier(ca, nil), admin: adminTok, vmKeys: map[string]*pki.Keeper{}}
}

func (a *managerAccess) operator(addr string) *api.Client {
	return api.NewTLSClient(addr, a.v.ManagerClient(nil), a.admin)
}

// vm returns a client acting as vm, enrolling it first if needed.
func (a *managerAccess) vm(addr, vm string) *api.Client {
	a.t.Helper()
	if k, ok := a.vmKeys[vm]; ok {
		return api.NewTLSClient(addr, a.v.ManagerClient(k), "")
	}
	join, err := token.ReadFile(filepath.Join(a.data, token.JoinFile))
	if err != nil {
		a.t.Fatal(err)
	}
	key, err := pki.NewKey()
	if err != nil {
		a.t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, vm)
	if err != nil {
		a.t.Fatal(err)
	}
	resp, err := api.NewTLSClient(addr, a.v.ManagerClient(nil), "").Enroll(context.Background(), api.EnrollRequest{VM: vm, CSR: string(csr), JoinToken: join})
	if err != nil {
		a.t.Fatalf("enrolling %s: %v", vm, err)
	}
	cert, _, err := a.v.AcceptCertificate(bytes.NewReader(mustJSON(resp)), key, vm)
	if err != nil {
		a.t.Fatal(err)
	}
	a.vmKeys[vm] = pki.NewKeeper(cert)
	return a.vm(addr, vm)
}

// TestManagerSurvivesKill9 runs the manager with its state in bbolt and in
// a real one-member etcd. With etcd it also checks that heartbeats that
// change nothing write nothing (etcd's revision counts every write), and
// restarts the manager with an empty --data, which must get the same CA and
// tokens from etcd.
func TestManagerSurvivesKill9(t *testing.T) {
	t.Run("bolt", func(t *testing.T) { testManagerSurvivesKill9(t, nil, nil) })
	t.Run("etcd", func(t *testing.T) {
		const prefix = "/kill9/"
		cluster := testenv.StartEtcd(t, 1)
		cli, err := clientv3.New(clientv3.Config{Endpoints: cluster.Endpoints()})
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		etcdRevision := func() int64 {
			resp, err := cli.Get(t.Context(), prefix+"state/schema")
			if err != nil {
				t.Fatal(err)
			}
			return resp.Header.Revision
		}
		testManagerSurvivesKill9(t, []string{"--etcd", strings.Join(cluster.Endpoints(), ","), "--etcd-prefix", prefix, "--etcd-session-ttl", "2s"}, etcdRevision)
	})
}

// testManagerSurvivesKill9 runs a manager with stateArgs, kills it with
// SIGKILL and checks that a new one has the same state. etcdRevision, if
// not nil, returns the revision of the etcd the state is in.
func testManagerSurvivesKill9(t *testing.T, stateArgs []string, etcdRevision func() int64) {
	ctx := context.Background()
	data := t.TempDir()
	args := append([]string{"manager", "--listen", "127.0.0.1:0", "--data", data, "--vm-timeout", "1h"}, stateArgs...)
	p, addr := startFaasnet(t, args...)
	access := newManagerAccess(t, data)
	c := access.operator(addr)
	if etcdRevision != nil {
		// It listens before its campaign has won; until then it answers 503.
		waitRole(t, c, "https://"+addr, api.RoleLeader, 30*time.Second)
	}
	for i := range 40 {
		vm := fmt.Sprintf("vm-%02d", i)
		if _, err := access.vm(addr, vm).RegisterVM(ctx, vm, fmt.Sprintf("127.0.0.1:%d", 30000+i), nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, fn := range []string{"f", "g"} {
		if _, err := c.PutFunction(ctx, fn, api.FunctionRequest{Image: "127.0.0.1:5000/" + fn + "@" + digest.Of([]byte(fn)).String()}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.Scale(ctx, "f", api.ScaleRequest{Count: 30}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Scale(ctx, "g", api.ScaleRequest{Count: 12}); err != nil {
		t.Fatal(err)
	}
	for _, vm := range []string{"vm-00", "vm-07", "vm-13"} {
		if err := c.Release(ctx, "f", vm); err != nil {
			t.Fatal(err)
		}
	}
	snapshot := func(addr string) string {
		c := access.operator(addr)
		var b strings.Builder
		for _, fn := range []string{"f", "g"} {
			tr, err := c.Tree(ctx, fn)
			if err != nil {
				t.Fatal(err)
			}
			b.Write(mustJSON(tr))
		}
		for i := range 40 {
			vm := fmt.Sprintf("vm-%02d", i)
			as, err := access.vm(addr, vm).Heartbeat(ctx, vm)
			if err != nil {
				t.Fatal(err)
			}
			as.Revision = 0 // grows across restarts by design
			for i := range as.Assignments {
				as.Assignments[i].Grant = "" // signed anew by the new process
			}
			b.Write(mustJSON(as))
		}
		return b.String()
	}
	before := snapshot(addr)
	if etcdRevision != nil {
		rev := etcdRevision()
		if again := snapshot(addr); again != before {
			t.Fatalf("state changed between two snapshots:\n%s\n%s", before, again)
		}
		if now := etcdRevision(); now != rev {
			t.Errorf("40 heartbeats that changed nothing wrote to etcd: revision %d -> %d", rev, now)
		}
		if _, err := os.Stat(filepath.Join(data, "manager.db")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("manager with --etcd has %s/manager.db (stat: %v)", data, err)
		}
	}
	if err := p.cmd.Process.Kill(); err != nil { // SIGKILL: no chance to flush anything
		t.Fatal(err)
	}
	p.cmd.Wait()
	if etcdRevision != nil {
		// The state and the cluster's files are in etcd: the manager
		// may come back on another machine, with an empty --data.
		data2 := t.TempDir()
		args = slices.Replace(args, slices.Index(args, data), slices.Index(args, data)+1, data2)
		defer func() {
			for name := range clusterFiles {
				a, errA := os.ReadFile(filepath.Join(data, name))
				b, errB := os.ReadFile(filepath.Join(data2, name))
				if errA != nil || errB != nil || !bytes.Equal(a, b) {
					t.Errorf("%s differs in the new --data (%v, %v)", name, errA, errB)
				}
			}
		}()
	}
	_, addr2 := startFaasnet(t, args...)
	if etcdRevision != nil {
		// It leads once the killed one's campaign lease has expired.
		waitRole(t, access.operator(addr2), "https://"+addr2, api.RoleLeader, 30*time.Second)
	}
	if after := snapshot(addr2); after != before {
		t.Fatalf("state changed across kill -9:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// waitRole waits until the manager at url reports role in /healthz, or
// fails the test after limit, and returns its answer.
func waitRole(t *testing.T, c *api.Client, url, role string, limit time.Duration) api.Health {
	t.Helper()
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		h, err := c.HealthOf(t.Context(), url)
		if err == nil && h.Role == role {
			return h
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is not %s after %v: %+v, %v", url, role, limit, h, err)
		}
		<-tick.C
	}
}

// TestManagerStepsDownWhenFenced revokes the lease of a manager's
// campaign, as if it had been cut off from etcd past --etcd-session-ttl: the
// manager must stop leading without exiting, and, being the only
// candidate, lead again with the state as stored.
func TestManagerStepsDownWhenFenced(t *testing.T) {
	cluster := testenv.StartEtcd(t, 1)
	cli, err := clientv3.New(clientv3.Config{Endpoints: cluster.Endpoints()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	data := t.TempDir()
	_, addr := startFaasnet(t, "manager", "--listen", "127.0.0.1:0", "--data", data,
		"--etcd", strings.Join(cluster.Endpoints(), ","), "--etcd-session-ttl", "2s")
	access := newManagerAccess(t, data)
	c := access.operator(addr)
	url := "https://" + addr
	if h := waitRole(t, c, url, api.RoleLeader, 10*time.Second); h.Leader != url {
		t.Fatalf("healthz of the only manager = %+v, want it to name itself", h)
	}
	if _, err := c.PutFunction(t.Context(), "f", api.FunctionRequest{Image: "127.0.0.1:5000/f@" + digest.Of([]byte("f")).String()}); err != nil {
		t.Fatal(err)
	}
	leases, err := cli.Leases(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(leases.Leases) != 1 {
		t.Fatalf("%d leases in etcd, want the manager's one", len(leases.Leases))
	}
	if _, err := cli.Revoke(t.Context(), leases.Leases[0].ID); err != nil {
		t.Fatal(err)
	}
	// It notices within the TTL, steps down and wins the next campaign.
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for metric(t, c, url, "faasnet_manager_leader_changes_total") < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("the manager did not step down and lead again within 20s of losing its lease")
		}
		<-tick.C
	}
	// Still the same process: it answers on its address.
	waitRole(t, c, url, api.RoleLeader, 10*time.Second)
	fns, err := c.Functions(t.Context())
	if err != nil || len(fns) != 1 || fns[0].Function != "f" {
		t.Fatalf("functions after leading again = %+v, %v", fns, err)
	}
	if _, err := c.PutFunction(t.Context(), "g", api.FunctionRequest{Image: "127.0.0.1:5000/g@" + digest.Of([]byte("g")).String()}); err != nil {
		t.Fatalf("a write after leading again: %v", err)
	}
}

// metric returns the value of an unlabelled series on the manager's
// /metrics.
func metric(t *testing.T, c *api.Client, url, name string) float64 {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return -1
}
