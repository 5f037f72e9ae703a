package enroll_test

// These tests enroll and renew against enrolltest's stand-in manager, over
// real TLS on loopback; the real manager's endpoints are covered by its own
// tests and, with real processes, by the e2e tests.

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/enroll"
	"github.com/faasnet/faasnet/enroll/enrolltest"
	"github.com/faasnet/faasnet/pki"
)

func checkFor(t *testing.T, c tls.Certificate, ca *x509.Certificate, vm string) {
	t.Helper()
	id, err := pki.NewVerifier(ca, nil).Verify([]*x509.Certificate{c.Leaf}, x509.ExtKeyUsageClientAuth)
	if err != nil || id.VM != vm {
		t.Fatalf("certificate: %v, %v; want one for vm/%s from the CA", id, err, vm)
	}
}

func TestEnrollAndSave(t *testing.T) {
	m := enrolltest.New(t)
	c, err := enroll.Enroll(t.Context(), m.URL, m.CA.Cert, m.JoinToken, "vm-1")
	if err != nil {
		t.Fatal(err)
	}
	checkFor(t, c, m.CA.Cert, "vm-1")
	dir := filepath.Join(t.TempDir(), "pki")
	if err := enroll.Save(dir, "vm-1", c); err != nil {
		t.Fatal(err)
	}
	keyPath, certPath := pki.VMFiles(dir, "vm-1")
	for path, want := range map[string]os.FileMode{keyPath: 0o600, certPath: 0o644} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s: mode %#o, want %#o", path, st.Mode().Perm(), want)
		}
	}
	got, err := enroll.Load(dir, "vm-1", m.CA.Cert, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !got.Leaf.Equal(c.Leaf) {
		t.Error("Load returned another certificate than the one saved")
	}
}

func TestEnrollRefused(t *testing.T) {
	m := enrolltest.New(t)
	other := enrolltest.New(t)
	tests := []struct {
		name  string
		url   string
		ca    *x509.Certificate
		token string
		want  string
	}{
		{"wrong join token", m.URL, m.CA.Cert, other.JoinToken, "join token refused by the manager at " + m.URL + " (401)"},
		{"manager of another CA", other.URL, m.CA.Cert, m.JoinToken, "is not the manager of the given CA"},
		{"plain HTTP", strings.Replace(m.URL, "https", "http", 1), m.CA.Cert, m.JoinToken, "want https://"},
		{"bad VM name", m.URL, m.CA.Cert, m.JoinToken, "vm"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vm := "vm-1"
			if tt.name == "bad VM name" {
				vm = "../x"
			}
			_, err := enroll.Enroll(t.Context(), tt.url, tt.ca, tt.token, vm)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Enroll = %v, want an error containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), tt.token) {
				t.Errorf("the error shows the join token: %v", err)
			}
		})
	}
	if n := m.Enrollments() + other.Enrollments(); n != 0 {
		t.Errorf("%d certificates signed for refused enrollments", n)
	}
}

