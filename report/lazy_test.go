package report

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
	jsonPath := filepath.Join(t.TempDir(), "summary.json")
	var out bytes.Buffer
	cfg := DemoDefaults
	cfg.VMs, cfg.Lazy = 3, true
	cfg.JSON, cfg.Out, cfg.Dir, cfg.RunDir = jsonPath, &out, t.TempDir(), t.TempDir()
	cfg.Timeout = 3 * time.Minute
	if _, err := Demo(context.Background(), cfg); err != nil {
		t.Fatalf("demo --lazy: %v\n%s", err, out.String())
	}
	raw, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var got DemoSummary
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
	for _, want := range []string{"container answered after fetching", "before its container answered", "mount", "started"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
}

func TestPhaseStats(t *testing.T) {
	s := time.Second
	tests := []struct {
		name   string
		phases []map[string]time.Duration
		want   map[string]PhaseStats
	}{
		{name: "none", phases: []map[string]time.Duration{nil, {}}, want: nil},
		{
			name:   "one VM",
			phases: []map[string]time.Duration{{"ready": 2 * s}},
			want:   map[string]PhaseStats{"ready": {FirstS: 2, MedianS: 2, LastS: 2, VMs: 1}},
		},
		{
			name: "VMs missing a phase are left out of it",
			phases: []map[string]time.Duration{
				{"manifest": s, "ready": 4 * s},
				{"manifest": 3 * s},
				{"manifest": 2 * s, "ready": 5 * s},
				nil,
			},
			want: map[string]PhaseStats{
				"manifest": {FirstS: 1, MedianS: 2, LastS: 3, VMs: 3},
				"ready":    {FirstS: 4, MedianS: 4, LastS: 5, VMs: 2},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := phaseStats(tt.phases)
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for k, w := range tt.want {
				if got[k] != w {
					t.Errorf("%s: got %+v, want %+v", k, got[k], w)
				}
			}
		})
	}
}

func TestPhaseNames(t *testing.T) {
	stats := map[string]PhaseStats{"ready": {}, "zeta": {}, "mount": {}, "assigned": {}, "alpha": {}, "started": {}}
	got := strings.Join(phaseNames(stats), " ")
	if want := "assigned mount started ready alpha zeta"; got != want {
		t.Errorf("phaseNames = %q, want %q", got, want)
	}
}

// TestContainerTable: rows of runs with containers get the second table,
// with a column per phase and "-" where a strategy has no such phase;
// rows without containers get none.
func TestContainerTable(t *testing.T) {
	rows := []Row{
		{Strategy: "faasnet", VMs: 4, MakespanS: 2, Containers: true, BytesBeforeReadyMax: 20 << 20, FractionBeforeReady: 0.075,
			Phases: map[string]PhaseStats{"mount": {MedianS: 0.5}, "ready": {MedianS: 1.5}}},
		{Strategy: "registry", VMs: 4, MakespanS: 60, Containers: true, BytesBeforeReadyMax: 258 << 20, FractionBeforeReady: 1,
			Phases: map[string]PhaseStats{"unpacked": {MedianS: 50}, "ready": {MedianS: 55}}},
	}
	var b bytes.Buffer
	if err := WriteTable(&b, rows); err != nil {
		t.Fatal(err)
	}
	text := b.String()
	for _, want := range []string{"fetched before ready", "7.5%", "100.0%", "mount", "unpacked", "55.00s", "30.0x vs registry"} {
		if !strings.Contains(text, want) {
			t.Errorf("table lacks %q:\n%s", want, text)
		}
	}
	lines := strings.Split(text, "\n")
	for _, l := range lines {
		if strings.Contains(l, "7.5%") && !strings.Contains(l, " - ") {
			t.Errorf("faasnet's container row has no '-' for the unpacked phase: %q", l)
		}
	}
	b.Reset()
	rows[0].Containers, rows[1].Containers = false, false
	if err := WriteTable(&b, rows); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "fetched before ready") {
		t.Errorf("container table without containers:\n%s", b.String())
	}
}
