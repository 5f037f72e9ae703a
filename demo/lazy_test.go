package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/faasnet/faasnet/cluster"
	"github.com/faasnet/faasnet/internal/testenv"
)

// TestLazyDemo runs demo --lazy's body with three VMs: the Python
// function's containers over lazy mounts, through the tree.
func TestLazyDemo(t *testing.T) {
	testenv.NeedRoot(t)
	testenv.NeedTool(t, "runc")
	testenv.NeedTool(t, "debootstrap")
	if err := cluster.CheckContainers(); err != nil {
		if testenv.InCI() {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	if testing.Short() && !testenv.InCI() {
		t.Skip("runs the Python function's containers (and builds its image on a fresh machine, minutes); run without -short")
	}
	// The image and its conversion come from the caches, filled by the
	// faasnet binary (make's images step, or here): converting in this
	// race-instrumented binary would take a quarter of an hour.
	testenv.PythonImage(t)
	jsonPath := filepath.Join(t.TempDir(), "summary.json")
	var out bytes.Buffer
	cfg := Defaults
	cfg.VMs, cfg.Lazy = 3, true
	cfg.JSON, cfg.Out, cfg.Dir, cfg.RunDir = jsonPath, &out, t.TempDir(), testenv.RunDir(t)
	cfg.Timeout = 3 * time.Minute
	if _, err := Run(context.Background(), cfg); err != nil {
		t.Fatalf("demo --lazy: %v\n%s", err, out.String())
	}
	raw, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var got Summary
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	if got.VMs != 3 || got.Ready != 3 || !got.Lazy {
		t.Errorf("vms %d, ready %d, lazy %v; want 3, 3, true", got.VMs, got.Ready, got.Lazy)
	}
	// The bound is for the root; every VM here reads the same.
	if got.BytesFetchedBeforeReady <= 0 || got.FractionBeforeReady > 0.15 {
		t.Errorf("bytes_fetched_before_ready %d (%.1f%% of %d), want some and at most 15%%",
			got.BytesFetchedBeforeReady, 100*got.FractionBeforeReady, got.ImageBytes)
	}
	// The registry sent the blocks the root read, and may have begun
	// streaming the rest behind them, but nothing near one image per VM.
	if got.RegistryEgressBytes < got.BytesFetchedBeforeReady/2 || got.RegistryEgressBytes > 2*got.ImageBytes {
		t.Errorf("registry_egress_bytes %d, want between what the root read (%d) and two images", got.RegistryEgressBytes, got.BytesFetchedBeforeReady)
	}
	for _, p := range []string{"assigned", "manifest", "mount", "started", "ready"} {
		st, ok := got.Phases[p]
		if !ok || st.VMs != 3 || st.FirstS > st.MedianS || st.MedianS > st.LastS {
			t.Errorf("phase %s: %+v (present %v), want 3 VMs, first <= median <= last", p, st, ok)
		}
	}
	if st := got.Phases["ready"]; st.FirstS != got.FirstReadyS || st.LastS != got.LastReadyS {
		t.Errorf("phase ready %+v, first_ready_s %v, last_ready_s %v: want the same times", st, got.FirstReadyS, got.LastReadyS)
	}
	if _, ok := got.Phases["unpacked"]; ok {
		t.Errorf("a lazy run unpacked: %+v", got.Phases)
	}
	if len(got.VMPhases) != 3 {
		t.Fatalf("%d vm_phases, want 3", len(got.VMPhases))
	}
	for _, v := range got.VMPhases {
		if v.PhasesS["ready"] <= v.PhasesS["started"] || v.BytesFetchedBeforeReady <= 0 {
			t.Errorf("%s: phases %v, %d bytes before ready", v.VM, v.PhasesS, v.BytesFetchedBeforeReady)
		}
	}
	text := out.String()
	// "pushed the eStargz conversion cached": loaded, not converted here.
	for _, want := range []string{"pushed the eStargz conversion cached", "container answered after fetching", "before its container answered", "mount", "started"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
}
