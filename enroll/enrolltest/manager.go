// Package enrolltest is a stand-in for the manager's trust endpoints, for
// tests of the VM side (enrollment, renewal, workers over mutual TLS)
// without a manager process. It is built from the same parts as the real
// manager (pki's CA and TLS settings, token's join tokens, grant's
// signatures), but it holds no trees: a test sets each VM's assignments.
// The real manager's endpoints are tested in package manager and, with real
// processes, in e2e.
package enrolltest

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/digest"
	"github.com/faasnet/faasnet/grant"
	"github.com/faasnet/faasnet/internal/httpserver"
	"github.com/faasnet/faasnet/pki"
	"github.com/faasnet/faasnet/token"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Manager serves enrollment (join token in the body), renewal, register,
// heartbeat and status over TLS with a manager certificate of its CA, and
// accepts a VM's calls only with that VM's certificate. Heartbeats answer
// what SetAssignments set, with the serials Revoke revoked.
type Manager struct {
	CA            *pki.CA
	CAFile        string // the CA certificate, PEM, as a VM is given it
	JoinToken     string
	JoinTokenFile string // JoinToken in a 0600 file, as a VM is given it
	URL           string // https://127.0.0.1:PORT

	verifier *pki.Verifier
	keeper   *pki.Keeper // the manager's certificate
	revoked  *pki.Revocations

	mu          sync.Mutex
	vmTTL       time.Duration
	docs        map[string]api.Assignments
	addrs       map[string]string
	renewals    int
	enrollments int
	heartbeats  map[string]int
}

// New starts a stand-in manager with a new CA in a temporary directory; it
// stops when the test ends.
func New(t testing.TB) *Manager {
	t.Helper()
	dir := t.TempDir()
	now := time.Now()
	ca, err := pki.Init(filepath.Join(dir, "ca"), now)
	if err != nil {
		t.Fatal(err)
	}
	join, _, err := token.New(token.Join, now, 0)
	if err != nil {
		t.Fatal(err)
	}
	joinFile := filepath.Join(dir, token.JoinFile)
	if err := token.WriteFile(joinFile, join); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srvCert, err := ca.IssueServer(ln.Addr().String(), nil, now, 0)
	if err != nil {
		t.Fatal(err)
	}
	m := &Manager{
		CA: ca, CAFile: filepath.Join(dir, "ca", pki.CertFile),
		JoinToken: join, JoinTokenFile: joinFile,
		URL:     "https://" + ln.Addr().String(),
		keeper:  pki.NewKeeper(srvCert),
		revoked: &pki.Revocations{},
		docs:    map[string]api.Assignments{},
		addrs:   map[string]string{},

		heartbeats: map[string]int{},
	}
	m.verifier = pki.NewVerifier(ca.Cert, m.revoked)
	// Refused handshakes are what many tests provoke: not worth a log line.
	srv := httpserver.New(m.routes(), httpserver.Options{})
	srv.ErrorLog = log.New(io.Discard, "", 0)
	go srv.Serve(tls.NewListener(ln, m.verifier.ManagerServer(m.keeper)))
	t.Cleanup(func() { srv.Close() })
	return m
}

// SetVMTTL sets the lifetime of the certificates the manager signs from
// now on (0: pki.DefaultVMTTL).
func (m *Manager) SetVMTTL(d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.vmTTL = d
}

// SetAssignments sets what vm's heartbeats answer.
func (m *Manager) SetAssignments(vm string, doc api.Assignments) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.docs[vm] = doc
}

// Addr is the address vm registered, "" if it has not.
func (m *Manager) Addr(vm string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.addrs[vm]
}

// Renewals counts the certificates renewed.
func (m *Manager) Renewals() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.renewals
}

// Heartbeats counts vm's heartbeats.
func (m *Manager) Heartbeats(vm string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.heartbeats[vm]
}

// Enrollments counts the certificates signed for a join token.
func (m *Manager) Enrollments() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.enrollments
}

// Revoke revokes c: the manager refuses it, and heartbeats list its serial.
func (m *Manager) Revoke(c *x509.Certificate) { m.revoked.Revoke(c) }

// Certificate is the manager's own certificate (it also pushes with it).
func (m *Manager) Certificate() tls.Certificate { return m.keeper.Get() }

