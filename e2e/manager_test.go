package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/pki"
	"github.com/faasnet/faasnet/token"
)

// manager is a manager process and the files it wrote to its data
// directory: the cluster CA and the bootstrap tokens, which is all an
// operator or a new VM is given.
type manager struct {
	*proc
	dir    string // --data
	url    string // https://ADDR
	caFile string
	ca     *x509.Certificate
}

// startManager runs "faasnet manager" on a loopback port with a new data
// directory and extra flags.
func startManager(t testing.TB, extra ...string) *manager {
	t.Helper()
	dir := t.TempDir()
	p := start(t, "manager", append([]string{"manager", "--listen", "127.0.0.1:0", "--data", dir}, extra...)...)
	m := &manager{proc: p, dir: dir, url: "https://" + p.addr, caFile: filepath.Join(dir, pki.CertFile)}
	b, err := os.ReadFile(m.caFile)
	if err != nil {
		t.Fatalf("the manager wrote no CA certificate: %v", err)
	}
	if m.ca, err = pki.ParseCert(b); err != nil {
		t.Fatal(err)
	}
	return m
}

// adminFile and joinFile are the manager's bootstrap token files.
func (m *manager) adminFile() string { return filepath.Join(m.dir, token.AdminFile) }
func (m *manager) joinFile() string  { return filepath.Join(m.dir, token.JoinFile) }

// client returns an operator client with the given token.
func (m *manager) client(tok string) *api.Client {
	return api.NewTLSClient(m.url, pki.NewVerifier(m.ca, nil).ManagerClient(nil), tok)
}

// admin returns an operator client with the admin token.
func (m *manager) admin(t testing.TB) *api.Client {
	t.Helper()
	tok, err := token.ReadFile(m.adminFile())
	if err != nil {
		t.Fatal(err)
	}
	return m.client(tok)
}

// workerArgs are the flags a worker process needs to join this manager:
// its id, a loopback listener, the CA, the join token and its own
// directories.
func (m *manager) workerArgs(t testing.TB, id string) []string {
	return []string{"worker", "--id", id, "--listen", "127.0.0.1:0", "--manager", m.url,
		"--ca", m.caFile, "--join-token", m.joinFile(), "--cache", t.TempDir(), "--cert-dir", t.TempDir()}
}

// enroll runs "faasnet vm enroll" for id, as a provisioning tool would,
// and returns the certificate it wrote.
func (m *manager) enroll(t testing.TB, id string) tls.Certificate {
	t.Helper()
	out := t.TempDir()
	cmd := exec.Command(binary, "vm", "enroll", "--id", id, "--manager", m.url, "--ca", m.caFile, "--join-token", m.joinFile(), "--out", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("faasnet vm enroll %s: %v\n%s", id, err, b)
	}
	key, crt := pki.VMFiles(out, id)
	c, err := pki.LoadKeyPair(crt, key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// vm returns a client that calls the manager as the VM holding cert.
func (m *manager) vm(cert tls.Certificate) *api.Client {
	return api.NewTLSClient(m.url, pki.NewVerifier(m.ca, nil).ManagerClient(pki.NewKeeper(cert)), "")
}

// peerClient returns an HTTP client that calls worker vm's peer listener
// with cert, as another VM of the cluster would.
func (m *manager) peerClient(cert tls.Certificate, vm string) *http.Client {
	tr := &http.Transport{TLSClientConfig: pki.NewVerifier(m.ca, nil).PeerClient(pki.NewKeeper(cert), vm), DisableKeepAlives: true}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// member makes an enrolled VM id a member of fn, as a child somewhere in
// its tree, registered at an address nobody serves, and returns its
// certificate and the grant of its assignment: what a real child holds.
func (m *manager) member(t testing.TB, admin *api.Client, id, fn string) (tls.Certificate, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cert := m.enroll(t, id)
	vm := m.vm(cert)
	if _, err := vm.RegisterVM(ctx, id, "127.0.0.1:9", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Scale(ctx, fn, api.ScaleRequest{VMs: []string{id}}); err != nil {
		t.Fatal(err)
	}
	doc, err := vm.Heartbeat(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range doc.Assignments {
		if a.Function == fn && a.Grant != "" {
			return cert, a.Grant
		}
	}
	t.Fatalf("%s's assignments carry no grant for %s: %+v", id, fn, doc)
	return tls.Certificate{}, ""
}
