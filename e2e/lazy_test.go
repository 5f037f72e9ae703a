package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/internal/testenv"
	"github.com/faasnet/faasnet/lazy"
)

// TestLazyPythonFunctionOnSevenWorkers is issue 5's end-to-end check: the
// Python function image (Debian, python3, numpy, scipy) converted to
// eStargz, scaled onto seven worker processes that run its container with
// runc over a lazy FUSE mount.
func TestLazyPythonFunctionOnSevenWorkers(t *testing.T) {
	testenv.NeedRoot(t)
	for _, tool := range []string{"runc", "fusermount3", "debootstrap"} {
		testenv.NeedTool(t, tool)
	}
	if testing.Short() && !testenv.InCI() {
		t.Skip("builds the Python image (minutes on a fresh machine); run without -short")
	}
	ctx := context.Background()
	reg := testenv.StartRegistry(t)
	proxy, counter := testenv.CountingProxy(t, reg)
	// Build, convert and push with the faasnet binary: the conversion
	// recompresses ~800 MB, far too slow in a race-instrumented test binary.
	// The conversion comes from the cache make's images step fills (the
	// binary converts if it is empty); cmd/faasnet tests faasnet convert.
	plain := proxy + "/fn/python:plain"
	lazyRef := proxy + "/fn/python:estargz"
	out := run(t, "image", "python", "--push", plain, "--push-estargz", lazyRef)
	t.Logf("faasnet image python: %s", strings.TrimSpace(out))
	counter.Reset()

	mgr := startManager(t, "--vm-timeout", "5s")
	c := mgr.admin(t)
	runDirs := map[string]string{}
	for i := range 7 {
		id := fmt.Sprintf("vm-%d", i)
		runDirs[id] = testenv.RunDir(t)
		dir := runDirs[id]
		// After the worker is killed (cleanups run last-first), a mount it
		// left must go before the directory can.
		t.Cleanup(func() { lazy.Unmount(filepath.Join(dir, "mnt", "py")) })
		start(t, id, append(mgr.workerArgs(t, id),
			"--oci-listen", "none", "--run-dir", runDirs[id], "--containers", "--heartbeat", "200ms",
			"--download-limit", "64MiB/s", "--upload-limit", "64MiB/s")...)
	}
	waitVMs(t, c, 7)
	spec, _ := json.Marshal(api.FunctionSpec{Readiness: &api.Readiness{Path: "/healthz"}, Memory: "256MiB"})
	if _, err := c.PutFunction(ctx, "py", api.FunctionRequest{Image: lazyRef, Spec: spec}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Scale(ctx, "py", api.ScaleRequest{Count: 7}); err != nil {
		t.Fatal(err)
	}
	st := waitStatus(t, c, "py", 7, 5*time.Minute)
	for _, v := range st.VMs {
		frac := float64(v.BytesBeforeReady) / float64(v.ImageBytes)
		t.Logf("%s (depth %d): ready after fetching %d of %d bytes (%.1f%%), %d from the registry; phases %v",
			v.VM, v.Depth, v.BytesBeforeReady, v.ImageBytes, 100*frac, v.BytesFromRegistry, phaseTimes(v.Phases))
		if v.Parent == nil && frac > 0.15 {
			t.Errorf("the root fetched %.1f%% of the image before its container answered, want at most 15%%", 100*frac)
		}
	}

	for _, v := range st.VMs {
		if err := c.Release(ctx, "py", v.VM); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(time.Minute)
	for id, dir := range runDirs {
		for {
			out, _ := exec.Command("runc", "--root", filepath.Join(dir, "runc"), "list", "-q").Output()
			mounted, _ := lazy.Mounted(filepath.Join(dir, "mnt", "py"))
			if strings.TrimSpace(string(out)) == "" && !mounted {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s after release: runc containers %q, mounted %v", id, out, mounted)
			}
			time.Sleep(100 * time.Millisecond) // polling the system's state, with a deadline
		}
	}
}

// phaseTimes shows each phase as the time since assignment.
func phaseTimes(p map[string]time.Time) string {
	var b strings.Builder
	for _, k := range []string{"manifest", "mount", "unpacked", "started", "ready"} {
		if t, ok := p[k]; ok {
			fmt.Fprintf(&b, "%s=+%v ", k, t.Sub(p["assigned"]).Round(time.Millisecond))
		}
	}
	return strings.TrimSpace(b.String())
}

// run runs the faasnet binary to completion and returns its standard output.
func run(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("faasnet %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}
