package manager

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/grant"
	"github.com/faasnet/faasnet/pki"
	"github.com/faasnet/faasnet/token"
)

// workerStandIn is a worker's push endpoint: an HTTPS server with the
// settings of a worker's peer listener (mutual TLS, cluster CA only),
// serving k's certificate, that records who pushed.
type workerStandIn struct {
	srv     *httptest.Server
	pushes  atomic.Int64
	fromMgr atomic.Int64
	docs    atomic.Int64
}

func startStandIn(t *testing.T, s *secured, k *pki.Keeper) *workerStandIn {
	t.Helper()
	w := &workerStandIn{}
	v := s.verifier()
	w.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		w.pushes.Add(1)
		if id, err := v.Peer(r.TLS); err == nil && id.Manager {
			w.fromMgr.Add(1)
		}
		var doc api.Assignments
		if r.URL.Path == api.WorkerAssignmentsPath && json.NewDecoder(r.Body).Decode(&doc) == nil && len(doc.Assignments) == 1 {
			w.docs.Add(1)
		}
	}))
	if k != nil {
		w.srv.Listener = newTLSListener(w.srv.Listener, v.PeerServer(k))
	}
	w.srv.Start()
	t.Cleanup(w.srv.Close)
	return w
}

func (w *workerStandIn) addr() string { return w.srv.Listener.Addr().String() }

// Pushes go only over mutual TLS, as the manager, to the VM they are for.
func TestPushOnlyOverMutualTLS(t *testing.T) {
	ctx := context.Background()
	s := startSecured(t, t.TempDir(), nil)
	ka, kb := s.enroll("vm-a"), s.enroll("vm-b")
	if _, err := s.admin().PutFunction(ctx, "f", api.FunctionRequest{Image: "reg/f:1", Spec: json.RawMessage(`{"env":["K=secret"]}`)}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		server *pki.Keeper // nil: plain HTTP
		want   int64
	}{
		{"the VM itself", ka, 1},
		{"another VM at the registered address", kb, 0},
		{"plain HTTP at the registered address", nil, 0},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := startStandIn(t, s, tc.server)
			if _, err := s.asVM(ka).RegisterVM(ctx, "vm-a", w.addr(), nil); err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				if _, err := s.admin().Scale(ctx, "f", api.ScaleRequest{VMs: []string{"vm-a"}}); err != nil {
					t.Fatal(err)
				}
			}
			s.m.pusher.push(ctx, "vm-a")
			if got := w.pushes.Load(); got != tc.want {
				t.Fatalf("the server got %d pushes, want %d", got, tc.want)
			}
			if tc.want > 0 && (w.fromMgr.Load() != tc.want || w.docs.Load() != tc.want) {
				t.Fatalf("pushes from the manager's certificate: %d, with a document: %d, want %d", w.fromMgr.Load(), w.docs.Load(), tc.want)
			}
		})
	}
}

