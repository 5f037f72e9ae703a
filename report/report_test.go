package report

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/cluster"
)

// TestDemoEndToEnd runs the demo command's body in process with a small
// image and checks the JSON summary against what the run must have done.
func TestDemoEndToEnd(t *testing.T) {
	jsonPath := filepath.Join(t.TempDir(), "summary.json")
	var out bytes.Buffer
	cfg := DemoDefaults
	cfg.VMs, cfg.ImageSize, cfg.Layers = 4, 8<<20, 3
	cfg.JSON, cfg.Out, cfg.Dir = jsonPath, &out, t.TempDir()
	sum, err := Demo(context.Background(), cfg)
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	raw, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]any
	if err := json.Unmarshal(raw, &fields); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"vms", "ready", "image_bytes", "registry_egress_bytes", "first_ready_s", "last_ready_s"} {
		if _, ok := fields[k]; !ok {
			t.Errorf("summary has no %q: %s", k, raw)
		}
	}
	var got DemoSummary
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	if got.VMs != 4 || got.Ready != 4 {
		t.Errorf("vms %d, ready %d; want 4 and 4", got.VMs, got.Ready)
	}
	if got.ImageBytes < 8<<20 || got.ImageBytes > 9<<20 {
		t.Errorf("image_bytes %d, want about 8 MiB", got.ImageBytes)
	}
	if got.RegistryEgressBytes != got.ImageBytes {
		t.Errorf("registry_egress_bytes %d, want the image once: %d", got.RegistryEgressBytes, got.ImageBytes)
	}
	if got.FirstReadyS <= 0 || got.FirstReadyS > got.LastReadyS {
		t.Errorf("first_ready_s %v, last_ready_s %v", got.FirstReadyS, got.LastReadyS)
	}
	if got.LastReadyS != sum.LastReadyS {
		t.Errorf("the file says last_ready_s %v, Demo returned %v", got.LastReadyS, sum.LastReadyS)
	}
	text := out.String()
	for _, want := range []string{"vm-000", "vm-003", "first VM ready after", "the registry served"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "\x1b[") {
		t.Errorf("terminal escapes in output that is not a terminal:\n%q", text)
	}
}

// TestDemoFailsWhenVMsAreNotReady: a timeout too short for the image fails
// the demo, after the summary.
func TestDemoFailsWhenVMsAreNotReady(t *testing.T) {
	var out bytes.Buffer
	cfg := DemoDefaults
	cfg.VMs, cfg.ImageSize, cfg.Layers, cfg.Bandwidth = 2, 4<<20, 1, 1<<20
	cfg.Timeout, cfg.Out, cfg.Dir = 500*time.Millisecond, &out, t.TempDir()
	sum, err := Demo(context.Background(), cfg)
	if err == nil {
		t.Fatalf("demo passed with a 4 MiB image at 1 MiB/s in 0.5 s:\n%s", out.String())
	}
	if sum.Ready != 0 || len(sum.Failed) != 2 {
		t.Errorf("ready %d, failed %v; want 0 and two", sum.Ready, sum.Failed)
	}
	if !strings.Contains(out.String(), "first VM ready") {
		t.Errorf("no summary before the failure:\n%s", out.String())
	}
}

