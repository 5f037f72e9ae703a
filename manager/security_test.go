package manager

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/manager/store"
	"github.com/faasnet/faasnet/pki"
	"github.com/faasnet/faasnet/token"
)

func TestEnroll(t *testing.T) {
	ctx := context.Background()
	s := startSecured(t, t.TempDir(), nil)
	k := s.enroll("vm-a")
	if id, err := pki.Identify(k.Get().Leaf); err != nil || id.Manager || id.VM != "vm-a" {
		t.Fatalf("the enrolled certificate names %v (%v), want vm-a", id, err)
	}
	if _, err := s.asVM(k).RegisterVM(ctx, "vm-a", "127.0.0.1:9000", nil); err != nil {
		t.Fatalf("registering with the enrolled certificate: %v", err)
	}

	unknown, _, _ := token.New(token.Join, time.Now(), 0)
	for _, c := range []struct {
		name, join string
		code       int
	}{
		{"unknown join token", unknown, http.StatusUnauthorized},
		{"the admin token is no join token", s.fileToken(token.AdminFile), http.StatusUnauthorized},
		{"malformed join token", "short", http.StatusBadRequest},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := s.tryEnroll("vm-b", c.join); statusOf(err) != c.code {
				t.Fatalf("enrolling: %v, want %d", err, c.code)
			}
		})
	}
	if got := s.metricLine(`faasnet_manager_auth_refusals_total{reason="join_token"}`); !strings.HasSuffix(got, " 2") {
		t.Errorf("join token refusals: %q, want 2", got)
	}
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	for _, c := range s.m.trust.certs {
		if c.VM == "vm-b" {
			t.Errorf("a refused enrollment issued %s", c.Serial)
		}
	}
}

