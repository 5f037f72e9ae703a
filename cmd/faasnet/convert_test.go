package main

import (
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/faasnet/faasnet/imagegen"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestConvertCommand runs `faasnet convert SRC DST` as a subprocess against
// an in-process registry, on a small generated image: e2e converts the
// Python image with the cached conversion instead, so the command's flags,
// output and result are checked here.
func TestConvertCommand(t *testing.T) {
	srv := httptest.NewServer(registry.New())
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	img, err := imagegen.Image(imagegen.Spec{TotalSize: 2 << 20, Layers: 2, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	src, dst := host+"/fn/small:plain", host+"/fn/small:estargz"
	if err := imagegen.Push(t.Context(), img, src); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "convert", "--chunk-size", "64KiB", src, dst)
	cmd.Env = append(os.Environ(), "FAASNET_RUN_MAIN=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("faasnet convert: %v\n%s", err, stderr.String())
	}
	for _, want := range []string{dst + "@sha256:", "layers: 2 converted, 0 kept", "size before:", "size after:"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(stderr.String(), "layer 2/2") {
		t.Errorf("no progress per layer:\n%s", stderr.String())
	}
	ref, err := name.ParseReference(dst, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	converted, err := remote.Image(ref)
	if err != nil {
		t.Fatal(err)
	}
	m, err := converted.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range m.Layers {
		if l.Annotations["containerd.io/snapshot/stargz/toc.digest"] == "" {
			t.Errorf("layer %d has no eStargz table of contents: %v", i, l.Annotations)
		}
	}
	bad := exec.Command(os.Args[0], "convert", "--chunk-size", "0", src, dst)
	bad.Env = cmd.Env
	if out, err := bad.CombinedOutput(); err == nil || !strings.Contains(string(out), "--chunk-size") {
		t.Errorf("--chunk-size 0: %v\n%s", err, out)
	}
}
