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
	"strconv"
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
// files as the verb means them: the worker first, and with --no-fallback
// the worker only. The registry is reached through a counting proxy of
// its own, so that every request that went around the worker is seen.
func TestContainerdConfigPull(t *testing.T) {
	ctrd := testenv.StartContainerd(t)
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	origin := strings.TrimPrefix(srv.URL, "http://")
	worker, atWorker := testenv.CountingProxy(t, origin)
	reg, atRegistry := testenv.CountingProxy(t, origin)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := ln.Addr().String() // a worker that is not running
	ln.Close()

	for i, tc := range []struct {
		name     string
		registry string // --registry
		host     string // the registry name images carry
		worker   string
		args     []string
		// Where the blobs come from; "" for a pull that must fail.
		want string
	}{
		// Only the worker can serve it: the registry's name does not resolve.
		{"unresolvable registry", "http://registry.faasnet.invalid", "registry.faasnet.invalid", worker, nil, "worker"},
		{"reachable registry", "http://" + reg, reg, worker, nil, "worker"},
		{"no fallback", "http://" + reg, reg, worker, []string{"--no-fallback"}, "worker"},
		// containerd's own fallback, which the help describes.
		{"worker down", "http://" + reg, reg, down, nil, "registry"},
		{"worker down, no fallback", "http://" + reg, reg, down, []string{"--no-fallback"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img, err := imagegen.Image(imagegen.Spec{TotalSize: 1 << 20, Layers: 2, Seed: int64(40 + i)})
			if err != nil {
				t.Fatal(err)
			}
			repo := "fn/app" + strconv.Itoa(i) + ":v1"
			if err := imagegen.Push(t.Context(), img, origin+"/"+repo); err != nil {
				t.Fatal(err)
			}
			m, err := img.Manifest()
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			args := append([]string{"--dir", dir, "--worker", tc.worker, "--registry", tc.registry, "--snapshotter", "native"}, tc.args...)
			paths, err := containerdConfig(t, args...)
			if err != nil {
				t.Fatalf("faasnet containerd config: %v: %s", err, err.(*exec.ExitError).Stderr)
			}
			want := []string{filepath.Join(dir, "certs.d", tc.host, "hosts.toml"), filepath.Join(dir, "conf.d", "faasnet.toml")}
			if !slices.Equal(paths, want) {
				t.Fatalf("wrote %q, want %q", paths, want)
			}
			atWorker.Reset()
			atRegistry.Reset()
			out, err := ctrd.Ctr("images", "pull", "--hosts-dir", filepath.Join(dir, "certs.d"),
				"--snapshotter", testenv.Snapshotter, tc.host+"/"+repo)
			if tc.want == "" {
				if err == nil {
					t.Errorf("pulled with the worker down and --no-fallback:\n%s", out)
				}
				if n := atRegistry.Requests(); n != 0 {
					t.Errorf("with --no-fallback the registry got %d requests, want none", n)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			from, other := atWorker, atRegistry
			if tc.want == "registry" {
				from, other = atRegistry, atWorker
			}
			got := from.Blobs()
			for _, l := range append(m.Layers, m.Config) {
				if bc := got[l.Digest.String()]; bc.Gets != 1 || bc.Bytes != l.Size {
					t.Errorf("the %s served blob %s: %+v, want one GET of %d bytes", tc.want, l.Digest, bc, l.Size)
				}
			}
			if tc.want == "worker" && other.Requests() != 0 {
				t.Errorf("the registry got %d requests, the worker served the pull", other.Requests())
			}
		})
	}
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