func TestLoadOrEnroll(t *testing.T) {
	m := enrolltest.New(t)
	other := enrolltest.New(t)
	ctx := t.Context()
	dir := t.TempDir()

	first, err := enroll.LoadOrEnroll(ctx, m.URL, m.CA.Cert, m.JoinToken, "vm-1", dir)
	if err != nil {
		t.Fatal(err)
	}
	checkFor(t, first, m.CA.Cert, "vm-1")
	// A restart reuses the files: no join token needed, nothing signed.
	again, err := enroll.LoadOrEnroll(ctx, m.URL, m.CA.Cert, "", "vm-1", dir)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Leaf.Equal(first.Leaf) || m.Enrollments() != 1 {
		t.Fatalf("restart: serial %s (first %s), %d enrollments; want the saved certificate reused", again.Leaf.SerialNumber, first.Leaf.SerialNumber, m.Enrollments())
	}

	// Files that are not a usable certificate for this VM and CA make it
	// enroll again, and are replaced.
	copyFiles := func(t *testing.T, from, to string) string {
		d := t.TempDir()
		for _, ext := range []string{".key", ".crt"} {
			b, err := os.ReadFile(filepath.Join(dir, from+ext))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(d, to+ext), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return d
	}
	tests := []struct {
		name string
		dir  func(t *testing.T) string
	}{
		{"empty", func(t *testing.T) string { return t.TempDir() }},
		{"another VM's files", func(t *testing.T) string { return copyFiles(t, "vm-1", "vm-2") }},
		{"another CA's certificate", func(t *testing.T) string {
			d := t.TempDir()
			if err := enroll.Save(d, "vm-2", other.Issue(t, "vm-2", time.Now(), time.Hour)); err != nil {
				t.Fatal(err)
			}
			return d
		}},
		{"expired", func(t *testing.T) string {
			d := t.TempDir()
			if err := enroll.Save(d, "vm-2", m.Issue(t, "vm-2", time.Now().Add(-3*time.Hour), time.Hour)); err != nil {
				t.Fatal(err)
			}
			return d
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := tt.dir(t)
			if _, err := enroll.LoadOrEnroll(ctx, m.URL, m.CA.Cert, "", "vm-2", d); !errors.Is(err, enroll.ErrNoJoinToken) {
				t.Fatalf("without a join token: %v, want ErrNoJoinToken", err)
			}
			before := m.Enrollments()
			c, err := enroll.LoadOrEnroll(ctx, m.URL, m.CA.Cert, m.JoinToken, "vm-2", d)
			if err != nil {
				t.Fatal(err)
			}
			checkFor(t, c, m.CA.Cert, "vm-2")
			if m.Enrollments() != before+1 {
				t.Error("it did not enroll")
			}
			saved, err := enroll.Load(d, "vm-2", m.CA.Cert, time.Now())
			if err != nil || !saved.Leaf.Equal(c.Leaf) {
				t.Errorf("the new certificate was not saved: %v", err)
			}
		})
	}
}

// A saved certificate past two thirds of its life is renewed with itself
// (same key, no join token) at start.
func TestLoadOrEnrollRenews(t *testing.T) {
	m := enrolltest.New(t)
	dir := t.TempDir()
	// Issued 10 h ago for 12 h: valid, but due for renewal.
	old := m.Issue(t, "vm-1", time.Now().Add(-10*time.Hour), 12*time.Hour)
	if err := enroll.Save(dir, "vm-1", old); err != nil {
		t.Fatal(err)
	}
	c, err := enroll.LoadOrEnroll(t.Context(), m.URL, m.CA.Cert, "", "vm-1", dir)
	if err != nil {
		t.Fatal(err)
	}
	checkFor(t, c, m.CA.Cert, "vm-1")
	if c.Leaf.Equal(old.Leaf) || m.Renewals() != 1 || m.Enrollments() != 0 {
		t.Fatalf("renewals %d, enrollments %d, same certificate %v; want one renewal", m.Renewals(), m.Enrollments(), c.Leaf.Equal(old.Leaf))
	}
	if !c.Leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(old.Leaf.PublicKey) {
		t.Error("renewal changed the key")
	}
	saved, err := enroll.Load(dir, "vm-1", m.CA.Cert, time.Now())
	if err != nil || !saved.Leaf.Equal(c.Leaf) {
		t.Errorf("the renewed certificate was not saved: %v", err)
	}
}

func TestRenew(t *testing.T) {
	m := enrolltest.New(t)
	cur := m.Issue(t, "vm-1", time.Now(), time.Hour)
	v := pki.NewVerifier(m.CA.Cert, nil)
	as := func(c tls.Certificate) *api.Client {
		return api.NewTLSClient(m.URL, v.ManagerClient(pki.NewKeeper(c)), "")
	}
	c, err := enroll.Renew(t.Context(), as(cur), "vm-1", cur, m.CA.Cert)
	if err != nil {
		t.Fatal(err)
	}
	checkFor(t, c, m.CA.Cert, "vm-1")
	// Another VM's certificate cannot renew vm-1's.
	other := m.Issue(t, "vm-2", time.Now(), time.Hour)
	if _, err := enroll.Renew(t.Context(), as(other), "vm-1", other, m.CA.Cert); err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("renewing vm-1 with vm-2's certificate: %v, want 403", err)
	}
}
