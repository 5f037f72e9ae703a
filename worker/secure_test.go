package worker

// Workers with Config.Security, over real mutual TLS on loopback, with
// certificates from a real CA. The manager is enrolltest's stand-in (its
// trust endpoints, with assignments the tests set): the real manager's side
// is being built alongside, and is covered with real processes by the e2e
// tests.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math"
	"math/big"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/enroll"
	"github.com/faasnet/faasnet/enroll/enrolltest"
	"github.com/faasnet/faasnet/grant"
	"github.com/faasnet/faasnet/imagegen"
	"github.com/faasnet/faasnet/internal/testenv"
	"github.com/faasnet/faasnet/peer"
	"github.com/faasnet/faasnet/pki"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	dto "github.com/prometheus/client_model/go"
)

// secureCluster is a registry, a stand-in manager and secure workers.
type secureCluster struct {
	t       *testing.T
	ctx     context.Context
	m       *enrolltest.Manager
	reg     string
	counter *blobCounter
	workers map[string]*Worker
	addrs   map[string]string
	rev     uint64
}

func newSecureCluster(t *testing.T) *secureCluster {
	t.Helper()
	c := &secureCluster{t: t, ctx: t.Context(), m: enrolltest.New(t),
		counter: &blobCounter{bytes: map[string]int64{}, gets: map[string]int{}},
		workers: map[string]*Worker{}, addrs: map[string]string{}}
	regSrv := httptest.NewServer(c.counter.wrap(registry.New(registry.Logger(nopLog()))))
	t.Cleanup(regSrv.Close)
	c.reg = strings.TrimPrefix(regSrv.URL, "http://")
	return c
}

// push pushes an image as test/app:tag and returns its reference and
// manifest digest.
func (c *secureCluster) push(seed int64, tag string) (ref, manifest string, img v1.Image) {
	c.t.Helper()
	img, err := imagegen.Image(imagegen.Spec{TotalSize: 1 << 20, Layers: 2, Seed: seed})
	if err != nil {
		c.t.Fatal(err)
	}
	ref = c.reg + "/test/app:" + tag
	if err := imagegen.Push(c.ctx, img, ref); err != nil {
		c.t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		c.t.Fatal(err)
	}
	return ref, d.String(), img
}

// start enrolls VM id with the join token and runs its worker until the
// test ends; it returns once the VM registered.
func (c *secureCluster) start(id string, mod func(*Config)) *Worker {
	c.t.Helper()
	cert, err := enroll.Enroll(c.ctx, c.m.URL, c.m.CA.Cert, c.m.JoinToken, id)
	if err != nil {
		c.t.Fatal(err)
	}
	cfg := testConfig(c.t, id, c.m.URL)
	cfg.Security = &Security{Keeper: pki.NewKeeper(cert), CA: c.m.CA.Cert}
	if mod != nil {
		mod(&cfg)
	}
	w, addr, _, _ := serveWorker(c.t, c.ctx, cfg)
	c.workers[id], c.addrs[id] = w, addr
	waitFor(c.t, id+" registered", func() bool { return c.m.Addr(id) != "" })
	return w
}

// assign makes vm's heartbeats answer as.
func (c *secureCluster) assign(vm string, as ...api.Assignment) {
	c.rev++
	c.m.SetAssignments(vm, api.Assignments{Revision: c.rev, Assignments: as})
}

func (c *secureCluster) waitReady(fn string, ids ...string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.ctx, time.Minute)
	defer cancel()
	for _, id := range ids {
		if err := c.workers[id].WaitState(ctx, fn, api.StateReady); err != nil {
			c.t.Fatal(err)
		}
	}
}

// client is a peer client presenting cert, checking servers against the
// cluster CA.
func (c *secureCluster) client(cert tls.Certificate) *peer.Client {
	v := pki.NewVerifier(c.m.CA.Cert, nil)
	k := pki.NewKeeper(cert)
	cl := peer.NewTLSClient(func(vm string) *tls.Config { return v.PeerClient(k, vm) }, nil)
	c.t.Cleanup(cl.HTTP.CloseIdleConnections)
	return cl
}

