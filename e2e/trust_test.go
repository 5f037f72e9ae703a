package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/enroll/enrolltest"
	"github.com/faasnet/faasnet/grant"
	"github.com/faasnet/faasnet/imagegen"
	"github.com/faasnet/faasnet/internal/testenv"
	"github.com/faasnet/faasnet/peer"
	"github.com/faasnet/faasnet/pki"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// trustEnv is a manager, two workers holding one function's image (vm-0
// the root, vm-1 its child), and an admin client: the cluster the trust
// tests attack.
type trustEnv struct {
	mgr     *manager
	admin   *api.Client
	workers map[string]*proc
	img     v1.Image
	ref     string
}

func startTrustEnv(t *testing.T) *trustEnv {
	t.Helper()
	reg := testenv.StartRegistry(t)
	img, err := imagegen.Image(imagegen.Spec{TotalSize: 2 << 20, Layers: 2, Seed: 21})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ref := reg + "/trust/app:v1"
	if err := imagegen.Push(ctx, img, ref); err != nil {
		t.Fatal(err)
	}
	e := &trustEnv{mgr: startManager(t, "--vm-timeout", "1h"), workers: map[string]*proc{}, img: img, ref: ref}
	e.admin = e.mgr.admin(t)
	for _, id := range []string{"vm-0", "vm-1"} {
		e.workers[id] = start(t, id, append(e.mgr.workerArgs(t, id), "--oci-listen", "none", "--heartbeat", "200ms")...)
	}
	waitVMs(t, e.admin, 2)
	if _, err := e.admin.PutFunction(ctx, "app", api.FunctionRequest{Image: ref}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.Scale(ctx, "app", api.ScaleRequest{VMs: []string{"vm-0", "vm-1"}}); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, e.admin, "app", 2, time.Minute)
	return e
}