// Issue signs a certificate for vm, valid from now for ttl, for a new key,
// as enrollment would.
func (m *Manager) Issue(t testing.TB, vm string, now time.Time, ttl time.Duration) tls.Certificate {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	csr := mustCSR(t, key, vm)
	cert, _, err := m.CA.SignVM(csr, vm, now, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
}

// Grant signs a grant letting vm fetch the blobs of fn's image, whose
// manifest digest is manifest, for an hour.
func (m *Manager) Grant(t testing.TB, vm, fn, manifest string) string {
	t.Helper()
	d, err := digest.Parse(manifest)
	if err != nil {
		t.Fatal(err)
	}
	g, err := grant.Sign(m.CA.Signer(), grant.New(vm, fn, []v1.Hash{d}, time.Now(), time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// Push sends doc to vm's registered address over mutual TLS with the
// manager's certificate, as the manager pushes, and returns the status.
func (m *Manager) Push(ctx context.Context, vm string, doc api.Assignments) (int, error) {
	return PushAs(ctx, m.verifier.PeerClient(m.keeper, vm), m.Addr(vm), doc)
}

// PushAs sends doc to the worker at addr with the TLS settings cfg (whose
// certificate is the pusher's identity) and returns the status.
func PushAs(ctx context.Context, cfg *tls.Config, addr string, doc api.Assignments) (int, error) {
	body, err := json.Marshal(doc)
	if err != nil {
		return 0, err
	}
	u := url.URL{Scheme: "https", Host: addr, Path: api.WorkerAssignmentsPath}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	tr := &http.Transport{TLSClientConfig: cfg}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// SelfSigned is a certificate naming vm by the naming rule but signed by
// its own key.
func SelfSigned(t testing.TB, vm string) tls.Certificate {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7),
		Subject:      pkix.Name{CommonName: vm},
		URIs:         []*url.URL{pki.VMURI(vm)},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func mustCSR(t testing.TB, key crypto.Signer, vm string) *x509.CertificateRequest {
	t.Helper()
	p, err := pki.NewCSR(key, vm)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := parseCSR(string(p))
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

func parseCSR(p string) (*x509.CertificateRequest, error) {
	block, _ := pem.Decode([]byte(p))
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("no PEM certificate request")
	}
	return x509.ParseCertificateRequest(block.Bytes)
}

func (m *Manager) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+api.Prefix+api.EnrollPath, m.enroll)
	mux.HandleFunc("POST "+api.Prefix+"/vms/{vm}/certificate", m.asVM(m.renew))
	mux.HandleFunc("PUT "+api.Prefix+"/vms/{vm}", m.asVM(m.register))
	mux.HandleFunc("POST "+api.Prefix+"/vms/{vm}/heartbeat", m.asVM(m.heartbeat))
	mux.HandleFunc("POST "+api.Prefix+"/vms/{vm}/status", m.asVM(func(w http.ResponseWriter, r *http.Request, vm string) {
		reply(w, http.StatusOK, struct{}{})
	}))
	return mux
}

// asVM serves h only to the VM the path names, identified by its
// certificate.
func (m *Manager) asVM(h func(http.ResponseWriter, *http.Request, string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		vm := r.PathValue("vm")
		id, err := m.verifier.Peer(r.TLS)
		if err != nil || id.Manager || id.VM != vm {
			reply(w, http.StatusForbidden, api.Error{Message: fmt.Sprintf("only vm/%s may call this (%s, %v)", vm, id, err)})
			return
		}
		h(w, r, vm)
	}
}

func (m *Manager) enroll(w http.ResponseWriter, r *http.Request) {
	e, err := pki.ParseEnrollRequest(r.Body)
	if err != nil {
		reply(w, http.StatusBadRequest, api.Error{Message: err.Error()})
		return
	}
	if e.JoinToken != m.JoinToken {
		reply(w, http.StatusUnauthorized, api.Error{Message: "unknown join token"})
		return
	}
	m.mu.Lock()
	m.enrollments++
	m.mu.Unlock()
	m.sign(w, e.CSR, e.VM)
}

func (m *Manager) renew(w http.ResponseWriter, r *http.Request, vm string) {
	var req api.RenewRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
		reply(w, http.StatusBadRequest, api.Error{Message: err.Error()})
		return
	}
	csr, err := parseCSR(req.CSR)
	if err != nil {
		reply(w, http.StatusBadRequest, api.Error{Message: err.Error()})
		return
	}
	// A renewal keeps the key: a new key would need the join token.
	if cur := r.TLS.PeerCertificates[0]; !publicEqual(cur.PublicKey, csr.PublicKey) {
		reply(w, http.StatusBadRequest, api.Error{Message: "renewal for another key"})
		return
	}
	m.mu.Lock()
	m.renewals++
	m.mu.Unlock()
	m.sign(w, csr, vm)
}

func publicEqual(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && e.Equal(b)
}

func (m *Manager) sign(w http.ResponseWriter, csr *x509.CertificateRequest, vm string) {
	m.mu.Lock()
	ttl := m.vmTTL
	m.mu.Unlock()
	cert, certPEM, err := m.CA.SignVM(csr, vm, time.Now(), ttl)
	if err != nil {
		reply(w, http.StatusBadRequest, api.Error{Message: err.Error()})
		return
	}
	reply(w, http.StatusOK, api.EnrollResponse{Certificate: string(certPEM), CA: string(m.CA.CertPEM), Expires: cert.NotAfter})
}

func (m *Manager) register(w http.ResponseWriter, r *http.Request, vm string) {
	var req api.RegisterRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
		reply(w, http.StatusBadRequest, api.Error{Message: err.Error()})
		return
	}
	m.mu.Lock()
	m.addrs[vm] = req.Addr
	m.mu.Unlock()
	reply(w, http.StatusOK, api.VM{VM: vm, Addr: req.Addr})
}

func (m *Manager) heartbeat(w http.ResponseWriter, r *http.Request, vm string) {
	m.mu.Lock()
	m.heartbeats[vm]++
	doc := m.docs[vm]
	m.mu.Unlock()
	doc.Revoked = nil
	for s := range m.revoked.Serials() {
		doc.Revoked = append(doc.Revoked, s)
	}
	sort.Strings(doc.Revoked)
	if doc.Assignments == nil {
		doc.Assignments = []api.Assignment{}
	}
	reply(w, http.StatusOK, doc)
}

func reply(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