func refusals(w *Worker, reason string) float64 {
	var m dto.Metric
	if err := w.metrics.refusals.WithLabelValues(reason).Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// pinnedRef is how a child names a pinned image to its parent.
func pinnedRef(t *testing.T, ref, manifest string) string {
	r, err := name.ParseReference(ref, name.WeakValidation)
	if err != nil {
		t.Fatal(err)
	}
	return r.Context().Name() + "@" + manifest
}

// A child with a valid grant fetches the whole image from its parent over
// mutual TLS; the registry serves only the root.
func TestSecureChildFetchesImageFromParent(t *testing.T) {
	c := newSecureCluster(t)
	ref, md, img := c.push(31, "v1")
	c.start("p", nil)
	child := c.start("c", nil)
	c.assign("p", api.Assignment{Function: "f", Image: ref, Digest: md, Generation: 1})
	c.assign("c", api.Assignment{Function: "f", Image: ref, Digest: md, Generation: 1,
		Parent: &api.Peer{VM: "p", Addr: c.addrs["p"]}, Grant: c.m.Grant(t, "c", "f", md)})
	c.waitReady("f", "p", "c")

	r := child.Functions()[0]
	if r.BytesFromRegistry != 0 || r.BytesFromParent == 0 || r.BytesFromParent != r.ImageBytes {
		t.Errorf("child fetched %d bytes from the registry and %d from its parent, want all %d from the parent", r.BytesFromRegistry, r.BytesFromParent, r.ImageBytes)
	}
	for _, d := range imageBlobs(t, img) {
		if !child.complete(d) {
			t.Errorf("child: blob %s not complete", d)
		}
	}
	c.counter.mu.Lock()
	defer c.counter.mu.Unlock()
	for d, n := range c.counter.gets {
		if n != 1 {
			t.Errorf("registry served %s %d times, want once (to the root)", d, n)
		}
	}
}

// Only the manager may push: a push from any other certificate is refused,
// counted, and changes nothing (not even the revision, so a document with
// revision 2^64-1 does not shut the manager out); the manager's next push
// still applies.
func TestSecurePushOnlyFromManager(t *testing.T) {
	c := newSecureCluster(t)
	ref, md, _ := c.push(32, "v1")
	// Heartbeats only at start: assignments then come by push alone.
	w := c.start("vm", func(cfg *Config) { cfg.Heartbeat = time.Hour })
	waitFor(t, "the first heartbeat", func() bool { return c.m.Heartbeats("vm") > 0 })
	ctx := c.ctx
	f := api.Assignment{Function: "f", Image: ref, Digest: md, Generation: 1}
	if code, err := c.m.Push(ctx, "vm", api.Assignments{Revision: 1, Assignments: []api.Assignment{f}}); err != nil || code != 200 {
		t.Fatalf("manager push: %d, %v", code, err)
	}
	waitFor(t, "f assigned", func() bool { return len(w.Functions()) == 1 })

	v := pki.NewVerifier(c.m.CA.Cert, nil)
	self := w.cfg.Security.Keeper.Get()
	other := enrolltest.New(t)
	evil := api.Assignments{Revision: math.MaxUint64, Assignments: []api.Assignment{{Function: "evil", Image: ref, Generation: 1}}}
	tests := []struct {
		name   string
		cert   *tls.Certificate
		status int // 0: the handshake is refused
	}{
		{"another VM", new(c.m.Issue(t, "rogue", time.Now(), time.Hour)), 403},
		{"the worker's own certificate", &self, 403},
		{"a manager of another CA", new(other.Certificate()), 0},
		{"self-signed", new(enrolltest.SelfSigned(t, "rogue")), 0},
		{"no certificate", nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cfg *tls.Config
			if tt.cert != nil {
				cfg = v.PeerClient(pki.NewKeeper(*tt.cert), "vm")
			} else {
				cfg = v.PeerClient(pki.NewKeeper(tls.Certificate{}), "vm")
				cfg.GetClientCertificate = nil
			}
			code, err := enrolltest.PushAs(ctx, cfg, c.addrs["vm"], evil)
			switch {
			case tt.status == 0 && err == nil:
				t.Fatalf("push answered %d, want the handshake refused", code)
			case tt.status != 0 && (err != nil || code != tt.status):
				t.Fatalf("push: %d, %v; want %d", code, err, tt.status)
			}
		})
	}
	if got := refusals(w, "not_manager"); got != 2 {
		t.Errorf("not_manager refusals = %v, want 2", got)
	}
	if got := refusals(w, "untrusted_certificate"); got != 2 {
		t.Errorf("untrusted_certificate refusals = %v, want 2", got)
	}
	if fns := w.Functions(); len(fns) != 1 || fns[0].Function != "f" {
		t.Fatalf("functions after the refused pushes: %+v, want f alone", fns)
	}
	g := api.Assignment{Function: "g", Image: ref, Digest: md, Generation: 1}
	if code, err := c.m.Push(ctx, "vm", api.Assignments{Revision: 2, Assignments: []api.Assignment{f, g}}); err != nil || code != 200 {
		t.Fatalf("manager push: %d, %v", code, err)
	}
	waitFor(t, "g assigned", func() bool { return len(w.Functions()) == 2 })
}