func TestRestartKeepsCATokensAndRevocations(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := startSecured(t, dir, nil)
	caPEM := s.m.CA().CertPEM
	adminTok, joinTok := s.fileToken(token.AdminFile), s.fileToken(token.JoinFile)
	keys := s.register("vm-a", "vm-b")
	read, err := s.admin().CreateToken(ctx, api.TokenRequest{Role: "read"})
	if err != nil {
		t.Fatal(err)
	}
	gone, err := s.admin().CreateToken(ctx, api.TokenRequest{Role: "admin"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.admin().RevokeToken(ctx, gone.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.admin().LeaveVM(ctx, "vm-b"); err != nil {
		t.Fatal(err)
	}
	serialB := keys["vm-b"].Get().Leaf.SerialNumber.Text(16)
	s.stop()

	s2 := startSecured(t, dir, nil)
	if !bytes.Equal(s2.m.CA().CertPEM, caPEM) {
		t.Fatal("the CA changed across a restart")
	}
	if s2.fileToken(token.AdminFile) != adminTok || s2.fileToken(token.JoinFile) != joinTok {
		t.Fatal("the bootstrap token files changed across a restart")
	}
	if _, err := s2.operator(read.Token).VMs(ctx); err != nil {
		t.Errorf("a read token made before the restart: %v", err)
	}
	if _, err := s2.operator(gone.Token).VMs(ctx); statusOf(err) != http.StatusUnauthorized {
		t.Errorf("a token revoked before the restart: %v, want 401", err)
	}
	if _, err := s2.asVM(keys["vm-b"]).Heartbeat(ctx, "vm-b"); err == nil {
		t.Error("a certificate revoked before the restart is accepted")
	}
	doc, err := s2.asVM(keys["vm-a"]).Heartbeat(ctx, "vm-a")
	if err != nil {
		t.Fatalf("vm-a's certificate after the restart: %v", err)
	}
	if !slices.Contains(doc.Revoked, serialB) {
		t.Errorf("the revoked list after the restart %v lacks vm-b's serial %s", doc.Revoked, serialB)
	}
	if _, err := s2.tryEnroll("vm-a", joinTok); statusOf(err) != http.StatusConflict {
		t.Errorf("enrolling over vm-a's live certificate after the restart: %v, want 409", err)
	}
}

func TestAssignmentsCarryGrantsAndRevocations(t *testing.T) {
	ctx := context.Background()
	c := &clock{now: time.Now()}
	s := startSecured(t, t.TempDir(), c)
	keys := s.register("vm-a", "vm-b")
	fn, err := s.admin().PutFunction(ctx, "f", api.FunctionRequest{Image: "reg/f:1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.admin().Scale(ctx, "f", api.ScaleRequest{VMs: []string{"vm-a", "vm-b"}}); err != nil {
		t.Fatal(err)
	}
	a := s.asVM(keys["vm-a"])
	heartbeatGrant := func() string {
		t.Helper()
		doc, err := a.Heartbeat(ctx, "vm-a")
		if err != nil {
			t.Fatal(err)
		}
		if len(doc.Assignments) != 1 || doc.Assignments[0].Grant == "" {
			t.Fatalf("assignments without a grant: %+v", doc)
		}
		return doc.Assignments[0].Grant
	}
	d, _ := parseDigest(fn.Digest)
	g1 := heartbeatGrant()
	got, err := grant.Verify(g1, s.m.CA().Public(), c.Now(), "vm-a", d)
	if err != nil || got.Function != "f" {
		t.Fatalf("vm-a's grant: %+v, %v", got, err)
	}
	if _, err := grant.Verify(g1, s.m.CA().Public(), c.Now(), "vm-b", d); !errors.Is(err, grant.ErrWrongVM) {
		t.Fatalf("vm-a's grant used by vm-b: %v, want ErrWrongVM", err)
	}
	if g2 := heartbeatGrant(); g2 != g1 {
		t.Error("the grant was signed again within its first half")
	}
	c.Add(6 * time.Minute) // past half of the 10 minutes
	g3 := heartbeatGrant()
	if g3 == g1 {
		t.Fatal("the grant was not signed again past half its life")
	}
	if _, err := grant.Verify(g3, s.m.CA().Public(), c.Now().Add(9*time.Minute), "vm-a", d); err != nil {
		t.Errorf("the new grant: %v", err)
	}

	if err := s.admin().LeaveVM(ctx, "vm-b"); err != nil {
		t.Fatal(err)
	}
	doc, err := a.Heartbeat(ctx, "vm-a")
	if err != nil {
		t.Fatal(err)
	}
	if serial := keys["vm-b"].Get().Leaf.SerialNumber.Text(16); !slices.Equal(doc.Revoked, []string{serial}) {
		t.Errorf("revoked in vm-a's assignments: %v, want [%s]", doc.Revoked, serial)
	}
}

// Expired certificates are forgotten (a revoked one fails every handshake
// once expired), and the manager's certificate is renewed before it expires.
func TestMaintainTrust(t *testing.T) {
	ctx := context.Background()
	c := &clock{now: time.Now()}
	s := startSecured(t, t.TempDir(), c)
	s.enroll("vm-a")
	s.enroll("vm-b")
	if err := s.admin().LeaveVM(ctx, "vm-b"); err != nil {
		t.Fatal(err)
	}
	if err := s.m.maintainTrust(ctx); err != nil {
		t.Fatal(err)
	}
	if st, _ := s.st.Load(ctx); len(st.Certs) != 2 || len(s.m.trust.revokedList) != 1 {
		t.Fatalf("live certificates were pruned: %d stored, %d revoked", len(st.Certs), len(s.m.trust.revokedList))
	}
	c.Add(2 * time.Hour) // past the VM certificates' hour
	if err := s.m.maintainTrust(ctx); err != nil {
		t.Fatal(err)
	}
	st, _ := s.st.Load(ctx)
	if len(st.Certs) != 0 || len(s.m.trust.revokedList) != 0 || len(s.m.trust.revoked.Serials()) != 0 {
		t.Fatalf("expired certificates kept: %d stored, %v listed, %v revoked", len(st.Certs), s.m.trust.revokedList, s.m.trust.revoked.Serials())
	}

	old := s.m.trust.keeper.Get().Leaf
	c.Add(61 * 24 * time.Hour) // two thirds of the default 90 days
	if err := s.m.maintainTrust(ctx); err != nil {
		t.Fatal(err)
	}
	renewed := s.m.trust.keeper.Get().Leaf
	if !renewed.NotAfter.After(old.NotAfter) {
		t.Fatalf("the manager certificate was not renewed: expires %s, before %s", renewed.NotAfter, old.NotAfter)
	}
	if id, err := pki.Identify(renewed); err != nil || !id.Manager {
		t.Errorf("the renewed certificate names %v (%v)", id, err)
	}
}

func TestSecurityOptionsRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		sec  Security
	}{
		{"no directory", Security{}},
		{"grant beyond the grant limit", Security{Dir: "x", GrantTTL: 48 * time.Hour}},
		{"tiny VM certificate lifetime", Security{Dir: "x", VMCertTTL: time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.sec.withDefaults(); err == nil {
				t.Fatalf("%+v accepted", tc.sec)
			}
		})
	}
}

func TestParseTokenRequest(t *testing.T) {
	for _, tc := range []struct {
		body string
		role token.Role
		ttl  time.Duration
		ok   bool
	}{
		{`{"role":"read"}`, token.Read, 0, true},
		{`{"role":"admin","ttl":"24h"}`, token.Admin, 24 * time.Hour, true},
		{`{"role":"read","ttl":""}` + "\n", token.Read, 0, true},
		{`{"role":"join"}`, "", 0, false},
		{`{"role":"Admin"}`, "", 0, false},
		{`{"role":"read","ttl":"-1h"}`, "", 0, false},
		{`{"role":"read","ttl":"0s"}`, "", 0, false},
		{`{"role":"read","ttl":"100000h"}`, "", 0, false},
		{`{"role":"read","ttl":"1d"}`, "", 0, false},
		{`{"role":"read","extra":1}`, "", 0, false},
		{`{"role":"read"}{}`, "", 0, false},
		{`{"role":"read","ttl":24}`, "", 0, false},
		{``, "", 0, false},
		{`{"role":"read","ttl":"` + strings.Repeat("1", 5000) + `s"}`, "", 0, false},
	} {
		role, ttl, err := ParseTokenRequest(strings.NewReader(tc.body))
		if (err == nil) != tc.ok || role != tc.role || ttl != tc.ttl {
			t.Errorf("ParseTokenRequest(%.60q) = %q, %s, %v; want %q, %s, ok %v", tc.body, role, ttl, err, tc.role, tc.ttl, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrTokenRequest) {
			t.Errorf("error does not wrap ErrTokenRequest: %v", err)
		}
	}
}

func FuzzParseTokenRequest(f *testing.F) {
	for _, s := range []string{`{"role":"read"}`, `{"role":"admin","ttl":"1h30m"}`, `{"role":"read","ttl":"9223372036s"}`, `{"ttl":"-0"}`, `[]`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		role, ttl, err := ParseTokenRequest(strings.NewReader(body))
		if err != nil {
			if !errors.Is(err, ErrTokenRequest) {
				t.Fatalf("error does not wrap ErrTokenRequest: %v", err)
			}
			return
		}
		if role != token.Read && role != token.Admin {
			t.Fatalf("accepted role %q", role)
		}
		if ttl != 0 && (ttl < time.Second || ttl > MaxTokenTTL) {
			t.Fatalf("accepted lifetime %s", ttl)
		}
		if _, _, err := token.New(role, time.Now(), ttl); err != nil {
			t.Fatalf("accepted a request token.New refuses: %v", err)
		}
	})
}
