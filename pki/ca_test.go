package pki

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

func newCA(t *testing.T) *CA {
	t.Helper()
	ca, err := Init(t.TempDir(), t0)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestInitCreatesAndKeeps(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	ca1, err := Init(dir, t0)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]os.FileMode{CertFile: 0o644, KeyFile: 0o600} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s mode %#o, want %#o", name, st.Mode().Perm(), want)
		}
	}
	onDisk, err := os.ReadFile(filepath.Join(dir, CertFile))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(onDisk, ca1.CertPEM) {
		t.Error("ca.crt differs from the CA's certificate")
	}
	ca2, err := Init(dir, t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if !ca2.Cert.Equal(ca1.Cert) || !publicEqual(ca2.Signer().Public(), ca1.Signer().Public()) {
		t.Error("restart made a new CA")
	}
	// A certificate issued before the restart verifies against the CA after it.
	csrKey, _ := NewKey()
	csr := mustCSR(t, csrKey, "vm-1")
	cert, _, err := ca1.SignVM(csr, "vm-1", t0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewVerifier(ca2.Cert, nil).verifyAt(cert, t0.Add(time.Hour)); err != nil {
		t.Errorf("certificate from before the restart: %v", err)
	}
}

func (v *Verifier) verifyAt(c *x509.Certificate, now time.Time) (Identity, error) {
	v.Now = func() time.Time { return now }
	return v.Verify([]*x509.Certificate{c}, x509.ExtKeyUsageClientAuth)
}

func TestLoadRefuses(t *testing.T) {
	other := newCA(t)
	tests := []struct {
		name    string
		breakIt func(t *testing.T, dir string)
		want    string
	}{
		{"key readable by group", func(t *testing.T, dir string) {
			os.Chmod(filepath.Join(dir, KeyFile), 0o640)
		}, "mode 0640"},
		{"key readable by others", func(t *testing.T, dir string) {
			os.Chmod(filepath.Join(dir, KeyFile), 0o604)
		}, "mode 0604"},
		{"key of another CA", func(t *testing.T, dir string) {
			if err := WriteKey(filepath.Join(dir, KeyFile), other.Signer()); err != nil {
				t.Fatal(err)
			}
		}, "does not match"},
		{"cert missing", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, CertFile))
		}, "ca.key exists but ca.crt does not"},
		{"key missing", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, KeyFile))
		}, "ca.crt exists but ca.key does not"},
		{"cert garbage", func(t *testing.T, dir string) {
			os.WriteFile(filepath.Join(dir, CertFile), []byte("hello"), 0o644)
		}, "no PEM CERTIFICATE block"},
		{"two certs", func(t *testing.T, dir string) {
			b, _ := os.ReadFile(filepath.Join(dir, CertFile))
			os.WriteFile(filepath.Join(dir, CertFile), append(b, other.CertPEM...), 0o644)
		}, "data after"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if _, err := Init(dir, t0); err != nil {
				t.Fatal(err)
			}
			tt.breakIt(t, dir)
			_, err := Init(dir, t0)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Init = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestLoadRefusesExpiredCA(t *testing.T) {
	dir := t.TempDir()
	if _, err := Init(dir, t0); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir, t0.Add(caTTL+time.Hour)); err == nil || !strings.Contains(err.Error(), "not now") {
		t.Fatalf("Load after expiry = %v, want an error", err)
	}
}

func TestSignVM(t *testing.T) {
	ca := newCA(t)
	key, _ := NewKey()
	cert, certPEM, err := ca.SignVM(mustCSR(t, key, "vm-7"), "vm-7", t0, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := ParseCert(certPEM)
	if err != nil || !parsed.Equal(cert) {
		t.Fatalf("PEM does not hold the certificate: %v", err)
	}
	if got, err := VMFromCert(cert); err != nil || got != "vm-7" {
		t.Errorf("VMFromCert = %q, %v", got, err)
	}
	if !cert.NotAfter.Equal(t0.Add(2 * time.Hour)) {
		t.Errorf("NotAfter = %s, want %s", cert.NotAfter, t0.Add(2*time.Hour))
	}
	if !publicEqual(cert.PublicKey, key.Public()) {
		t.Error("certificate is not for the CSR's key")
	}
	for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth} {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), CurrentTime: t0, KeyUsages: []x509.ExtKeyUsage{u}}); err != nil {
			t.Errorf("usage %v: %v", u, err)
		}
	}
	def, _, err := ca.SignVM(mustCSR(t, key, "vm-7"), "vm-7", t0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !def.NotAfter.Equal(t0.Add(DefaultVMTTL)) {
		t.Errorf("default NotAfter = %s", def.NotAfter)
	}
}

func TestSignVMRefuses(t *testing.T) {
	ca := newCA(t)
	key, _ := NewKey()
	good := mustCSR(t, key, "vm-1")
	tampered := mustCSR(t, key, "vm-1")
	tampered.Signature = append([]byte(nil), tampered.Signature...)
	tampered.Signature[len(tampered.Signature)-3] ^= 1
	tests := []struct {
		name string
		csr  *x509.CertificateRequest
		vm   string
	}{
		{"bad vm name", good, "../x"},
		{"empty vm", good, ""},
		{"tampered signature", tampered, "vm-1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, err := ca.SignVM(tt.csr, tt.vm, t0, 0); err == nil {
				t.Fatal("signed")
			}
		})
	}
}