// TestBenchEndToEnd runs a two-count sweep of two strategies and checks
// the JSON document and the plot.
func TestBenchEndToEnd(t *testing.T) {
	dir := t.TempDir()
	cfg := BenchConfig{
		VMs: []int{2, 4}, Strategies: []string{"faasnet", "registry"},
		Scenario: cluster.Scenario{ImageSize: 2 << 20, Layers: 2, Bandwidth: 16 << 20, RegistryBandwidth: 16 << 20, BlockSize: 128 << 10},
		Timeout:  time.Minute, JSON: filepath.Join(dir, "bench.json"), Plot: filepath.Join(dir, "bench.svg"),
		Dir: dir,
	}
	var out bytes.Buffer
	cfg.Out = &out
	rows, err := Bench(context.Background(), cfg)
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

// checkSVG checks that path is well-formed XML holding the texts.
func checkSVG(t *testing.T, path string, texts ...string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	d := xml.NewDecoder(bytes.NewReader(b))
	for {
		_, err := d.Token()
		if err != nil {
			if err.Error() != "EOF" {
				t.Fatalf("%s is not well-formed: %v", path, err)
			}
			break
		}
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
	}
	var b bytes.Buffer
	if err := WriteTable(&b, rows); err != nil {
		t.Fatal(err)
	}
	got := b.String()
	for _, want := range []string{"faasnet at 8 VMs: 10.0x vs registry (makespan ratio)", "FAILED 2", "efficiency"} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "8 VMs: 10.0x vs registry, ") {
		t.Errorf("speed-up against a failed run:\n%s", got)
	}
	w := Warnings(rows)
	if len(w) != 3 || !strings.Contains(w[0], "swarm at 8 VMs: 2 VMs failed") || !strings.Contains(w[1], "faasnet at 16 VMs") ||
		!strings.Contains(w[2], "during 2 of 6 runs") || !strings.Contains(w[2], "97%") {
		t.Errorf("warnings %q, want one for the failed run, one for the CPU-bound run and a note on the two busy ones", w)
	}
}

func TestProgress(t *testing.T) {
	root := "vm-0"
	snap := cluster.Snapshot{VMs: []cluster.VMProgress{
		{VM: "vm-0", Received: 10, Total: 10, Ready: true},
		{VM: "vm-1", Received: 5, Total: 10},
		{VM: "vm-2", Total: 10, Failed: strings.Repeat("x", 100)},
	}, Trees: []api.Tree{{Function: "fn-0", Root: &root, Height: 1, Nodes: []api.TreeNode{
		{VM: "vm-0", Children: []string{"vm-1", "vm-2"}},
		{VM: "vm-1", Parent: &root, Depth: 1},
		{VM: "vm-2", Parent: &root, Depth: 1},
	}}}}

	t.Run("plain", func(t *testing.T) {
		var b bytes.Buffer
		p := &Progress{W: &b, Prefix: "> "}
		for _, ms := range []int{100, 400, 900, 1100, 1500, 2100} {
			p.Update(time.Duration(ms)*time.Millisecond, snap)
		}
		lines := strings.Split(strings.TrimSpace(b.String()), "\n")
		if len(lines) != 3 { // at 0.1 s, then once past 1 s and 2 s
			t.Errorf("%d lines, want 3:\n%s", len(lines), b.String())
		}
		if !strings.HasPrefix(lines[0], "> ") || !strings.Contains(lines[0], "1/3 VMs ready") || !strings.Contains(lines[0], "1 failing") {
			t.Errorf("line %q", lines[0])
		}
	})
	t.Run("live", func(t *testing.T) {
		var b bytes.Buffer
		p := &Progress{W: &b, Live: true}
		p.Update(time.Second, snap)
		first := b.String()
		p.Update(2*time.Second, snap)
		second := strings.TrimPrefix(b.String(), first)
		n := strings.Count(first, "\n")
		if !strings.HasPrefix(second, "\x1b["+strconv.Itoa(n)+"F") {
			t.Errorf("second frame does not move up %d lines: %q", n, second[:min(len(second), 20)])
		}
		for _, want := range []string{"fn-0: 3 VMs", "└── vm-2", "100% ready", " 50%", "failing: xxx"} {
			if !strings.Contains(first, want) {
				t.Errorf("frame lacks %q:\n%s", want, first)
			}
		}
		for _, l := range strings.Split(first, "\n") {
			if len([]rune(l)) > 120 {
				t.Errorf("line of %d runes would wrap: %q", len([]rune(l)), l)
			}
		}
	})
}