func TestRotatedJoinTokenStopsWorking(t *testing.T) {
	ctx := context.Background()
	s := startSecured(t, t.TempDir(), nil)
	old := s.fileToken(token.JoinFile)
	read, err := s.admin().CreateToken(ctx, api.TokenRequest{Role: "read"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.operator(read.Token).RotateJoinToken(ctx); statusOf(err) != http.StatusForbidden {
		t.Fatalf("a read token rotated the join token: %v", err)
	}
	nt, err := s.admin().RotateJoinToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.fileToken(token.JoinFile); got != nt.Token || got == old || nt.Role != "join" {
		t.Fatalf("after rotation the join file holds another token than the answer, or the old one")
	}
	if _, err := s.tryEnroll("vm-x", old); statusOf(err) != http.StatusUnauthorized {
		t.Fatalf("enrolling with the rotated-out join token: %v, want 401", err)
	}
	if _, err := s.tryEnroll("vm-x", nt.Token); err != nil {
		t.Fatalf("enrolling with the new join token: %v", err)
	}
}

// Anyone with the join token (every worker has it) could otherwise enroll
// as a running VM and take its place.
func TestEnrollingALiveVMAgainNeedsItsKeyOrARevocation(t *testing.T) {
	ctx := context.Background()
	s := startSecured(t, t.TempDir(), nil)
	join := s.fileToken(token.JoinFile)
	key, _ := pki.NewKey()
	if _, err := s.enrollKey("vm-a", join, key); err != nil {
		t.Fatal(err)
	}
	if _, err := s.tryEnroll("vm-a", join); statusOf(err) != http.StatusConflict {
		t.Fatalf("enrolling vm-a again with another key: %v, want 409", err)
	}
	if _, err := s.enrollKey("vm-a", join, key); err != nil {
		t.Fatalf("enrolling vm-a again with its own key (its certificate file was lost): %v", err)
	}
	if err := s.admin().LeaveVM(ctx, "vm-a"); err != nil {
		t.Fatalf("revoking the enrolled, unregistered vm-a: %v", err)
	}
	if _, err := s.tryEnroll("vm-a", join); err != nil {
		t.Fatalf("enrolling vm-a with a new key after its revocation: %v", err)
	}
	if err := s.admin().LeaveVM(ctx, "ghost"); statusOf(err) != http.StatusNotFound {
		t.Fatalf("leaving a VM that is neither registered nor enrolled: %v, want 404", err)
	}
}

// state is what a VM's calls could change, to compare before and after a
// refused call.
func (s *secured) state() string {
	s.m.mu.Lock()
	var seen []string
	for n, v := range s.m.vms {
		seen = append(seen, n+"@"+v.lastSeen.String())
	}
	revoked := slices.Clone(s.m.trust.revokedList)
	s.m.mu.Unlock()
	slices.Sort(seen)
	status, _ := s.m.Status("f")
	tree, _ := s.m.Tree("f")
	return js([]any{s.m.VMs(), seen, revoked, status, tree})
}

func TestVMCertificateActsOnlyForItsVM(t *testing.T) {
	ctx := context.Background()
	c := &clock{now: time.Now()}
	s := startSecured(t, t.TempDir(), c)
	keys := s.register("vm-a", "vm-b")
	admin := s.admin()
	if _, err := admin.PutFunction(ctx, "f", api.FunctionRequest{Image: "reg/f:1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Scale(ctx, "f", api.ScaleRequest{VMs: []string{"vm-b"}}); err != nil {
		t.Fatal(err)
	}
	a := s.asVM(keys["vm-a"])
	key, _ := pki.NewKey()
	csrB, _ := pki.NewCSR(key, "vm-b")
	manager := s.asVM(s.m.trust.keeper)
	cases := []struct {
		name string
		call func() error
		code int
	}{
		{"register as B", func() error { _, err := a.RegisterVM(ctx, "vm-b", "127.0.0.1:6666", nil); return err }, 403},
		{"heartbeat as B", func() error { _, err := a.Heartbeat(ctx, "vm-b"); return err }, 403},
		{"status as B", func() error {
			return a.ReportStatus(ctx, "vm-b", api.StatusReport{Functions: []api.FunctionReport{{Function: "f", State: api.StateFailed, Generation: 99}}, Images: []string{"reg/f:1"}})
		}, 403},
		{"leave as B", func() error { return a.LeaveVM(ctx, "vm-b") }, 403},
		{"renew B's certificate", func() error {
			_, err := a.RenewCertificate(ctx, "vm-b", api.RenewRequest{CSR: string(csrB)})
			return err
		}, 403},
		{"the manager's certificate is no VM's", func() error { _, err := manager.Heartbeat(ctx, "vm-b"); return err }, 403},
		{"a token never acts as a VM", func() error { _, err := admin.Heartbeat(ctx, "vm-b"); return err }, 401},
		{"no credentials", func() error { _, err := s.operator("").Heartbeat(ctx, "vm-b"); return err }, 401},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c.Add(time.Second) // a heartbeat accepted now would move B's clock
			before := s.state()
			err := tc.call()
			if statusOf(err) != tc.code {
				t.Fatalf("got %v, want %d", err, tc.code)
			}
			var se *api.StatusError
			if !asStatus(err, &se) || !strings.Contains(se.Message, "vm-b") {
				t.Errorf("the refusal does not say which VM the call needs: %v", err)
			}
			if after := s.state(); after != before {
				t.Errorf("a refused call changed the state:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
	if _, err := s.asVM(keys["vm-b"]).Heartbeat(ctx, "vm-b"); err != nil {
		t.Fatalf("B's own heartbeat after the attempts: %v", err)
	}
	if got := s.metricLine(`faasnet_manager_auth_refusals_total{reason="wrong_vm"}`); !strings.HasSuffix(got, " 6") {
		t.Errorf("wrong_vm refusals: %q, want 6", got)
	}
}

// foreignVM returns a certificate for vm that the cluster CA never signed:
// from another CA, or self-signed.
func foreignVM(t *testing.T, vm string, selfSigned bool) *pki.Keeper {
	t.Helper()
	key, _ := pki.NewKey()
	if !selfSigned {
		other, err := pki.Init(t.TempDir(), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		csrPEM, _ := pki.NewCSR(key, vm)
		block, _ := pem.Decode(csrPEM)
		csr, _ := x509.ParseCertificateRequest(block.Bytes)
		cert, _, err := other.SignVM(csr, vm, time.Now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return pki.NewKeeper(tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert})
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: vm},
		URIs:      []*url.URL{pki.VMURI(vm)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return pki.NewKeeper(tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert})
}

func TestCertificatesTheManagerDidNotIssueOrNoLongerHonours(t *testing.T) {
	ctx := context.Background()
	c := &clock{now: time.Now()}
	s := startSecured(t, t.TempDir(), c)
	keys := s.register("vm-a", "vm-r", "vm-e")

	// vm-r is revoked while its client holds a kept-alive connection: the
	// next request on it is refused too, not only new handshakes.
	kept := s.asVM(keys["vm-r"])
	if _, err := kept.Heartbeat(ctx, "vm-r"); err != nil {
		t.Fatal(err)
	}
	if err := s.admin().LeaveVM(ctx, "vm-r"); err != nil {
		t.Fatal(err)
	}
	if _, err := kept.Heartbeat(ctx, "vm-r"); statusOf(err) != http.StatusUnauthorized {
		t.Errorf("a revoked certificate on a kept-alive connection: %v, want 401", err)
	}
	if _, err := s.asVM(keys["vm-r"]).Heartbeat(ctx, "vm-r"); statusOf(err) != 0 {
		t.Errorf("a revoked certificate on a new connection: %v, want a refused handshake", err)
	}

	cases := []struct {
		name string
		vm   string
		k    *pki.Keeper
	}{
		{"another CA", "vm-a", foreignVM(t, "vm-a", false)},
		{"self-signed", "vm-a", foreignVM(t, "vm-a", true)},
		{"revoked", "vm-r", keys["vm-r"]},
		{"expired", "vm-e", keys["vm-e"]}, // after the clock moves below
	}
	c.Add(2 * time.Hour) // VM certificates live an hour here
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := s.state()
			client := s.asVM(tc.k)
			_, err := client.RegisterVM(ctx, tc.vm, "127.0.0.1:7777", nil)
			if code := statusOf(err); code != 0 && code != http.StatusUnauthorized {
				t.Fatalf("registering: %v, want a refused handshake or 401", err)
			}
			if _, err := client.Heartbeat(ctx, tc.vm); err == nil {
				t.Fatal("heartbeat accepted")
			}
			if after := s.state(); after != before {
				t.Errorf("a refused call changed the state:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
	// Refusals at the handshake are counted too: the revoked certificate
	// on a new connection, and the four of the table (expired by now, the
	// revoked one too) twice each.
	for series, want := range map[string]string{
		`faasnet_manager_auth_refusals_total{reason="revoked_cert"}`: " 2",
		`faasnet_manager_auth_refusals_total{reason="bad_cert"}`:     " 8",
	} {
		if got := s.metricLine(series); !strings.HasSuffix(got, want) {
			t.Errorf("%s: %q, want%s", series, got, want)
		}
	}
}

// Renewal needs the VM's own live certificate and gives a certificate that
// works in its place.
func TestRenewCertificate(t *testing.T) {
	ctx := context.Background()
	s := startSecured(t, t.TempDir(), nil)
	k := s.enroll("vm-a")
	key, _ := pki.NewKey()
	csr, _ := pki.NewCSR(key, "vm-a")
	other, _ := pki.NewCSR(key, "vm-b")
	if _, err := s.asVM(k).RenewCertificate(ctx, "vm-a", api.RenewRequest{CSR: string(other)}); statusOf(err) != http.StatusBadRequest {
		t.Fatalf("renewing with a request naming another VM: %v, want 400", err)
	}
	resp, err := s.asVM(k).RenewCertificate(ctx, "vm-a", api.RenewRequest{CSR: string(csr)})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(resp)
	cert, _, err := s.verifier().AcceptCertificate(strings.NewReader(string(b)), key, "vm-a")
	if err != nil {
		t.Fatal(err)
	}
	if cert.Leaf.SerialNumber.Cmp(k.Get().Leaf.SerialNumber) == 0 {
		t.Fatal("renewal returned the old certificate")
	}
	if _, err := s.asVM(pki.NewKeeper(cert)).RegisterVM(ctx, "vm-a", "127.0.0.1:9000", nil); err != nil {
		t.Fatalf("registering with the renewed certificate: %v", err)
	}
	// Revoking the VM revokes both certificates.
	if err := s.admin().LeaveVM(ctx, "vm-a"); err != nil {
		t.Fatal(err)
	}
	for _, kk := range []*pki.Keeper{k, pki.NewKeeper(cert)} {
		if _, err := s.asVM(kk).Heartbeat(ctx, "vm-a"); err == nil {
			t.Error("a certificate of the revoked VM still works")
		}
	}
}

func asStatus(err error, se **api.StatusError) bool {
	if err == nil {
		return false
	}
	e, ok := err.(*api.StatusError)
	if !ok {
		return false
	}
	*se = e
	return true
}

func TestOperatorTokens(t *testing.T) {
	ctx := context.Background()
	c := &clock{now: time.Now()}
	s := startSecured(t, t.TempDir(), c)
	admin := s.admin()
	mint := func(role, ttl string) api.NewToken {
		t.Helper()
		nt, err := admin.CreateToken(ctx, api.TokenRequest{Role: role, TTL: ttl})
		if err != nil {
			t.Fatal(err)
		}
		return nt
	}
	read, revoked, short := mint("read", "1h"), mint("read", ""), mint("read", "1m")
	if err := admin.RevokeToken(ctx, revoked.ID); err != nil {
		t.Fatal(err)
	}
	c.Add(2 * time.Minute) // short has expired
	vm := s.asVM(s.enroll("vm-a"))
	anon := s.operator("")
	adminTok, join := s.fileToken(token.AdminFile), s.fileToken(token.JoinFile)
	p := api.Prefix
	fn := map[string]string{"image": "reg/f:1"}
	cases := []struct {
		name         string
		client       *api.Client
		method, path string
		bearer       string
		body         any
		code         int
	}{
		{"healthz is open", anon, "GET", "/healthz", "", nil, 200},
		{"no token", anon, "GET", p + "/vms", "", nil, 401},
		{"read token reads", anon, "GET", p + "/vms", read.Token, nil, 200},
		{"metrics need a token", anon, "GET", "/metrics", "", nil, 401},
		{"read token reads metrics", anon, "GET", "/metrics", read.Token, nil, 200},
		{"read token on a write", anon, "PUT", p + "/functions/f", read.Token, fn, 403},
		{"read token creates no token", anon, "POST", p + "/tokens", read.Token, api.TokenRequest{Role: "admin"}, 403},
		{"read token lists no tokens", anon, "GET", p + "/tokens", read.Token, nil, 403},
		{"read token removes no VM", anon, "DELETE", p + "/vms/vm-a", read.Token, nil, 403},
		{"revoked token", anon, "GET", p + "/vms", revoked.Token, nil, 401},
		{"expired token", anon, "GET", p + "/vms", short.Token, nil, 401},
		{"join token is no operator token", anon, "GET", p + "/vms", join, nil, 403},
		{"malformed token", anon, "GET", p + "/vms", "not-a-token", nil, 401},
		{"a VM certificate is no operator credential", vm, "GET", p + "/vms", "", nil, 401},
		{"a VM certificate defines no function", vm, "PUT", p + "/functions/f", "", fn, 401},
		{"admin writes", anon, "PUT", p + "/functions/f", adminTok, fn, 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, h, body := raw(t, tc.client, tc.method, tc.path, tc.bearer, tc.body)
			if code != tc.code {
				t.Fatalf("%s %s: %d %s, want %d", tc.method, tc.path, code, body, tc.code)
			}
			if code == 401 && tc.client == anon && !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("401 without a Bearer challenge: %q", h.Get("WWW-Authenticate"))
			}
			// A manager with a local store leads, and names no other.
			if tc.path == "/healthz" && strings.TrimSpace(string(body)) != `{"status":"ok","role":"leader"}` {
				t.Errorf("healthz says more than ok and its role: %s", body)
			}
		})
	}
	if fns := s.m.Functions(); len(fns) != 1 {
		t.Errorf("functions after the calls: %+v, want only the admin's f", fns)
	}
	for _, reason := range []string{"no_token", "role", "revoked_token", "expired_token", "malformed_token"} {
		if s.metricLine(`faasnet_manager_auth_refusals_total{reason="`+reason+`"}`) == "" {
			t.Errorf("no refusal counted for %s", reason)
		}
	}
	// The listing names tokens by id, never by secret.
	code, _, body := raw(t, anon, "GET", p+"/tokens", adminTok, nil)
	if code != 200 || !strings.Contains(string(body), read.ID) {
		t.Fatalf("token list: %d %s", code, body)
	}
	for _, secret := range []string{read.Token, adminTok, join, revoked.Token} {
		if strings.Contains(string(body), secret) {
			t.Fatal("the token list shows a secret")
		}
	}
}

// An attacker's sweep: every route but the open ones refuses a caller
// without credentials, a VM certificate where a token is needed, and a
// token where a VM certificate is needed.
func TestEveryRouteChecksCredentials(t *testing.T) {
	s := startSecured(t, t.TempDir(), nil)
	anon := s.operator("")
	vm := s.asVM(s.enroll("vm-a"))
	adminTok := s.fileToken(token.AdminFile)
	fill := strings.NewReplacer("{vm}", "vm-b", "{fn}", "f", "{id}", "0000000000000000")
	for _, rt := range s.m.routes() {
		method, path, _ := strings.Cut(rt.pattern, " ")
		path = fill.Replace(path)
		t.Run(method+" "+path, func(t *testing.T) {
			if rt.need == open {
				return
			}
			if code, _, body := raw(t, anon, method, path, "", struct{}{}); code != 401 {
				t.Errorf("without credentials: %d %s", code, body)
			}
			switch rt.need {
			case reader, admin, viewer:
				if code, _, body := raw(t, vm, method, path, "", struct{}{}); code != 401 {
					t.Errorf("with a VM certificate and no token: %d %s", code, body)
				}
			case vmSelf:
				if code, _, body := raw(t, anon, method, path, adminTok, struct{}{}); code != 401 {
					t.Errorf("with the admin token and no certificate: %d %s", code, body)
				}
				if code, _, body := raw(t, vm, method, path, "", struct{}{}); code != 403 {
					t.Errorf("with another VM's certificate: %d %s", code, body)
				}
			}
		})
	}
}

func TestEnvValuesOnlyForMemberVMs(t *testing.T) {
	ctx := context.Background()
	s := startSecured(t, t.TempDir(), nil)
	keys := s.register("vm-a", "vm-b")
	admin := s.admin()
	spec := json.RawMessage(`{"command":["app"],"env":["DB_PASSWORD=hunter2","MODE=fast=1"]}`)
	put, err := admin.PutFunction(ctx, "f", api.FunctionRequest{Image: "reg/f:1", Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Scale(ctx, "f", api.ScaleRequest{VMs: []string{"vm-a"}}); err != nil {
		t.Fatal(err)
	}
	_, _, listing := raw(t, admin, "GET", api.Prefix+"/functions", s.fileToken(token.AdminFile), nil)
	for what, b := range map[string][]byte{"GET /functions": listing, "PUT answer": []byte(js(put))} {
		if strings.Contains(string(b), "hunter2") || strings.Contains(string(b), "fast") {
			t.Errorf("%s shows an env value: %s", what, b)
		}
		if !strings.Contains(string(b), `DB_PASSWORD=`) || !strings.Contains(string(b), `MODE=`) {
			t.Errorf("%s does not name the variables: %s", what, b)
		}
	}
	member, err := s.asVM(keys["vm-a"]).Heartbeat(ctx, "vm-a")
	if err != nil {
		t.Fatal(err)
	}
	if len(member.Assignments) != 1 || !strings.Contains(string(member.Assignments[0].Spec), "DB_PASSWORD=hunter2") {
		t.Errorf("the member's assignment lacks the env value: %+v", member)
	}
	other, err := s.asVM(keys["vm-b"]).Heartbeat(ctx, "vm-b")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(js(other), "hunter2") {
		t.Errorf("a VM outside the function got its env: %s", js(other))
	}
}

func TestRedactEnv(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"none", `{"command":["a"]}`, `{"command":["a"]}`},
		{"empty", ``, ``},
		{"null", `null`, `null`},
		{"values", `{"env":["A=1","B=x=y","C="]}`, `{"env":["A=","B=","C="]}`},
		{"name without value", `{"env":["A"]}`, `{"env":["A="]}`},
		// encoding/json matches field names case-insensitively: a worker
		// reads "ENV" as env, so a listing must not show it either.
		{"other case", `{"ENV":["A=1"],"command":["a"]}`, `{"command":["a"],"env":["A="]}`},
		{"duplicate keys", `{"env":["A=1"],"Env":["B=2"]}`, `{"env":["A=","B="]}`},
		{"not an object", `[1]`, ``},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := redactEnv(json.RawMessage(tc.in))
			if tc.name == "duplicate keys" {
				// Map order decides the order of names; only the values matter.
				if strings.Contains(string(got), "1") || strings.Contains(string(got), "2") {
					t.Fatalf("redactEnv(%s) = %s", tc.in, got)
				}
				return
			}
			if string(got) != tc.want {
				t.Fatalf("redactEnv(%s) = %s, want %s", tc.in, got, tc.want)
			}
		})
	}
}

// A VM that claims an image it was never assigned does not become the
// preferred root of that image's next scale-out.
func TestUnassignedImageClaimIsIgnored(t *testing.T) {
	ctx := context.Background()
	m := newTestManager(t, store.NewMemory(), &clock{now: time.Unix(1000, 0)})
	register(t, m, vmNames(4)...)
	for _, f := range []string{"busy", "f"} {
		if _, err := m.PutFunction(ctx, f, api.FunctionRequest{Image: "reg/" + f + ":1"}); err != nil {
			t.Fatal(err)
		}
	}
	// vm-003 hosts another function, so it comes last unless placement
	// believes it caches f's image.
	if _, err := m.Scale(ctx, "busy", api.ScaleRequest{VMs: []string{"vm-003"}}); err != nil {
		t.Fatal(err)
	}
	if err := m.ReportStatus(ctx, "vm-003", api.StatusReport{Images: []string{"reg/f:1", "reg/busy:1"}}); err != nil {
		t.Fatal(err)
	}
	out, err := m.Scale(ctx, "f", api.ScaleRequest{Count: 1})
	if err != nil {
		t.Fatal(err)
	}
	if out.Added[0].VM == "vm-003" {
		t.Fatal("a claim of an image never assigned made vm-003 the root")
	}
	var d dto.Metric
	if err := m.metrics.claimsIgnored.Write(&d); err != nil {
		t.Fatal(err)
	}
	if got := d.GetCounter().GetValue(); got != 1 {
		t.Errorf("ignored claims counted: %v, want 1", got)
	}
	m.mu.Lock()
	kept := m.vms["vm-003"].rec.Images
	m.mu.Unlock()
	if !slices.Equal(kept, []string{"reg/busy:1"}) {
		t.Errorf("vm-003's images after its report: %v, want only the assigned reg/busy:1", kept)
	}
}
