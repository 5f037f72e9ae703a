package bench

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
)

// TestBenchEndToEnd runs a two-count sweep of two strategies and checks
// the JSON document and the plot.
func TestBenchEndToEnd(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{
		VMs: []int{2, 4}, Strategies: []string{"faasnet", "registry"},
		Scenario: cluster.Scenario{ImageSize: 2 << 20, Layers: 2, Bandwidth: 16 << 20, RegistryBandwidth: 16 << 20, BlockSize: 128 << 10},
		Timeout:  time.Minute, JSON: filepath.Join(dir, "bench.json"), Plot: filepath.Join(dir, "bench.svg"),
		Dir: dir,
	}
	var out bytes.Buffer
	cfg.Out = &out
	rows, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, out.String())
	}
	if len(rows) != 4 {
		t.Fatalf("%d rows, want 4", len(rows))
	}
	raw, err := os.ReadFile(cfg.JSON)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Scenario map[string]any   `json:"scenario"`
		Results  []map[string]any `json:"results"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Scenario == nil || len(doc.Results) != 4 {
		t.Fatalf("scenario %v, %d results; want a scenario and 4", doc.Scenario, len(doc.Results))
	}
	for _, r := range doc.Results {
		for _, k := range []string{"strategy", "vms", "makespan_s", "p50_s", "p90_s", "p99_s", "registry_egress_bytes", "max_vm_upload_bytes", "lower_bound_s", "efficiency"} {
			if _, ok := r[k]; !ok {
				t.Errorf("result lacks %q: %v", k, r)
			}
		}
	}
	checkSVG(t, cfg.Plot, "Makespan against VM count", "faasnet", "registry")
	if !strings.Contains(out.String(), "faasnet at 4 VMs") {
		t.Errorf("no speed-up line in the output:\n%s", out.String())
	}
}

// checkSVG checks that the file path holds the texts (package report
// checks that its SVG is well-formed).
func checkSVG(t *testing.T, path string, texts ...string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range texts {
		if !bytes.Contains(b, []byte(s)) {
			t.Errorf("%s lacks %q", path, s)
		}
	}
}

func TestPlotSingleCountIsACDF(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cdf.svg")
	rows := []Row{
		{Strategy: "faasnet", VMs: 3, MakespanS: 2, ReadyS: []float64{1, 1.5, 2}},
		{Strategy: "registry", VMs: 3, MakespanS: 6, ReadyS: []float64{5, 6, -1}, FailedVMs: 1},
	}
	if err := Plot(path, rows); err != nil {
		t.Fatal(err)
	}
	checkSVG(t, path, "Ready times at 3 VMs (CDF)")
	b, _ := os.ReadFile(path)
	if bytes.Contains(b, []byte("Makespan against")) {
		t.Error("a single VM count drew a makespan plot")
	}
	if err := Plot(path, nil); err == nil {
		t.Error("Plot of no rows did not fail")
	}
}

func TestTableAndSpeedups(t *testing.T) {
	rows := []Row{
		{Strategy: "faasnet", VMs: 8, MakespanS: 2, Efficiency: 0.5},
		{Strategy: "registry", VMs: 8, MakespanS: 20},
		{Strategy: "swarm", VMs: 8, MakespanS: 5, FailedVMs: 2},
		{Strategy: "faasnet", VMs: 16, MakespanS: 4, CPUUtilization: 0.9, MachineCPU: 0.95},
		{Strategy: "registry", VMs: 16, MakespanS: 40, CPUUtilization: 0.1, MachineCPU: 0.97},
		{Strategy: "swarm", VMs: 16, MakespanS: 10, CPUUtilization: 0.2, MachineCPU: 0.85},
		{Strategy: "faasnet-plaintext", VMs: 8, MakespanS: 1.6},
	}
	var b bytes.Buffer
	if err := WriteTable(&b, rows); err != nil {
		t.Fatal(err)
	}
	got := b.String()
	for _, want := range []string{"faasnet at 8 VMs: 10.0x vs registry (makespan ratio)", "FAILED 2", "efficiency",
		"faasnet at 8 VMs: TLS costs +25.0% makespan (over TLS 2.00s, plaintext 1.60s"} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "8 VMs: 10.0x vs registry, ") {
		t.Errorf("speed-up against a failed run:\n%s", got)
	}
	w := Warnings(rows)
	if len(w) != 3 || !strings.Contains(w[0], "swarm at 8 VMs: 2 VMs failed") || !strings.Contains(w[1], "faasnet at 16 VMs") ||
		!strings.Contains(w[2], "during 2 of 7 runs") || !strings.Contains(w[2], "97%") {
		t.Errorf("warnings %q, want one for the failed run, one for the CPU-bound run and a note on the two busy ones", w)
	}
}

func TestStrategiesWithStripesAndBlocks(t *testing.T) {
	tests := []struct {
		stripes []int
		blocks  []int64
		want    string
	}{
		{nil, nil, "faasnet registry"},
		{[]int{1, 2}, nil, "faasnet-k1 faasnet-k2 registry"},
		{nil, []int64{512 << 10, 0}, "faasnet-b512KiB faasnet-bauto registry"},
		{[]int{1, 2}, []int64{0, 128 << 10}, "faasnet-k1-bauto faasnet-k1-b128KiB faasnet-k2-bauto faasnet-k2-b128KiB registry"},
	}
	for _, tt := range tests {
		got, err := strategiesOf([]string{"faasnet", "registry"}, tt.stripes, tt.blocks)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, s := range got {
			names = append(names, s.Name())
		}
		if strings.Join(names, " ") != tt.want {
			t.Errorf("stripes %v, blocks %v: strategies %v, want %s", tt.stripes, tt.blocks, names, tt.want)
		}
	}
	for _, k := range []int{0, 17} {
		if _, err := strategiesOf([]string{"faasnet"}, []int{k}, nil); err == nil {
			t.Errorf("%d stripes accepted", k)
		}
	}
	if _, err := strategiesOf([]string{"faasnet"}, nil, []int64{-1}); err == nil {
		t.Error("a negative block accepted")
	}
}
