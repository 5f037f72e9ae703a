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

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/cluster"
	"github.com/faasnet/faasnet/internal/testenv"
)

// TestTraceEndToEnd replays the most bursty four minutes of the synthetic
// trace (burst's testdata: b jumps to five instances) on four VMs, a
// trace minute lasting 1.5 s, with every strategy (faasnet with one and
// with two stripe trees), replaying the small
// test function's recorded reads: the output names the chosen window and
// its criterion, every cold start is ready, the simulator's replay is
// beside each row with the same cold starts, and the JSON and the plot are
// written.
func TestTraceEndToEnd(t *testing.T) {
	testenv.NeedContainers(t)
	dir := t.TempDir()
	fn := &cluster.Function{Image: testenv.ServerImage(t, 8<<20), Spec: api.FunctionSpec{Readiness: &api.Readiness{Path: "/healthz"}, Memory: "64MiB"}}
	cfg := TraceConfig{
		Dir: filepath.Join("..", "burst", "testdata"), Window: 4 * time.Minute, Speedup: 40, Pool: 4, Functions: 2,
		IdleTimeout: 2 * time.Minute, Strategies: []string{"faasnet", "ondemand", "registry"}, Stripes: []int{1, 2}, Replay: true,
		Scenario: cluster.Scenario{Bandwidth: 32 << 20, RegistryBandwidth: 32 << 20, BlockSize: 64 << 10},
		Drain:    30 * time.Second, RecordFor: 2 * time.Minute, JSON: filepath.Join(dir, "trace.json"), Plot: filepath.Join(dir, "trace.svg"),
		CacheDir: dir, RunDir: t.TempDir(), Function: fn,
	}
	var out bytes.Buffer
	cfg.Out = &out
	doc, err := RunTrace(context.Background(), cfg)
	if err != nil {
		t.Fatalf("bench --trace: %v\n%s", err, out.String())
	}
	t.Logf("output:\n%s", out.String())
	for _, want := range []string{"chosen: minutes 103-106", Criterion, "to fit 4 VMs", "faasnet-k1 vs ondemand", "faasnet-k2 vs registry", "emulation vs simulation"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if len(doc.Rows) != 4 {
		t.Fatalf("%d rows, want 4 (faasnet with 1 and 2 stripes, ondemand, registry)", len(doc.Rows))
	}
	for _, r := range doc.Rows {
		if r.ColdStarts != doc.Schedule.ColdStarts || r.Ready != r.ColdStarts || r.P50S <= 0 {
			t.Errorf("%s: %d of %d cold starts ready (schedule: %d), p50 %v", r.Strategy, r.Ready, r.ColdStarts, doc.Schedule.ColdStarts, r.P50S)
		}
		if r.Sim == nil || r.Sim.ColdStarts != r.ColdStarts {
			t.Errorf("%s: simulated %+v, want the same cold starts", r.Strategy, r.Sim)
		}
	}
	raw, err := os.ReadFile(cfg.JSON)
	if err != nil {
		t.Fatal(err)
	}
	var back TraceDoc
	if err := json.Unmarshal(raw, &back); err != nil || len(back.Rows) != 4 || back.Window.Minute != 103 {
		t.Errorf("JSON: %v, %d rows, window at %d", err, len(back.Rows), back.Window.Minute)
	}
	checkSVG(t, cfg.Plot, "Cold-start latency over trace time", "faasnet-k1", "faasnet-k2", "ondemand", "registry")
}