// An enrolled VM without a grant that covers what it asks for is refused
// at once (never held for the wait for content not known yet), and each
// refusal is counted by reason; with a grant it gets the image.
func TestSecurePeerRefusals(t *testing.T) {
	c := newSecureCluster(t)
	refA, mdA, imgA := c.push(41, "a")
	refB, mdB, _ := c.push(42, "b")
	p := c.start("p", nil)
	c.assign("p", api.Assignment{Function: "a", Image: refA, Digest: mdA, Generation: 1},
		api.Assignment{Function: "b", Image: refB, Digest: mdB, Generation: 1})
	c.waitReady("a", "p")
	c.waitReady("b", "p")

	x := c.client(c.m.Issue(t, "x", time.Now(), time.Hour))
	layerA := imageBlobs(t, imgA)[2]
	mdAHash, _ := v1.NewHash(mdA)
	expired, err := grant.Sign(c.m.CA.Signer(), grant.New("x", "a", []v1.Hash{mdAHash}, time.Now().Add(-2*time.Hour), time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	blob := func(ctx context.Context) error {
		rc, err := x.Open(ctx, c.addrs["p"], layerA, 0, -1)
		if err == nil {
			rc.Close()
		}
		return err
	}
	head := func(ctx context.Context) error { _, err := x.Stat(ctx, c.addrs["p"], layerA); return err }
	resolve := func(ctx context.Context) error {
		_, err := x.Resolve(ctx, c.addrs["p"], pinnedRef(t, refA, mdA))
		return err
	}
	tests := []struct {
		name   string
		grant  string
		call   func(context.Context) error
		reason string
	}{
		{"no grant", "", blob, "no_grant"},
		{"no grant, HEAD", "", head, "no_grant"},
		{"no grant, resolve", "", resolve, "no_grant"},
		{"another VM's grant", c.m.Grant(t, "y", "a", mdA), blob, "wrong_vm"},
		{"a grant for another function's image", c.m.Grant(t, "x", "b", mdB), blob, "wrong_digest"},
		{"a grant for another function's image, resolve", c.m.Grant(t, "x", "b", mdB), resolve, "wrong_digest"},
		{"a grant of another CA", enrolltest.New(t).Grant(t, "x", "a", mdA), blob, "signature"},
		{"an expired grant", expired, blob, "expired"},
		{"garbage", "eyJ2IjoxfQ.AAAA", blob, "signature"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := refusals(p, tt.reason)
			start := time.Now()
			err := tt.call(peer.WithAuth(c.ctx, peer.Auth{ServerVM: "p", Grant: tt.grant}))
			if !errors.Is(err, peer.ErrForbidden) {
				t.Fatalf("got %v, want 403", err)
			}
			if took := time.Since(start); took > knownWait/2 {
				t.Errorf("the refusal took %s: it was held", took)
			}
			if got := refusals(p, tt.reason); got != before+1 {
				t.Errorf("%s refusals went from %v to %v, want one more", tt.reason, before, got)
			}
		})
	}

	ctx := peer.WithAuth(c.ctx, peer.Auth{ServerVM: "p", Grant: c.m.Grant(t, "x", "a", mdA)})
	d, err := x.Resolve(ctx, c.addrs["p"], pinnedRef(t, refA, mdA))
	if err != nil || d.Digest != mdA {
		t.Fatalf("resolve with the grant: %+v, %v", d, err)
	}
	blobs, _ := testenv.ImageBlobs(t, imgA)
	for dg, want := range blobs {
		got := testenv.ReadAll(t, func() (io.ReadCloser, error) { return x.Open(ctx, c.addrs["p"], dg, 0, -1) })
		if string(got) != string(want) {
			t.Errorf("blob %s with the grant: %d bytes, want its %d", dg, len(got), len(want))
		}
	}
}

// The peer listener takes certificates of the cluster CA only, valid and
// not revoked; a VM revoked while connected is refused at its next request.
func TestSecurePeerListenerRefusesCertificates(t *testing.T) {
	c := newSecureCluster(t)
	p := c.start("p", nil)
	ctx := peer.WithAuth(c.ctx, peer.Auth{ServerVM: "p"})
	other := enrolltest.New(t)
	tests := []struct {
		name string
		cert tls.Certificate
	}{
		{"another CA", other.Issue(t, "x", time.Now(), time.Hour)},
		{"self-signed", enrolltest.SelfSigned(t, "x")},
		{"expired", c.m.Issue(t, "x", time.Now().Add(-3*time.Hour), time.Hour)},
		{"no certificate", tls.Certificate{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := c.client(tt.cert).Healthy(ctx, c.addrs["p"]); err == nil {
				t.Fatal("the listener answered")
			}
		})
	}
	if got := refusals(p, "untrusted_certificate"); got != 3 {
		t.Errorf("untrusted_certificate refusals = %v, want 3", got)
	}

	cert := c.m.Issue(t, "x", time.Now(), time.Hour)
	x := c.client(cert)
	if err := x.Healthy(ctx, c.addrs["p"]); err != nil {
		t.Fatalf("before revocation: %v", err)
	}
	c.m.Revoke(cert.Leaf)
	waitFor(t, "p learnt the revocation", func() bool { return p.revoked.Revoked(cert.Leaf.SerialNumber) })
	if err := x.Healthy(ctx, c.addrs["p"]); !errors.Is(err, peer.ErrForbidden) {
		t.Errorf("on the open connection after revocation: %v, want 403", err)
	}
	if err := c.client(cert).Healthy(ctx, c.addrs["p"]); err == nil {
		t.Error("a new connection after revocation was accepted")
	}
	if got := refusals(p, "revoked"); got != 2 {
		t.Errorf("revoked refusals = %v, want 2", got)
	}
}

// A child whose parent is not who the manager said (its certificate names
// another VM), or refuses the child's grant (403), treats it as a failed
// parent: it never takes a byte from it, and gets the image from the
// registry instead.
func TestSecureChildFailsOverFromBadParent(t *testing.T) {
	tests := []struct {
		name     string
		parentVM string // the VM the child's assignment names at p's address
		grantVM  string // the VM the child's grant names
		reason   string // what p counts, "" for nothing (no request reaches it)
	}{
		{"parent is an impostor", "q", "c", ""},
		{"parent refuses the grant", "p", "someone-else", "wrong_vm"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newSecureCluster(t)
			ref, md, _ := c.push(51, "v1")
			p := c.start("p", nil)
			child := c.start("c", func(cfg *Config) { cfg.ParentTimeout = time.Second })
			c.assign("p", api.Assignment{Function: "f", Image: ref, Digest: md, Generation: 1})
			c.waitReady("f", "p")
			c.assign("c", api.Assignment{Function: "f", Image: ref, Digest: md, Generation: 1,
				Parent: &api.Peer{VM: tt.parentVM, Addr: c.addrs["p"]}, Grant: c.m.Grant(t, tt.grantVM, "f", md)})
			c.waitReady("f", "c")
			if r := child.Functions()[0]; r.BytesFromParent != 0 || r.BytesFromRegistry != r.ImageBytes {
				t.Errorf("child fetched %d bytes from the parent and %d from the registry, want all %d from the registry", r.BytesFromParent, r.BytesFromRegistry, r.ImageBytes)
			}
			s := p.peerSrv.Stats()
			if s.BytesSent != 0 {
				t.Errorf("the parent sent %d bytes", s.BytesSent)
			}
			if tt.reason == "" && s.Requests != 0 {
				t.Errorf("the impostor got %d peer requests", s.Requests)
			}
			if tt.reason != "" && refusals(p, tt.reason) == 0 {
				t.Errorf("the parent counted no %s refusal", tt.reason)
			}
		})
	}
}

