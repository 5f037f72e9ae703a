package container

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/convert"
	"github.com/faasnet/faasnet/internal/testenv"
	"github.com/faasnet/faasnet/lazy"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// image is the test function's image (testenv.ServerImage) in both forms
// a Host runs: plain, to unpack, and converted to eStargz, to mount.
type image struct {
	config v1.Config
	plain  v1.Image
	layers []lazy.Layer
}

var (
	imageOnce sync.Once
	shared    image
	sharedErr error
)

// newImage returns the test image, converted once per test binary: the
// conversion takes most of a test's time under -race.
func newImage(t *testing.T) image {
	t.Helper()
	imageOnce.Do(func() {
		sharedErr = errors.New("converting the test image failed in an earlier test")
		shared = convertImage(t)
		sharedErr = nil
	})
	if sharedErr != nil {
		t.Fatal(sharedErr)
	}
	return shared
}

// convertImage converts the server image through an in-process registry and
// holds the eStargz layers in memory, so that lazy reads need no network.
func convertImage(t *testing.T) image {
	t.Helper()
	ctx := t.Context()
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	plain := testenv.ServerImage(t, 64<<10)
	src, dst := host+"/fn:plain", host+"/fn:lazy"
	ref, err := name.ParseReference(src, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, plain); err != nil {
		t.Fatal(err)
	}
	// Level 1: the test needs an eStargz image, not a small one.
	if _, err := convert.Convert(ctx, src, dst, convert.WithCompressionLevel(1)); err != nil {
		t.Fatal(err)
	}
	ref, err = name.ParseReference(dst, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref, remote.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	blobs, _ := testenv.ImageBlobs(t, img)
	var layers []lazy.Layer
	for _, d := range m.Layers {
		ll, err := lazy.LayerFromDescriptor(d, lazy.BytesReader(blobs[d.Digest.String()]))
		if err != nil {
			t.Fatal(err)
		}
		layers = append(layers, ll)
	}
	if len(layers) == 0 {
		t.Fatal("the converted image has no layers")
	}
	cf, err := plain.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	return image{config: cf.Config, plain: plain, layers: layers}
}

func newHost(t *testing.T, dir string) *Host {
	// The VM part keeps container ids apart from those of test binaries
	// that run at the same time (they share cgroups).
	return New(Config{Dir: dir, VM: fmt.Sprintf("t%d", os.Getpid()), Logger: testLogger()})
}

func testLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// left lists what is left of function fn below a Host's directory.
func left(t *testing.T, dir, fn string) []string {
	t.Helper()
	var out []string
	ids, err := exec.Command("runc", "--root", filepath.Join(dir, "runc"), "list", "-q").Output()
	if err != nil {
		t.Fatalf("runc list: %v", err)
	}
	if s := strings.TrimSpace(string(ids)); s != "" {
		out = append(out, "containers "+s)
	}
	if bundles, _ := os.ReadDir(filepath.Join(dir, "bundles")); len(bundles) > 0 {
		out = append(out, fmt.Sprintf("%d bundles", len(bundles)))
	}
	if m, _ := lazy.Mounted(filepath.Join(dir, "mnt", fn)); m {
		out = append(out, "a mount")
	}
	if _, err := os.Stat(filepath.Join(dir, "rootfs", fn)); err == nil {
		out = append(out, "an unpacked rootfs")
	}
	return out
}

func get(t *testing.T, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %s", url, resp.Status, b)
	}
	return string(b)
}

// with returns f with its root filesystem from img, lazy or plain.
func with(f Function, img image, lazyRoot bool) Function {
	f.Config = img.config
	if lazyRoot {
		f.Layers = img.layers
	} else {
		f.Image = img.plain
	}
	return f
}