// layer returns the digest of the image's first layer.
func (e *trustEnv) layer(t *testing.T) v1.Hash {
	t.Helper()
	layers, err := e.img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	d, err := layers[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// forged returns certificates no caller may get anything with: none at
// all, one from another CA, a self-signed one, and an expired one from
// the cluster's own CA. Each names vm.
func forged(t *testing.T, m *manager, vm string) map[string]tls.Certificate {
	t.Helper()
	now := time.Now()
	other, err := pki.Init(t.TempDir(), now)
	if err != nil {
		t.Fatal(err)
	}
	// The test reads the CA key from the manager's data directory only to
	// make a certificate that has expired; an attacker has no such key.
	real, err := pki.Load(m.dir, now)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]tls.Certificate{
		"no certificate": {},
		"another CA":     signVM(t, other, vm, now, time.Hour),
		"self-signed":    enrolltest.SelfSigned(t, vm),
		"expired":        signVM(t, real, vm, now.Add(-3*time.Hour), time.Hour),
		"expired (manager)": func() tls.Certificate {
			c, err := real.IssueServer("127.0.0.1:1", nil, now.Add(-200*24*time.Hour), time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			return c
		}(),
	}
}

func signVM(t *testing.T, ca *pki.CA, vm string, now time.Time, ttl time.Duration) tls.Certificate {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csrPEM, err := pki.NewCSR(key, vm)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(pemBytes(t, csrPEM))
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := ca.SignVM(csr, vm, now, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: key, Leaf: c}
}

// refused reports whether a call failed at the TLS handshake or was
// answered 401 or 403. With TLS 1.3 the server checks the client's
// certificate after the client thinks the handshake done, so its refusal
// reaches the client as an alert, or as the connection closing under the
// request.
func refused(err error) bool {
	var se *api.StatusError
	if errors.As(err, &se) {
		return se.Code == http.StatusUnauthorized || se.Code == http.StatusForbidden
	}
	if err == nil {
		return false
	}
	for _, s := range []string{"tls", "use of closed network connection", "connection reset", "broken pipe", "EOF"} {
		if strings.Contains(err.Error(), s) {
			return true
		}
	}
	return false
}

// peerGet asks worker vm's peer listener for path as the holder of cert,
// with the grant g (none if empty), and returns the status code, or 0 if
// the handshake failed.
func peerGet(t *testing.T, m *manager, w *proc, vm string, cert tls.Certificate, path, g string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "https://"+w.addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if g != "" {
		req.Header.Set(grant.Header, g)
	}
	resp, err := m.peerClient(cert, vm).Do(req)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestTrustForgedCertificates: a caller with no certificate, one from
// another CA, a self-signed one, an expired one or a revoked one is
// refused by the manager (as a VM) and by every worker listener.
func TestTrustForgedCertificates(t *testing.T) {
	e := startTrustEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	certs := forged(t, e.mgr, "intruder")
	// A genuine certificate, revoked: the VM enrolled and was revoked.
	certs["revoked"] = e.mgr.enroll(t, "intruder")
	if _, err := e.mgr.vm(certs["revoked"]).RegisterVM(ctx, "intruder", "127.0.0.1:9", nil); err != nil {
		t.Fatal(err)
	}
	if err := e.admin.LeaveVM(ctx, "intruder"); err != nil {
		t.Fatalf("revoking an enrolled VM: %v", err)
	}
	blob := peer.PathPrefix + "blobs/" + e.layer(t).String()
	for name, cert := range certs {
		vmc := e.mgr.vm(cert)
		if _, err := vmc.RegisterVM(ctx, "intruder", "127.0.0.1:9", nil); !refused(err) {
			t.Errorf("%s: the manager accepted a registration: %v", name, err)
		}
		if _, err := vmc.Heartbeat(ctx, "vm-1"); !refused(err) {
			t.Errorf("%s: the manager answered a heartbeat for vm-1: %v", name, err)
		}
		if code := peerGet(t, e.mgr, e.workers["vm-0"], "vm-0", cert, blob, ""); code != 0 && code != http.StatusForbidden && code != http.StatusUnauthorized {
			t.Errorf("%s: the worker answered a blob request with %d", name, code)
		}
		if code := peerGet(t, e.mgr, e.workers["vm-0"], "vm-0", cert, "/metrics", ""); code != 0 && code != http.StatusForbidden && code != http.StatusUnauthorized {
			t.Errorf("%s: the worker answered /metrics with %d", name, code)
		}
	}
	// The revoked VM is refused by the worker even with a grant it got
	// while it was a member: workers learn revocations with their
	// assignments. (Polling: the worker learns at its next heartbeat.)
	cert, g := e.mgr.member(t, e.admin, "leaver", "app")
	if code := peerGet(t, e.mgr, e.workers["vm-0"], "vm-0", cert, blob, g); code != http.StatusOK {
		t.Fatalf("a member with a grant got %d, want 200", code)
	}
	if err := e.admin.LeaveVM(ctx, "leaver"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for peerGet(t, e.mgr, e.workers["vm-0"], "vm-0", cert, blob, g) == http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("a revoked VM with a live grant is still served 20 s after its revocation")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if vms, err := e.admin.VMs(ctx); err != nil || slices.ContainsFunc(vms, func(v api.VM) bool { return v.VM == "intruder" }) {
		t.Errorf("VMs after the refused registrations: %v %v", vms, err)
	}
}

// TestTrustImpersonation: VM A's certificate used to register, heartbeat,
// report or leave as VM B is refused with 403, and nothing changes.
func TestTrustImpersonation(t *testing.T) {
	e := startTrustEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	before, err := e.admin.Tree(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	a := e.mgr.vm(e.mgr.enroll(t, "vm-a"))
	calls := map[string]func() error{
		"register": func() error { _, err := a.RegisterVM(ctx, "vm-1", "127.0.0.1:9", nil); return err },
		"heartbeat": func() error {
			_, err := a.Heartbeat(ctx, "vm-1")
			return err
		},
		"status": func() error {
			return a.ReportStatus(ctx, "vm-1", api.StatusReport{Functions: []api.FunctionReport{{Function: "app", State: api.StateFailed, Error: "forged"}}})
		},
		"leave": func() error { return a.LeaveVM(ctx, "vm-1") },
	}
	for name, call := range calls {
		var se *api.StatusError
		if err := call(); !errors.As(err, &se) || se.Code != http.StatusForbidden {
			t.Errorf("%s as vm-1 with vm-a's certificate: %v, want 403", name, err)
		}
	}
	after, err := e.admin.Tree(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	if b, a := mustMarshal(t, before), mustMarshal(t, after); b != a {
		t.Errorf("the tree changed:\nbefore %s\nafter  %s", b, a)
	}
	st, err := e.admin.Status(ctx, "app")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range st.VMs {
		if v.State != api.StateReady {
			t.Errorf("%s is %s (%s) after forged reports", v.VM, v.State, v.Error)
		}
	}
}

func mustMarshal(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestTrustPushFromNonManager: an enrolled VM pushes an assignments
// document with the highest revision and another image to a worker. The
// worker refuses it, keeps its assignments, and still applies the real
// manager's next document.
func TestTrustPushFromNonManager(t *testing.T) {
	e := startTrustEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	doc, _ := json.Marshal(api.Assignments{Revision: math.MaxUint64, Assignments: []api.Assignment{
		{Function: "evil", Image: e.ref, Generation: 1, Spec: json.RawMessage(`{"command":["/bin/sh","-c","id"]}`)},
	}})
	c := e.mgr.peerClient(e.mgr.enroll(t, "pusher"), "vm-0")
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+e.workers["vm-0"].addr+api.WorkerAssignmentsPath, strings.NewReader(string(doc)))
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("a push from a VM got %d, want 403", resp.StatusCode)
	}
	// The worker still hosts app, and applies the manager's next change:
	// a second function, ready on vm-0.
	if _, err := e.admin.PutFunction(ctx, "second", api.FunctionRequest{Image: e.ref}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.Scale(ctx, "second", api.ScaleRequest{VMs: []string{"vm-0"}}); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, e.admin, "second", 1, time.Minute)
	waitStatus(t, e.admin, "app", 2, 10*time.Second)
	st, err := e.admin.Status(ctx, "evil")
	if err == nil && len(st.VMs) > 0 {
		t.Errorf("the forged function runs: %+v", st)
	}
}

// TestTrustNonMemberReadsBlobs: an enrolled VM that is not in a function's
// tree asks a worker for that function's blobs: without a grant, with a
// grant of another function, or with a member's grant it stole, it gets
// 403 at once, and the worker counts each refusal.
func TestTrustNonMemberReadsBlobs(t *testing.T) {
	e := startTrustEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// "other" is a member of a function with another image.
	reg := strings.SplitN(e.ref, "/", 2)[0]
	otherImg, err := imagegen.Image(imagegen.Spec{TotalSize: 1 << 20, Layers: 1, Seed: 22})
	if err != nil {
		t.Fatal(err)
	}
	otherRef := reg + "/trust/other:v1"
	if err := imagegen.Push(ctx, otherImg, otherRef); err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.PutFunction(ctx, "otherfn", api.FunctionRequest{Image: otherRef}); err != nil {
		t.Fatal(err)
	}
	outsider, otherGrant := e.mgr.member(t, e.admin, "outsider", "otherfn")
	_, memberGrant := e.mgr.member(t, e.admin, "member", "app")
	blob := peer.PathPrefix + "blobs/" + e.layer(t).String()
	metrics := e.mgr.peerClient(outsider, "vm-0")
	before := refusals(t, metrics, e.workers["vm-0"])
	for name, g := range map[string]string{"no grant": "", "another function's grant": otherGrant, "a stolen grant": memberGrant, "garbage": "x.y"} {
		start := time.Now()
		if code := peerGet(t, e.mgr, e.workers["vm-0"], "vm-0", outsider, blob, g); code != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", name, code)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s: refused after %v, not at once", name, d)
		}
	}
	if after := refusals(t, metrics, e.workers["vm-0"]); after-before < 4 {
		t.Errorf("refusals counted: %v before, %v after, want 4 more", before, after)
	}
}

// refusals sums faasnet_worker_peer_refusals_total over its labels.
func refusals(t *testing.T, c *http.Client, w *proc) float64 {
	t.Helper()
	resp, err := c.Get("https://" + w.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var sum float64
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "faasnet_worker_peer_refusals_total") {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err == nil {
			sum += v
		}
	}
	return sum
}

// TestTrustOperatorTokens: an operator call without a token, with a read
// token on a write, or with a revoked token is refused (401/403); the
// tokens are made and revoked with the faasnet token verbs.
func TestTrustOperatorTokens(t *testing.T) {
	m := startManager(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	verb := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(binary, append(args, "--manager", m.url, "--ca", m.caFile, "--token-file", m.adminFile())...)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("faasnet %v: %v", args, err)
		}
		return strings.TrimSpace(string(out))
	}
	read := verb("token", "create", "--role", "read")
	readc := m.client(read)
	if _, err := readc.Functions(ctx); err != nil {
		t.Errorf("a read token cannot list functions: %v", err)
	}
	checks := []struct {
		name string
		call func() error
		want int
	}{
		{"no token", func() error { _, err := m.client("").Functions(ctx); return err }, http.StatusUnauthorized},
		{"unknown token", func() error { _, err := m.client(strings.Repeat("A", 43)).Functions(ctx); return err }, http.StatusUnauthorized},
		{"read token on a write", func() error {
			_, err := readc.PutFunction(ctx, "f", api.FunctionRequest{Image: "127.0.0.1:5000/f@sha256:" + strings.Repeat("0", 64)})
			return err
		}, http.StatusForbidden},
		{"read token creating a token", func() error { _, err := readc.CreateToken(ctx, api.TokenRequest{Role: "admin"}); return err }, http.StatusForbidden},
	}
	for _, c := range checks {
		var se *api.StatusError
		if err := c.call(); !errors.As(err, &se) || se.Code != c.want {
			t.Errorf("%s: %v, want %d", c.name, err, c.want)
		}
	}
	toks, err := m.admin(t).Tokens(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var id string
	for _, tk := range toks {
		if tk.Role == "read" {
			id = tk.ID
		}
	}
	verb("token", "revoke", id)
	var se *api.StatusError
	if _, err := readc.Functions(ctx); !errors.As(err, &se) || se.Code != http.StatusUnauthorized {
		t.Errorf("a revoked token: %v, want 401", err)
	}
	// /metrics needs a token too; /healthz does not.
	for _, c := range []struct {
		path, tok string
		want      int
	}{{"/metrics", "", http.StatusUnauthorized}, {"/metrics", read, http.StatusUnauthorized}, {"/healthz", "", http.StatusOK}} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, m.url+c.path, nil)
		if c.tok != "" {
			req.Header.Set("Authorization", "Bearer "+c.tok)
		}
		resp, err := m.client("").HTTP.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("GET %s (token %v): %d, want %d", c.path, c.tok != "", resp.StatusCode, c.want)
		}
	}
}