// servedSerial is the serial of the certificate the listener at addr
// presents in a new handshake.
func servedSerial(t *testing.T, c *secureCluster, addr, vm string) *big.Int {
	t.Helper()
	v := pki.NewVerifier(c.m.CA.Cert, nil)
	cfg := v.PeerClient(pki.NewKeeper(c.m.Issue(t, "probe", time.Now(), time.Hour)), vm)
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber
}

// The worker renews its certificate at two thirds of its life: the live
// listener presents the new one at the next handshake, and it is saved.
func TestSecureRenewalUnderLiveListener(t *testing.T) {
	c := newSecureCluster(t)
	// With the CA's 5 minutes of backdating, 152 s makes a certificate
	// due for renewal about a second after it is signed.
	c.m.SetVMTTL(152 * time.Second)
	dir := t.TempDir()
	w := c.start("vm", func(cfg *Config) { cfg.Security.CertDir = dir })
	first := servedSerial(t, c, c.addrs["vm"], "vm")
	waitFor(t, "a renewal", func() bool {
		return c.m.Renewals() > 0 && w.cfg.Security.Keeper.Get().Leaf.SerialNumber.Cmp(first) != 0
	})
	if got := servedSerial(t, c, c.addrs["vm"], "vm"); got.Cmp(first) == 0 {
		t.Error("the listener still presents the first certificate")
	}
	saved, err := enroll.Load(dir, "vm", c.m.CA.Cert, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if saved.Leaf.SerialNumber.Cmp(first) == 0 {
		t.Error("the renewed certificate was not saved")
	}
	// The manager is still reached with the renewed certificates.
	beats := c.m.Heartbeats("vm")
	waitFor(t, "more heartbeats", func() bool { return c.m.Heartbeats("vm") > beats+2 })
}

// A new grant for the same assignment (the manager sends fresh ones before
// they expire) replaces the old one.
func TestSameGenerationRefreshesGrant(t *testing.T) {
	w := newWorker(t, Config{})
	ctx, cancel := context.WithCancel(t.Context())
	w.mu.Lock()
	w.ctx = ctx
	w.mu.Unlock()
	defer func() { cancel(); w.stopAll() }()
	a := api.Assignment{Function: "f", Image: "127.0.0.1:1/test/app:v1", Generation: 3, Parent: &api.Peer{VM: "p", Addr: "127.0.0.1:1"}, Grant: "old"}
	w.reconcile(api.Assignments{Assignments: []api.Assignment{a}})
	for _, tt := range []struct {
		gen         uint64
		grant, want string
	}{
		{3, "new", "new"},
		{3, "", "new"},
		{2, "older", "new"},
	} {
		a.Generation, a.Grant = tt.gen, tt.grant
		w.reconcile(api.Assignments{Assignments: []api.Assignment{a}})
		w.mu.Lock()
		got := w.fns["f"].a.Grant
		w.mu.Unlock()
		if got != tt.want {
			t.Errorf("after generation %d with grant %q: grant %q, want %q", tt.gen, tt.grant, got, tt.want)
		}
	}
}

func TestParseSerial(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want string // "" refused
	}{
		{"1f", "1f"}, {"1F", "1f"}, {"001f", "1f"}, {strings.Repeat("f", 40), strings.Repeat("f", 40)},
		{"", ""}, {"0", ""}, {"-1", ""}, {"xyz", ""}, {"0x1f", ""}, {strings.Repeat("f", 41), ""},
	} {
		n, ok := parseSerial(tt.in)
		if got := ""; ok {
			got = n.Text(16)
			if got != tt.want {
				t.Errorf("parseSerial(%q) = %s, want %q", tt.in, got, tt.want)
			}
		} else if tt.want != "" {
			t.Errorf("parseSerial(%q) refused, want %s", tt.in, tt.want)
		}
	}
}

func FuzzParseSerial(f *testing.F) {
	for _, s := range []string{"1f", "00ff", "-1", "", strings.Repeat("a", 65)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, ok := parseSerial(s)
		if !ok {
			return
		}
		// What is kept is a serial a certificate can carry, in the form
		// the revocation set keys it by.
		if n.Sign() <= 0 || n.BitLen() > 160 {
			t.Fatalf("parseSerial(%q) = %s", s, n)
		}
		c := &x509.Certificate{SerialNumber: n}
		if back, ok := parseSerial(c.SerialNumber.Text(16)); !ok || back.Cmp(n) != 0 {
			t.Fatalf("%q does not round-trip", s)
		}
	})
}
