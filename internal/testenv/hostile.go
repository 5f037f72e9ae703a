package testenv

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	goruntime "runtime"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// hostileBin is internal/hostile built statically, once per test binary.
var hostileBin = sync.OnceValues(func() ([]byte, error) {
	root, err := moduleRoot()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "faasnet-hostile-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "hostile")
	cmd := exec.Command("go", "build", "-o", bin, "./internal/hostile")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build internal/hostile: %v\n%s", err, out)
	}
	return os.ReadFile(bin)
})

// HostileBinary returns the sandbox tests' hostile function
// (internal/hostile), a static executable.
func HostileBinary(t testing.TB) []byte {
	t.Helper()
	b, err := hostileBin()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// HostileImage is a function image of internal/hostile at /app/hostile, its
// entrypoint, with the mount points runc needs.
func HostileImage(t testing.TB) v1.Image {
	t.Helper()
	bin := HostileBinary(t)
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, d := range []string{"proc", "sys", "dev", "tmp", "run", "etc", "app"} {
		tw.WriteHeader(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: 0o755})
	}
	tw.WriteHeader(&tar.Header{Name: "app/hostile", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bin))})
	tw.Write(bin)
	tw.Close()
	layer, err := tarball.LayerFromReader(bytes.NewReader(b.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.Config.Entrypoint = []string{"/app/hostile"}
	cfg.OS, cfg.Architecture = "linux", goruntime.GOARCH
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		t.Fatal(err)
	}
	return img
}
