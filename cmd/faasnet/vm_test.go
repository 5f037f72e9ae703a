package main

// These run the faasnet binary: a real manager process and workers or
// "vm enroll" against it.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/faasnet/faasnet/enroll"
	"github.com/faasnet/faasnet/pki"
	"github.com/faasnet/faasnet/token"
)

// testManager is a manager process and what it wrote to its data
// directory for VMs: the CA and the join token.
type testManager struct {
	URL, Dir, CAFile, JoinTokenFile, AdminTokenFile string
	CA                                              *x509.Certificate
	proc                                            *proc
}

func startManager(t *testing.T, extra ...string) *testManager {
	t.Helper()
	dir := t.TempDir()
	p, addr := startFaasnet(t, append([]string{"manager", "--listen", "127.0.0.1:0", "--data", dir}, extra...)...)
	m := &testManager{URL: "https://" + addr, Dir: dir, CAFile: filepath.Join(dir, pki.CertFile),
		JoinTokenFile: filepath.Join(dir, token.JoinFile), AdminTokenFile: filepath.Join(dir, token.AdminFile), proc: p}
	ca, err := readCAFile(m.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	m.CA = ca
	return m
}

// joinToken reads the manager's join token.
func (m *testManager) joinToken(t *testing.T) string {
	t.Helper()
	tok, err := token.ReadFile(m.JoinTokenFile)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// enroll gets vm a certificate from the manager, as a worker does.
func (m *testManager) enroll(t *testing.T, vm string) tls.Certificate {
	t.Helper()
	c, err := enroll.Enroll(t.Context(), m.URL, m.CA, m.joinToken(t), vm)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

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
	m := startManager(t)
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
	if _, err := enroll.Load(out, "vm-1", m.CA, time.Now()); err != nil {
		t.Fatalf("the written certificate: %v", err)
	}

	// A token of the right form that this manager never issued: another
	// cluster's, say.
	other, _, err := token.New(token.Join, time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	otherFile := filepath.Join(t.TempDir(), "join.token")
	if err := token.WriteFile(otherFile, other); err != nil {
		t.Fatal(err)
	}
	got, err = runFaasnet(t, "vm", "enroll", "--id", "vm-2", "--manager", m.URL, "--ca", m.CAFile, "--join-token", otherFile, "--out", out)
	if err == nil || !strings.Contains(got, "join token refused by the manager") {
		t.Fatalf("vm enroll with another cluster's join token: %v\n%s", err, got)
	}
	if strings.Contains(got, other) {
		t.Errorf("the error shows the join token:\n%s", got)
	}
}

// served is the certificate the listener at addr, expected to be vm,
// presents to a probe holding cert.
func served(t *testing.T, m *testManager, cert tls.Certificate, addr, vm string) *x509.Certificate {
	t.Helper()
	v := pki.NewVerifier(m.CA, nil)
	conn, err := tls.Dial("tcp", addr, v.PeerClient(pki.NewKeeper(cert), vm))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0]
}

// A worker enrolls with the join token at its first start, serves its peer
// listener over TLS with that certificate, and reuses it after a restart
// without the join token.
func TestWorkerEnrollsAndReusesItsCertificate(t *testing.T) {
	m := startManager(t)
	probe := m.enroll(t, "probe")
	cache := t.TempDir()
	args := []string{"worker", "--id", "vm-1", "--listen", "127.0.0.1:0", "--manager", m.URL, "--ca", m.CAFile,
		"--cache", cache, "--oci-listen", "none"}
	p, addr := startFaasnet(t, append(args, "--join-token", m.JoinTokenFile)...)
	first := served(t, m, probe, addr, "vm-1")
	if _, err := enroll.Load(filepath.Clean(cache)+".pki", "vm-1", m.CA, time.Now()); err != nil {
		t.Fatalf("the certificate was not kept in CACHE.pki: %v", err)
	}
	p.cmd.Process.Kill()
	p.cmd.Wait()

	_, addr = startFaasnet(t, args...)
	if again := served(t, m, probe, addr, "vm-1"); !again.Equal(first) {
		t.Errorf("after the restart the listener presents certificate %s, before it %s: the restart enrolled again",
			again.SerialNumber.Text(16), first.SerialNumber.Text(16))
	}
}

func TestWorkerNeedsCAAndJoinToken(t *testing.T) {
	m := startManager(t)
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

// A worker given several managers enrolls and registers with the first one
// it can reach.
func TestWorkerWithSeveralManagers(t *testing.T) {
	m := startManager(t)
	dead := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return "https://" + ln.Addr().String()
	}()
	startFaasnet(t, "worker", "--id", "vm-1", "--listen", "127.0.0.1:0", "--manager", dead+","+m.URL,
		"--ca", m.CAFile, "--join-token", m.JoinTokenFile, "--cache", t.TempDir(), "--oci-listen", "none", "--heartbeat", "100ms")
	admin, err := operatorClient(m.URL, m.CAFile, m.AdminTokenFile)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		vms, err := admin.VMs(t.Context())
		if err == nil && len(vms) == 1 && vms[0].VM == "vm-1" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the worker never registered through the second manager: %v %v", vms, err)
		}
		time.Sleep(50 * time.Millisecond) // polling another process's state, with a deadline
	}
}
