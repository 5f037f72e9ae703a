package main

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/faasnet/faasnet/pki"
	"github.com/faasnet/faasnet/runc"
	"github.com/faasnet/faasnet/worker"
)

// TestWorkerRefusesPublicOCIListen starts workers whose OCI endpoint would
// listen beyond loopback without --oci-listen-public: each exits at once
// with an error naming both flags.
func TestWorkerRefusesPublicOCIListen(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0"} {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		cmd := exec.CommandContext(ctx, os.Args[0], "worker", "--id", "vm", "--listen", "127.0.0.1:0",
			"--manager", "http://127.0.0.1:1", "--cache", t.TempDir(), "--oci-listen", addr)
		cmd.Env = append(os.Environ(), "FAASNET_RUN_MAIN=1")
		out, err := cmd.CombinedOutput()
		timedOut := ctx.Err() != nil
		cancel()
		if err == nil || timedOut {
			t.Errorf("worker --oci-listen %s: %v (timed out: %v), want it to fail at start:\n%s", addr, err, timedOut, out)
			continue
		}
		if !strings.Contains(string(out), "--oci-listen-public") || !strings.Contains(string(out), "--oci-listen "+addr) {
			t.Errorf("worker --oci-listen %s failed without naming --oci-listen-public:\n%s", addr, out)
		}
	}
}

// TestWorkerOCIListenUnixSocket runs a worker whose OCI endpoint is a unix
// socket: the socket answers the distribution API's base, the peer
// listener does not.
func TestWorkerOCIListenUnixSocket(t *testing.T) {
	dir, err := os.MkdirTemp("", "oci") // short: socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "oci.sock")
	m := startManager(t)
	_, addr := startFaasnet(t, "worker", "--id", "vm", "--listen", "127.0.0.1:0", "--manager", m.URL,
		"--ca", m.CAFile, "--join-token", m.JoinTokenFile, "--cache", t.TempDir(), "--oci-listen", "unix:"+sock)
	// The peer listener speaks mutual TLS to the cluster's VMs only.
	peer := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: pki.NewVerifier(m.CA, nil).PeerClient(pki.NewKeeper(m.enroll(t, "probe")), "vm"),
	}}
	overSocket := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", sock)
		},
	}}
	tests := []struct {
		client *http.Client
		url    string
		want   int
	}{
		{overSocket, "http://oci.invalid/v2/", http.StatusOK},
		{peer, "https://" + addr + "/v2/", http.StatusNotFound},
		{peer, "https://" + addr + "/healthz", http.StatusOK},
	}
	for _, tt := range tests {
		resp, err := tt.client.Get(tt.url)
		if err != nil {
			t.Errorf("GET %s: %v", tt.url, err)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("GET %s: status %d, want %d", tt.url, resp.StatusCode, tt.want)
		}
	}
}

// TestWorkerRefusesManifestLimitOverTheParser: a manifest is parsed in
// memory and the parser takes 4 MiB at most, so a larger
// --max-manifest-size is an error at start.
func TestWorkerRefusesManifestLimitOverTheParser(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "worker", "--id", "vm", "--listen", "127.0.0.1:0",
		"--manager", "http://127.0.0.1:1", "--cache", t.TempDir(), "--max-manifest-size", "5MiB")
	cmd.Env = append(os.Environ(), "FAASNET_RUN_MAIN=1")
	out, err := cmd.CombinedOutput()
	if err == nil || ctx.Err() != nil || !strings.Contains(string(out), "--max-manifest-size 5MiB: at most 4MiB") {
		t.Fatalf("worker --max-manifest-size 5MiB: %v, want it to fail at start naming the ceiling:\n%s", err, out)
	}
}

func TestSandboxFlags(t *testing.T) {
	def := sandboxFlags{on: true, cidr: "auto", egress: "allow"}
	for _, tc := range []struct {
		name    string
		f       func(*sandboxFlags)
		want    worker.Sandbox
		wantErr string
	}{
		{"defaults", func(*sandboxFlags) {}, worker.Sandbox{}, ""},
		{"off", func(f *sandboxFlags) { f.on = false }, worker.Sandbox{Off: true}, ""},
		{"cidr", func(f *sandboxFlags) { f.cidr = "10.77.0.0/24" }, worker.Sandbox{CIDR: netip.MustParsePrefix("10.77.0.0/24")}, ""},
		{"cidr host bits", func(f *sandboxFlags) { f.cidr = "10.77.0.9/24" }, worker.Sandbox{CIDR: netip.MustParsePrefix("10.77.0.0/24")}, ""},
		{"cidr v6", func(f *sandboxFlags) { f.cidr = "fd00::/64" }, worker.Sandbox{}, "--container-cidr"},
		{"cidr junk", func(f *sandboxFlags) { f.cidr = "ten" }, worker.Sandbox{}, "--container-cidr"},
		{"deny", func(f *sandboxFlags) { f.egress = "deny" }, worker.Sandbox{NoEgress: true}, ""},
		{"egress junk", func(f *sandboxFlags) { f.egress = "some" }, worker.Sandbox{}, "--container-egress"},
		{"uids", func(f *sandboxFlags) { f.uids = "200000:65536" }, worker.Sandbox{Users: runc.IDRange{Host: 200000, Size: 65536}}, ""},
		{"uids root", func(f *sandboxFlags) { f.uids = "0:65536" }, worker.Sandbox{}, "--container-uids"},
		{"uids no count", func(f *sandboxFlags) { f.uids = "200000" }, worker.Sandbox{}, "--container-uids"},
		{"uids overflow", func(f *sandboxFlags) { f.uids = "4294967000:65536" }, worker.Sandbox{}, "--container-uids"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := def
			tc.f(&f)
			got, err := f.parse()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parse = %+v, %v; want an error naming %s", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("parse = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}
