package testenv

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
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

	serverImages sync.Map // filler size -> v1.Image
)

// ServerImage is a small function image for container tests: the runc
// package's test server (it answers /healthz on $PORT) built statically at
// /app/server, the mount points runc needs, and filler bytes of random data
// at /data/unused.bin that the server never reads (so lazy starts show what
// they did not fetch). Its entrypoint is /app/server.
//
// Images are immutable: one per filler size serves every test of a process.
func ServerImage(t testing.TB, filler int) v1.Image {
	t.Helper()
	serverOnce.Do(buildServer)
	if serverErr != nil {
		t.Fatal(serverErr)
	}
	if img, ok := serverImages.Load(filler); ok {
		return img.(v1.Image)
	}
	junk := make([]byte, filler)
	rand.NewChaCha8([32]byte{5}).Read(junk)
	img := FunctionImage(t, ImageSpec{
		Files:      []File{{"app/server", serverBin, 0o755}, {"data/unused.bin", junk, 0o644}},
		Entrypoint: []string{"/app/server"},
	})
	stored, _ := serverImages.LoadOrStore(filler, img)
	return stored.(v1.Image)
}

// ImageSpec is a one-layer function image for container tests.
type ImageSpec struct {
	Files      []File            // regular files, their directories made
	Links      map[string]string // symbolic links: name in the image to target
	Entrypoint []string
	User       string
}

// File is a regular file of an ImageSpec.
type File struct {
	Name string // relative, as in a tar
	Data []byte
	Mode int64
}

// FunctionImage builds spec's image: the mount points runc needs (the
// root is read-only, so they cannot be made at start), /etc, the files
// with their directories, and the links, for linux on this architecture.
func FunctionImage(t testing.TB, spec ImageSpec) v1.Image {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	dirs := map[string]bool{}
	dir := func(d string) {
		if !dirs[d] {
			dirs[d] = true
			tw.WriteHeader(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: 0o755})
		}
	}
	for _, d := range []string{"proc", "sys", "dev", "tmp", "run", "etc"} {
		dir(d)
	}
	for _, f := range spec.Files {
		if d := path.Dir(f.Name); d != "." {
			dir(d)
		}
		tw.WriteHeader(&tar.Header{Name: f.Name, Typeflag: tar.TypeReg, Mode: f.Mode, Size: int64(len(f.Data))})
		tw.Write(f.Data)
	}
	for name, target := range spec.Links {
		tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target, Mode: 0o777})
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	// Compressed once, here: a layer made from the tar would compress it
	// again for its digest and for every push, slow under the race detector.
	var z bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&z, gzip.BestSpeed)
	zw.Write(b.Bytes())
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(z.Bytes())), nil })
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
	cfg.Config.Entrypoint, cfg.Config.User = spec.Entrypoint, spec.User
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
