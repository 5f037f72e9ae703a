package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDemoCommandJSON runs `faasnet demo --vms 4 --image-size 8MiB --json F`
// as a subprocess, flags parsed by the cobra command, and checks the JSON
// summary: the fields issue 4 fixed and those issue 5 added.
func TestDemoCommandJSON(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "summary.json")
	cmd := exec.Command(os.Args[0], "demo", "--vms", "4", "--image-size", "8MiB", "--json", path)
	cmd.Env = append(os.Environ(), "FAASNET_RUN_MAIN=1", "TMPDIR="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("faasnet demo: %v\n%s", err, out)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		t.Fatalf("%v:\n%s", err, raw)
	}
	for _, k := range []string{"vms", "ready", "image_bytes", "registry_egress_bytes", "first_ready_s", "last_ready_s",
		"bytes_fetched_before_ready", "fraction_fetched_before_ready", "phases", "vm_phases"} {
		if _, ok := fields[k]; !ok {
			t.Errorf("summary has no %q:\n%s", k, raw)
		}
	}
	if _, ok := fields["lazy"]; ok {
		t.Errorf("summary says lazy without --lazy:\n%s", raw)
	}
	var s struct {
		VMs, Ready          int
		ImageBytes          int64   `json:"image_bytes"`
		RegistryEgress      int64   `json:"registry_egress_bytes"`
		FirstReady          float64 `json:"first_ready_s"`
		LastReady           float64 `json:"last_ready_s"`
		BeforeReady         int64   `json:"bytes_fetched_before_ready"`
		FractionBeforeReady float64 `json:"fraction_fetched_before_ready"`
		Phases              map[string]struct {
			First, Median, Last float64
			VMs                 int
		}
		VMPhases []struct {
			VM      string
			PhasesS map[string]float64 `json:"phases_s"`
		} `json:"vm_phases"`
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	if s.VMs != 4 || s.Ready != 4 {
		t.Errorf("vms %d, ready %d; want 4 and 4", s.VMs, s.Ready)
	}
	if s.ImageBytes < 8<<20 || s.ImageBytes > 9<<20 || s.RegistryEgress != s.ImageBytes {
		t.Errorf("image_bytes %d, registry_egress_bytes %d; want about 8 MiB, sent once", s.ImageBytes, s.RegistryEgress)
	}
	if s.FirstReady <= 0 || s.FirstReady > s.LastReady {
		t.Errorf("first_ready_s %v, last_ready_s %v", s.FirstReady, s.LastReady)
	}
	// Without --lazy a VM is ready when it holds the whole image. The
	// worker counts a block just after writing it, so a VM that is ready
	// may not have counted the last block of each of its 5 blobs yet
	// (512 KiB blocks, the default).
	if s.BeforeReady < s.ImageBytes-5*512<<10 || s.BeforeReady > s.ImageBytes || s.FractionBeforeReady < 0.6 {
		t.Errorf("bytes_fetched_before_ready %d (fraction %v), want the image, %d", s.BeforeReady, s.FractionBeforeReady, s.ImageBytes)
	}
	for _, p := range []string{"assigned", "manifest", "ready"} {
		st, ok := s.Phases[p]
		if !ok || st.VMs != 4 || st.First > st.Median || st.Median > st.Last {
			t.Errorf("phase %s: %+v (present %v)", p, st, ok)
		}
	}
	if st := s.Phases["ready"]; st.First != s.FirstReady || st.Last != s.LastReady {
		t.Errorf("phase ready %+v against first_ready_s %v, last_ready_s %v", st, s.FirstReady, s.LastReady)
	}
	if len(s.VMPhases) != 4 {
		t.Fatalf("%d vm_phases, want 4", len(s.VMPhases))
	}
	for _, v := range s.VMPhases {
		if !strings.HasPrefix(v.VM, "vm-") || v.PhasesS["ready"] < v.PhasesS["manifest"] || v.PhasesS["ready"] <= 0 {
			t.Errorf("vm_phases entry %+v", v)
		}
	}
	if !strings.Contains(string(out), "first VM ready after") {
		t.Errorf("no summary on standard output:\n%s", out)
	}
}
