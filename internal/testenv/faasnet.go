package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// FaasnetBinEnv names the faasnet binary that make builds (without -race)
// before the unit tests, for Faasnet to use instead of building one.
const FaasnetBinEnv = "FAASNET_BIN"

var (
	faasnetOnce sync.Once
	faasnetBin  string
	faasnetErr  error
)

// Faasnet returns the path of a faasnet binary built without -race: the one
// $FAASNET_BIN names, or else one built once per test process. Work that is
// slow under the race detector (building and converting the Python image)
// runs in it.
func Faasnet(t testing.TB) string {
	t.Helper()
	faasnetOnce.Do(func() {
		if p := os.Getenv(FaasnetBinEnv); p != "" {
			faasnetBin, faasnetErr = exec.LookPath(p)
			return
		}
		faasnetBin, faasnetErr = buildFaasnet()
	})
	if faasnetErr != nil {
		t.Fatalf("testenv: faasnet binary: %v", faasnetErr)
	}
	return faasnetBin
}

// buildFaasnet builds cmd/faasnet into a directory that lives as long as the
// test process: removing it is left to the system's temporary directory
// cleaning, since no test owns it.
func buildFaasnet() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "faasnet-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "faasnet")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/faasnet")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/faasnet: %v\n%s", err, out)
	}
	return bin, nil
}

// PythonImage makes sure the caches hold the Python function's image
// (package pyimage) and its eStargz conversion, where cluster.PythonFunction
// looks, by running `faasnet image python --convert-cache`. After `make
// test`'s set-up step this only reads the caches, in seconds; otherwise the
// binary builds and converts, minutes, outside the race detector (converting
// inside a race-instrumented test took 16 minutes). It needs root and
// debootstrap, as the build does.
func PythonImage(t testing.TB) {
	t.Helper()
	NeedRoot(t)
	NeedTool(t, "debootstrap")
	bin := Faasnet(t)
	start := time.Now()
	cmd := exec.CommandContext(t.Context(), bin, "image", "python", "--convert-cache")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("testenv: faasnet image python --convert-cache: %v\n%s", err, stderr.String())
	}
	t.Logf("faasnet image python --convert-cache in %v: %s", time.Since(start).Round(time.Millisecond), lastLine(string(out)))
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndex(s, "\n")+1:]
}
