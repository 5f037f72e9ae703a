package main

// These run the faasnet binary against enrolltest's stand-in manager (its
// trust endpoints); the real manager process is covered by the e2e tests.

import (
	"context"
	"crypto/tls"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/faasnet/faasnet/enroll"
	"github.com/faasnet/faasnet/enroll/enrolltest"
	"github.com/faasnet/faasnet/pki"
)

// runFaasnet runs "faasnet args..." to its end and returns its output.
func runFaasnet(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), "FAASNET_RUN_MAIN=1")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func TestVMEnroll(t *testing.T) {
	m := enrolltest.New(t)
	out := filepath.Join(t.TempDir(), "pki")
	got, err := runFaasnet(t, "vm", "enroll", "--id", "vm-1", "--manager", m.URL, "--ca", m.CAFile, "--join-token", m.JoinTokenFile, "--out", out)
	if err != nil {
		t.Fatalf("vm enroll: %v\n%s", err, got)
	}
	keyPath, certPath := pki.VMFiles(out, "vm-1")
	for path, want := range map[string]os.FileMode{keyPath: 0o600, certPath: 0o644} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s: mode %#o, want %#o", path, st.Mode().Perm(), want)
		}
	}
	if _, err := enroll.Load(out, "vm-1", m.CA.Cert, time.Now()); err != nil {
		t.Fatalf("the written certificate: %v", err)
	}

	other := enrolltest.New(t)
	got, err = runFaasnet(t, "vm", "enroll", "--id", "vm-2", "--manager", m.URL, "--ca", m.CAFile, "--join-token", other.JoinTokenFile, "--out", out)
	if err == nil || !strings.Contains(got, "join token refused by the manager") {
		t.Fatalf("vm enroll with another cluster's join token: %v\n%s", err, got)
	}
	if strings.Contains(got, other.JoinToken) {
		t.Errorf("the error shows the join token:\n%s", got)
	}
}

// servedVM is the VM the listener at addr proves to be.
func servedVM(t *testing.T, m *enrolltest.Manager, addr, vm string) string {
	t.Helper()
	v := pki.NewVerifier(m.CA.Cert, nil)
	conn, err := tls.Dial("tcp", addr, v.PeerClient(pki.NewKeeper(m.Issue(t, "probe", time.Now(), time.Hour)), vm))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	id, err := pki.VMFromCert(conn.ConnectionState().PeerCertificates[0])
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// A worker enrolls with the join token at its first start, serves its peer
// listener over TLS with that certificate, and reuses it after a restart
// without the join token.
func TestWorkerEnrollsAndReusesItsCertificate(t *testing.T) {
	m := enrolltest.New(t)
	cache := t.TempDir()
	args := []string{"worker", "--id", "vm-1", "--listen", "127.0.0.1:0", "--manager", m.URL, "--ca", m.CAFile,
		"--cache", cache, "--oci-listen", "none"}
	p, addr := startFaasnet(t, append(args, "--join-token", m.JoinTokenFile)...)
	if got := servedVM(t, m, addr, "vm-1"); got != "vm-1" {
		t.Fatalf("the listener is %s", got)
	}
	if _, err := enroll.Load(filepath.Clean(cache)+".pki", "vm-1", m.CA.Cert, time.Now()); err != nil {
		t.Fatalf("the certificate was not kept in CACHE.pki: %v", err)
	}
	p.cmd.Process.Kill()
	p.cmd.Wait()

	_, addr = startFaasnet(t, args...)
	if got := servedVM(t, m, addr, "vm-1"); got != "vm-1" {
		t.Fatalf("after the restart the listener is %s", got)
	}
	if n := m.Enrollments(); n != 1 {
		t.Errorf("%d enrollments, want 1: the restart enrolled again", n)
	}
}

func TestWorkerNeedsCAAndJoinToken(t *testing.T) {
	m := enrolltest.New(t)
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no CA", []string{"--join-token", m.JoinTokenFile}, "--ca FILE is required"},
		{"no join token, no certificate", []string{"--ca", m.CAFile}, "--join-token"},
		{"plain HTTP manager", []string{"--ca", m.CAFile, "--join-token", m.JoinTokenFile, "--manager", strings.Replace(m.URL, "https", "http", 1)}, "want https://"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := append([]string{"worker", "--id", "vm-1", "--listen", "127.0.0.1:0", "--manager", m.URL,
				"--cache", t.TempDir(), "--oci-listen", "none"}, tt.args...)
			got, err := runFaasnet(t, args...)
			if err == nil || !strings.Contains(got, tt.want) {
				t.Fatalf("worker %v: %v, want a failure naming %q:\n%s", tt.args, err, tt.want, got)
			}
		})
	}
}