// TestRun starts the function over each kind of root filesystem, checks
// that it answers on its port from the expected root, and that Stop leaves
// nothing behind.
func TestRun(t *testing.T) {
	testenv.NeedContainers(t)
	img := newImage(t)
	for _, tc := range []struct {
		name       string
		lazy       bool
		wantPhases []string
		root       string // where the root filesystem is, below the Host's directory
	}{
		{"unpacked", false, []string{"unpacked", "started"}, "rootfs"},
		{"lazy", true, []string{"mount", "started"}, "mnt"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			h := newHost(t, dir)
			var phases []string
			f := with(Function{Name: "fn", ReadinessPath: "healthz", Limits: api.Limits{Memory: 64 << 20},
				Phase: func(p string) { phases = append(phases, p) }}, img, tc.lazy)
			r, err := h.Run(t.Context(), f)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(phases, tc.wantPhases) {
				t.Errorf("phases %v, want %v", phases, tc.wantPhases)
			}
			if got := get(t, fmt.Sprintf("http://127.0.0.1:%d/healthz", r.Port())); got != "ok\n" {
				t.Errorf("healthz answered %q", got)
			}
			// The server in the container is the one in the image's root.
			served, err := os.ReadFile(filepath.Join(dir, tc.root, "fn", "app/server"))
			if err != nil || len(served) == 0 {
				t.Errorf("no /app/server under %s: %v", tc.root, err)
			}
			if err := r.Stop(t.Context()); err != nil {
				t.Fatal(err)
			}
			if l := left(t, dir, "fn"); len(l) > 0 {
				t.Errorf("after Stop: %v", l)
			}
		})
	}
}

// TestRunFailureLeavesNothing starts functions that cannot start or never
// answer: Run fails and removes what it built.
func TestRunFailureLeavesNothing(t *testing.T) {
	testenv.NeedContainers(t)
	img := newImage(t)
	for _, tc := range []struct {
		name string
		lazy bool
		f    Function
		want string
	}{
		{"no such command, unpacked", false, Function{Command: []string{"/no/such/server"}, ReadinessPath: "/healthz"}, "/no/such/server"},
		{"no such command, lazy", true, Function{Command: []string{"/no/such/server"}, ReadinessPath: "/healthz"}, "/no/such/server"},
		{"exits before ready", true, Function{Command: []string{"/app/server", "-fail", "bad config"}, ReadinessPath: "/healthz"}, "bad config"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			h := newHost(t, dir)
			tc.f.Name = "fn"
			_, err := h.Run(t.Context(), with(tc.f, img, tc.lazy))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run: %v, want an error naming %q", err, tc.want)
			}
			if l := left(t, dir, "fn"); len(l) > 0 {
				t.Errorf("after a failed Run: %v", l)
			}
		})
	}
}

// TestRunRefusesBadNames: the name makes paths below the Host's directory.
func TestRunRefusesBadNames(t *testing.T) {
	dir := t.TempDir()
	h := newHost(t, filepath.Join(dir, "run"))
	for _, n := range []string{"", "..", "../escape", "a/b", ".hidden"} {
		if _, err := h.Run(t.Context(), Function{Name: n, Image: nil}); err == nil {
			t.Errorf("Run accepted the name %q", n)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) > 0 {
		t.Errorf("Run with bad names created %v", entries)
	}
}

// TestCleanup leaves a lazy and an unpacked container running, as a worker
// that crashed would, and cleans up with a new Host on the same directory.
func TestCleanup(t *testing.T) {
	testenv.NeedContainers(t)
	img := newImage(t)
	dir := t.TempDir()
	crashed := newHost(t, dir)
	for _, fn := range []struct {
		name string
		lazy bool
	}{{"lazy", true}, {"plain", false}} {
		r, err := crashed.Run(t.Context(), with(Function{Name: fn.name, ReadinessPath: "/healthz"}, img, fn.lazy))
		if err != nil {
			t.Fatal(err)
		}
		// The crashed worker's process is this one: end its FUSE server
		// once the test is over. The steps fail, as Cleanup removed them.
		t.Cleanup(func() { r.Stop(context.Background()) })
	}
	if l := left(t, dir, "lazy"); len(l) == 0 {
		t.Fatal("nothing to clean up")
	}

	h := newHost(t, dir)
	if err := h.Cleanup(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, fn := range []string{"lazy", "plain"} {
		if l := left(t, dir, fn); len(l) > 0 {
			t.Errorf("%s after Cleanup: %v", fn, l)
		}
	}
	// The names are free again.
	r, err := h.Run(t.Context(), with(Function{Name: "lazy", ReadinessPath: "/healthz"}, img, true))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Stop(t.Context()); err != nil {
		t.Fatal(err)
	}
}
