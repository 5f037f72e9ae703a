package sim

import (
	"bytes"
	"math"
	"os"
	"strings"
	"testing"
)

// TestCalibrateBench runs the calibration path on a small hand-written
// bench document: parsing, the scenario carried over, failed runs left
// out, the registry rows against their closed form, the flags.
func TestCalibrateBench(t *testing.T) {
	f, err := os.Open("testdata/bench.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := ReadBench(f)
	if err != nil {
		t.Fatal(err)
	}
	base := DefaultConfig()
	base.Latency = 0
	cfg := b.Config(base)
	if cfg.ImageSize != 2<<20 || cfg.Layers != 2 || cfg.Functions != 1 || cfg.Bandwidth != 1<<20 ||
		cfg.RegistryBandwidth != 2<<20 || cfg.BlockSize != 256<<10 || cfg.PieceSize != 1<<20 || cfg.Stripes != 1 {
		t.Fatalf("config from the bench: %+v", cfg)
	}
	ms, failed := b.Measured()
	if len(ms) != 5 || len(failed) != 1 || failed[0].Strategy != Registry || failed[0].VMs != 8 {
		t.Fatalf("measured %+v, failed %+v", ms, failed)
	}
	rows, err := Calibrate(cfg, ms, 0.2)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != len(ms) {
		t.Fatalf("%d rows for %d runs", len(rows), len(ms))
	}
	for _, r := range rows {
		if r.Result == nil || r.Result.VMs != r.VMs || r.Result.Strategy != r.Strategy {
			t.Errorf("%s at %d VMs: simulated %+v", r.Strategy, r.VMs, r.Result)
		}
		if r.Ratio != r.Simulated/r.Emulated || r.Within != (math.Abs(r.Ratio-1) <= 0.2) {
			t.Errorf("%s at %d VMs: ratio %v, within %v", r.Strategy, r.VMs, r.Ratio, r.Within)
		}
	}
	// 4 VMs pull 2 MiB each through a 2 MiB/s registry: 4 s, every byte
	// from the registry.
	reg := rows[1]
	if reg.Strategy != Registry || math.Abs(reg.Simulated-4) > 1e-3 || reg.SimulatedEgress != 4*(2<<20) || !reg.Within {
		t.Errorf("registry row %+v", reg)
	}
	// The swarm's 30 s is far off whatever the model says.
	if rows[2].Strategy != Swarm || rows[2].Within {
		t.Errorf("swarm row %+v not flagged", rows[2])
	}
	var out bytes.Buffer
	if err := WriteCalibration(&out, rows); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); strings.Count(got, "\n") != len(rows)+1 || !strings.Contains(got, "OFF") || !strings.Contains(got, "8 MiB") {
		t.Errorf("table:\n%s", got)
	}
}

func TestCalibrateRatios(t *testing.T) {
	c := DefaultConfig()
	c.ImageSize = 10_000_000
	sim, err := ScaleOut(func() Config { c := c; c.VMs = 16; return c }(), FaaSNet)
	if err != nil {
		t.Fatal(err)
	}
	rows, err := Calibrate(c, []Measured{
		{Strategy: FaaSNet, VMs: 16, Makespan: sim.Makespan * 1.1},
		{Strategy: FaaSNet, VMs: 16, Makespan: sim.Makespan * 2},
	}, 0.2)
	if err != nil {
		t.Fatal(err)
	}
	if !rows[0].Within || rows[1].Within || rows[1].Ratio != 0.5 {
		t.Errorf("rows %+v", rows)
	}
}