func TestIssueServer(t *testing.T) {
	ca := newCA(t)
	tests := []struct {
		addr  string
		extra []string
		dns   []string
		ips   []string
	}{
		{"manager.example:8443", []string{"10.0.0.5", "mgr"}, []string{"manager.example", "mgr"}, []string{"10.0.0.5"}},
		{"127.0.0.1:8443", nil, nil, []string{"127.0.0.1"}},
		{":8443", []string{"mgr.local"}, []string{"mgr.local", "localhost"}, []string{"127.0.0.1", "::1"}},
		{"0.0.0.0:8443", nil, []string{"localhost"}, []string{"127.0.0.1", "::1"}},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			c, err := ca.IssueServer(tt.addr, tt.extra, t0, 0)
			if err != nil {
				t.Fatal(err)
			}
			leaf := c.Leaf
			if strings.Join(leaf.DNSNames, ",") != strings.Join(tt.dns, ",") {
				t.Errorf("DNS names %q, want %q", leaf.DNSNames, tt.dns)
			}
			var ips []string
			for _, ip := range leaf.IPAddresses {
				ips = append(ips, ip.String())
			}
			if strings.Join(ips, ",") != strings.Join(tt.ips, ",") {
				t.Errorf("IPs %q, want %q", ips, tt.ips)
			}
			id, err := Identify(leaf)
			if err != nil || !id.Manager {
				t.Errorf("Identify = %v, %v; want the manager", id, err)
			}
			for _, name := range append(tt.dns, tt.ips...) {
				if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: ca.Pool(), CurrentTime: t0}); err != nil {
					t.Errorf("not valid for %s: %v", name, err)
				}
			}
		})
	}
	if _, err := ca.IssueServer("bad_name:1", nil, t0, 0); err == nil {
		t.Error("issued for a host name with '_'")
	}
}

func TestNeedsRenewal(t *testing.T) {
	ca := newCA(t)
	key, _ := NewKey()
	cert, _, err := ca.SignVM(mustCSR(t, key, "vm-1"), "vm-1", t0, 3*time.Hour-backdate)
	if err != nil {
		t.Fatal(err)
	}
	// Lifetime is 3h counted from NotBefore (t0 - backdate): renew from NotBefore+2h.
	renewAt := cert.NotBefore.Add(2 * time.Hour)
	for _, tt := range []struct {
		now  time.Time
		want bool
	}{
		{cert.NotBefore, false},
		{renewAt.Add(-time.Second), false},
		{renewAt, true},
		{cert.NotAfter.Add(time.Hour), true},
	} {
		if got := NeedsRenewal(cert, tt.now); got != tt.want {
			t.Errorf("NeedsRenewal at %s = %v, want %v", tt.now, got, tt.want)
		}
	}
}

func TestLoadKeyPair(t *testing.T) {
	ca := newCA(t)
	dir := t.TempDir()
	key, _ := NewKey()
	_, certPEM, err := ca.SignVM(mustCSR(t, key, "vm-1"), "vm-1", t0, 0)
	if err != nil {
		t.Fatal(err)
	}
	keyPath, certPath := VMFiles(dir, "vm-1")
	if err := WriteKey(keyPath, key); err != nil {
		t.Fatal(err)
	}
	if err := WriteFileAtomic(certPath, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := LoadKeyPair(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if vm, err := VMFromCert(c.Leaf); err != nil || vm != "vm-1" {
		t.Errorf("loaded %q, %v", vm, err)
	}
	other, _ := NewKey()
	if err := WriteKey(keyPath, other); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKeyPair(certPath, keyPath); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("mismatched pair: %v", err)
	}
	os.Chmod(keyPath, 0o644)
	if _, err := LoadKeyPair(certPath, keyPath); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable key: %v", err)
	}
}

func TestIdentify(t *testing.T) {
	ca := newCA(t)
	key, _ := NewKey()
	sign := func(mod func(*x509.Certificate)) *x509.Certificate {
		tmpl := &x509.Certificate{
			Subject:     pkixName("vm-1"),
			URIs:        []*url.URL{VMURI("vm-1")},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		mod(tmpl)
		c, _, err := ca.issue(tmpl, key.Public(), t0, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	tests := []struct {
		name string
		mod  func(*x509.Certificate)
		want string // VM id, or "" for an error
	}{
		{"good", func(*x509.Certificate) {}, "vm-1"},
		{"CN differs", func(c *x509.Certificate) { c.Subject = pkixName("vm-2") }, ""},
		{"no URI", func(c *x509.Certificate) { c.URIs = nil }, ""},
		{"two URIs", func(c *x509.Certificate) { c.URIs = append(c.URIs, VMURI("vm-2")) }, ""},
		{"other scheme", func(c *x509.Certificate) { c.URIs[0].Scheme = "https" }, ""},
		{"bad name", func(c *x509.Certificate) { c.URIs[0].Path = "/a/b"; c.Subject = pkixName("a/b") }, ""},
		{"query", func(c *x509.Certificate) { c.URIs[0].RawQuery = "x=1" }, ""},
		{"extra DNS name", func(c *x509.Certificate) { c.DNSNames = []string{"vm-1"} }, ""},
		{"CA", func(c *x509.Certificate) { c.IsCA = true }, ""},
		{"manager", func(c *x509.Certificate) { c.URIs = []*url.URL{managerURI()} }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := VMFromCert(sign(tt.mod))
			if tt.want == "" {
				if err == nil || !errors.Is(err, ErrIdentity) {
					t.Fatalf("VMFromCert = %q, %v; want ErrIdentity", got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("VMFromCert = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func pkixName(cn string) pkix.Name { return pkix.Name{CommonName: cn} }

func mustCSR(t *testing.T, key crypto.Signer, vm string) *x509.CertificateRequest {
	t.Helper()
	p, err := NewCSR(key, vm)
	if err != nil {
		t.Fatal(err)
	}
	der, err := onePEM(p, "CERTIFICATE REQUEST")
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}
