package main

import (
	"io"
	"log"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/faasnet/faasnet/imagegen"
	"github.com/faasnet/faasnet/internal/testenv"
	"github.com/google/go-containerregistry/pkg/registry"
)

// containerdConfig runs `faasnet containerd config args...` as a subprocess
// and returns the paths it printed.
func containerdConfig(t *testing.T, args ...string) ([]string, error) {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"containerd", "config"}, args...)...)
	cmd.Env = append(os.Environ(), "FAASNET_RUN_MAIN=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, &exec.ExitError{ProcessState: cmd.ProcessState, Stderr: []byte(stderr.String())}
	}
	return strings.Fields(string(out)), nil
}

// TestContainerdConfigPull has a real containerd pull through the hosts
// directory the verb writes. The worker's local runtime endpoint is stood
// in for by a counting proxy in front of a registry: it answers the same
// read-only distribution API (e2e's TestTree pulls with containerd through
// a real worker); what is under test here is that containerd reads the
// files as the verb means them, the worker first.
func TestContainerdConfigPull(t *testing.T) {
	ctrd := testenv.StartContainerd(t)
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	origin := strings.TrimPrefix(srv.URL, "http://")
	worker, counter := testenv.CountingProxy(t, origin)

	for i, tc := range []struct {
		name, registry, host string
	}{
		// Only the worker can serve it: the registry's name does not resolve.
		{"unresolvable registry", "http://registry.faasnet.invalid", "registry.faasnet.invalid"},
		// The registry answers too; the worker must still be asked first.
		{"reachable registry", "http://" + origin, origin},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, err := imagegen.Image(imagegen.Spec{TotalSize: 1 << 20, Layers: 2, Seed: int64(40 + i)})
			if err != nil {
				t.Fatal(err)
			}
			if err := imagegen.Push(t.Context(), img, origin+"/fn/app:v1"); err != nil {
				t.Fatal(err)
			}
			m, err := img.Manifest()
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			paths, err := containerdConfig(t, "--dir", dir, "--worker", worker, "--registry", tc.registry, "--snapshotter", "native")
			if err != nil {
				t.Fatalf("faasnet containerd config: %v: %s", err, err.(*exec.ExitError).Stderr)
			}
			want := []string{filepath.Join(dir, "certs.d", tc.host, "hosts.toml"), filepath.Join(dir, "conf.d", "faasnet.toml")}
			if !slices.Equal(paths, want) {
				t.Fatalf("wrote %q, want %q", paths, want)
			}
			counter.Reset()
			if _, err := ctrd.Ctr("images", "pull", "--hosts-dir", filepath.Join(dir, "certs.d"),
				"--snapshotter", testenv.Snapshotter, tc.host+"/fn/app:v1"); err != nil {
				t.Fatal(err)
			}
			got := counter.Blobs()
			for _, l := range append(m.Layers, m.Config) {
				if bc := got[l.Digest.String()]; bc.Gets != 1 || bc.Bytes != l.Size {
					t.Errorf("worker served blob %s: %+v, want one GET of %d bytes", l.Digest, bc, l.Size)
				}
			}
		})
	}

	t.Run("worker down", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		down := ln.Addr().String()
		ln.Close()
		dir := t.TempDir()
		if _, err := containerdConfig(t, "--dir", dir, "--worker", down, "--registry", "http://registry.faasnet.invalid", "--snapshotter", "native"); err != nil {
			t.Fatal(err)
		}
		if out, err := ctrd.Ctr("images", "pull", "--hosts-dir", filepath.Join(dir, "certs.d"),
			"--snapshotter", testenv.Snapshotter, "registry.faasnet.invalid/fn/other:v1"); err == nil {
			t.Errorf("pulled with the worker down and the registry unresolvable:\n%s", out)
		}
	})
}

func TestContainerdConfigRefuses(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{"--dir", dir}, // no registry
		{"--dir", "relative", "--registry", "docker.io"},                                    // containerd's own working directory is not ours
		{"--dir", dir, "--registry", "../../etc"},                                           // out of certs.d
		{"--dir", dir, "--registry", "docker.io", "--worker", "unix:/run/faasnet/oci.sock"}, // containerd dials no unix mirror
	} {
		if paths, err := containerdConfig(t, args...); err == nil {
			t.Errorf("containerd config %q wrote %q, want an error", args, paths)
		}
	}
	if entries, err := os.ReadDir(dir); err != nil || len(entries) != 0 {
		t.Errorf("refused runs left %v in the directory (%v)", entries, err)
	}
}
