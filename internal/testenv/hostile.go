package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Hostile builds the sandbox tests' hostile function (internal/hostile)
// statically into a temporary directory of t and returns its path.
func Hostile(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "hostile")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/faasnet/faasnet/internal/hostile")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build internal/hostile: %v\n%s", err, out)
	}
	return bin
}
