package testenv

import (
	"archive/tar"
	"bytes"
	"fmt"
	"math/rand/v2"
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

var (
	serverOnce sync.Once
	serverBin  []byte
	serverErr  error
)

// ServerImage is a small function image for container tests: the runc
// package's test server (it answers /healthz on $PORT) built statically at
// /app/server, the mount points runc needs, and filler bytes of random data
// at /data/unused.bin that the server never reads (so lazy starts show what
// they did not fetch). Its entrypoint is /app/server.
func ServerImage(t testing.TB, filler int) v1.Image {
	t.Helper()
	serverOnce.Do(buildServer)
	if serverErr != nil {
		t.Fatal(serverErr)
	}
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, d := range []string{"proc", "sys", "dev", "tmp", "run", "etc", "app", "data"} {
		tw.WriteHeader(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: 0o755})
	}
	add := func(name string, data []byte, mode int64) {
		tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode, Size: int64(len(data))})
		tw.Write(data)
	}
	add("app/server", serverBin, 0o755)
	junk := make([]byte, filler)
	rand.NewChaCha8([32]byte{5}).Read(junk)
	add("data/unused.bin", junk, 0o644)
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
	cfg.Config.Entrypoint = []string{"/app/server"}
	cfg.OS, cfg.Architecture = "linux", goruntime.GOARCH
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		t.Fatal(err)
	}
	return img
}

// buildServer compiles runc/testdata/server statically, once.
func buildServer() {
	root, err := moduleRoot()
	if err != nil {
		serverErr = err
		return
	}
	dir, err := os.MkdirTemp("", "faasnet-server-")
	if err != nil {
		serverErr = err
		return
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "server")
	cmd := exec.Command("go", "build", "-o", bin, "./runc/testdata/server")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		serverErr = fmt.Errorf("go build runc/testdata/server: %v\n%s", err, out)
		return
	}
	serverBin, serverErr = os.ReadFile(bin)
}

// moduleRoot is the directory of the go.mod above the working directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}
