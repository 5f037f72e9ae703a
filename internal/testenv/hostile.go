package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
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
	return FunctionImage(t, ImageSpec{
		Files:      []File{{"app/hostile", HostileBinary(t), 0o755}},
		Entrypoint: []string{"/app/hostile"},
	})
}