func TestReadBenchRefuses(t *testing.T) {
	for _, tt := range []struct{ name, doc string }{
		{"not JSON", `{"scenario": `},
		{"lazy", `{"scenario": {"image_bytes": 10, "bandwidth_bytes_per_s": 1, "lazy": true}}`},
		{"no image", `{"scenario": {"bandwidth_bytes_per_s": 1}}`},
		{"unlimited links", `{"scenario": {"image_bytes": 10}}`},
		{"unknown strategy", `{"scenario": {"image_bytes": 10, "bandwidth_bytes_per_s": 1}, "results": [{"strategy": "kraken", "vms": 2}]}`},
		{"lazy strategy", `{"scenario": {"image_bytes": 10, "bandwidth_bytes_per_s": 1}, "results": [{"strategy": "ondemand", "vms": 2}]}`},
		{"no VMs", `{"scenario": {"image_bytes": 10, "bandwidth_bytes_per_s": 1}, "results": [{"strategy": "faasnet", "vms": 0}]}`},
		{"too many stripes", `{"scenario": {"image_bytes": 10, "bandwidth_bytes_per_s": 1, "stripes": 99}}`},
		{"negative makespan", `{"scenario": {"image_bytes": 10, "bandwidth_bytes_per_s": 1}, "results": [{"strategy": "faasnet", "vms": 2, "makespan_s": -1}]}`},
	} {
		if _, err := ReadBench(strings.NewReader(tt.doc)); err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
	}
}

// FuzzReadBench checks that a bench document either is refused or gives a
// configuration the simulator accepts.
func FuzzReadBench(f *testing.F) {
	seed, err := os.ReadFile("testdata/bench.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(seed)
	f.Add([]byte(`{"scenario": {"image_bytes": 10, "bandwidth_bytes_per_s": 1, "layers": 1000}}`))
	f.Add([]byte(`{"scenario": {"image_size_bytes": 1, "bandwidth_bytes_per_s": 1, "functions": 3}, "results": []}`))
	f.Add([]byte(`{"scenario": {"image_size_bytes": 1, "bandwidth_bytes_per_s": 1, "stripes": 4}, "results": []}`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		b, err := ReadBench(bytes.NewReader(doc))
		if err != nil {
			return
		}
		c := b.Config(DefaultConfig())
		c.VMs, c.Containers = 1, c.Functions
		if _, err := c.normalize(); err != nil {
			t.Fatalf("accepted %q but its config is refused: %v", doc, err)
		}
	})
}

// Runs of a bench with several stripes and blocks (faasnet-k2-b128KiB) are
// faasnet runs, each simulated with its own stripes and block.
func TestCalibrateRunsOfTheirOwn(t *testing.T) {
	doc := `{"scenario": {"image_size_bytes": 2097152, "layers": 2, "bandwidth_bytes_per_s": 1048576,
	"registry_bandwidth_bytes_per_s": 2097152, "block_size_bytes": 0},
	"results": [
	{"strategy": "faasnet-k1", "vms": 8, "makespan_s": 5, "stripes": 1, "block_size": 524288},
	{"strategy": "faasnet-k2-b128KiB", "vms": 8, "makespan_s": 3, "stripes": 2, "block_size": 131072},
	{"strategy": "faasnet-k2-bauto", "vms": 8, "makespan_s": 3, "stripes": 2, "block_size": 65536},
	{"strategy": "registry", "vms": 8, "makespan_s": 8}]}`
	b, err := ReadBench(strings.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	base := DefaultConfig()
	base.Latency = 0
	ms, _ := b.Measured()
	rows, err := Calibrate(b.Config(base), ms, 0.2)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		run      string
		strategy Strategy
		stripes  int
		block    int64
	}{
		{"faasnet-k1", FaaSNet, 1, 512 << 10},
		{"faasnet-k2-b128KiB", FaaSNet, 2, 128 << 10},
		{"faasnet-k2-bauto", FaaSNet, 2, 64 << 10},
		{"registry", Registry, 1, DefaultBlockSize},
	}
	if len(rows) != len(want) {
		t.Fatalf("%d rows, want %d", len(rows), len(want))
	}
	for i, w := range want {
		r := rows[i]
		if r.Run != w.run || r.Strategy != w.strategy || r.Stripes != w.stripes || r.BlockSize != w.block ||
			r.Result.Stripes != w.stripes || r.Result.BlockSize != w.block {
			t.Errorf("row %d: run %q strategy %s, %d stripes, block %d (simulated with %d, %d); want %q %s %d %d",
				i, r.Run, r.Strategy, r.Stripes, r.BlockSize, r.Result.Stripes, r.Result.BlockSize, w.run, w.strategy, w.stripes, w.block)
		}
	}
	if rows[1].Simulated >= rows[0].Simulated {
		t.Errorf("two stripes simulated %.2fs, one %.2fs: want faster", rows[1].Simulated, rows[0].Simulated)
	}
}