// TestTrustEnvOnlyToMembers: a function's environment values reach the
// VMs that run it and no listing.
func TestTrustEnvOnlyToMembers(t *testing.T) {
	m := startManager(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin := m.admin(t)
	spec := json.RawMessage(`{"env":["DB_PASSWORD=hunter2"]}`)
	if _, err := admin.PutFunction(ctx, "f", api.FunctionRequest{Image: "127.0.0.1:5000/f@sha256:" + strings.Repeat("1", 64), Spec: spec}); err != nil {
		t.Fatal(err)
	}
	fns, err := admin.Functions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if b := mustMarshal(t, fns); strings.Contains(b, "hunter2") {
		t.Errorf("GET /functions shows the secret: %s", b)
	}
	cert, _ := m.member(t, admin, "member", "f")
	doc, err := m.vm(cert).Heartbeat(ctx, "member")
	if err != nil {
		t.Fatal(err)
	}
	if b := mustMarshal(t, doc); !strings.Contains(b, "hunter2") {
		t.Errorf("the member's assignments lack the env value: %s", b)
	}
	outsider := m.enroll(t, "outsider")
	if _, err := m.vm(outsider).RegisterVM(ctx, "outsider", "127.0.0.1:9", nil); err != nil {
		t.Fatal(err)
	}
	doc, err = m.vm(outsider).Heartbeat(ctx, "outsider")
	if err != nil {
		t.Fatal(err)
	}
	if b := mustMarshal(t, doc); strings.Contains(b, "hunter2") {
		t.Errorf("a VM outside the function got its env: %s", b)
	}
}

// pemBytes returns the bytes of the one PEM block in b.
func pemBytes(t *testing.T, b []byte) []byte {
	t.Helper()
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatal("no PEM block")
	}
	return block.Bytes
}
