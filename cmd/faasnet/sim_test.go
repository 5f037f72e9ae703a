package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// simJSON is the part of faasnet sim --json that the tests read.
type simJSON struct {
	Config struct {
		ReadChain   int   `json:"read_chain"`
		ReadLatency int64 `json:"read_latency"` // ns
	} `json:"config"`
	Results []struct {
		Strategy    string    `json:"strategy"`
		ReadChain   int       `json:"read_chain"`
		ReadLatency float64   `json:"read_latency_s"`
		ReadyTimes  []float64 `json:"ready_times_s"`
	} `json:"results"`
}

// runSimCmd runs faasnet sim with args and returns its JSON results.
func runSimCmd(t *testing.T, args ...string) simJSON {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sim.json")
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetArgs(append([]string{"sim", "--json", path}, args...))
	if err := root.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("faasnet sim %v: %v\n%s", args, err, out.String())
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc simJSON
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("%v:\n%s", err, raw)
	}
	return doc
}

// TestSimReadChain runs faasnet sim with and without --read-chain 40
// --read-latency 5ms: each lazy start (faasnet-lazy, ondemand) comes 40 x
// 5 ms = 0.2 s later, whole fetches not at all, and the JSON's config and
// every result say what chain they ran with. The simulator is
// deterministic, so the two runs differ only by the chain.
func TestSimReadChain(t *testing.T) {
	common := []string{"--vms", "8", "--image-size", "64MiB", "--resolution", "1us", "--strategies", "faasnet-lazy,ondemand,faasnet"}
	base := runSimCmd(t, common...)
	chained := runSimCmd(t, append(common, "--read-chain", "40", "--read-latency", "5ms")...)
	if base.Config.ReadChain != 0 || base.Config.ReadLatency != 0 {
		t.Errorf("config without the flags: read chain %d, latency %d ns; want 0 and 0", base.Config.ReadChain, base.Config.ReadLatency)
	}
	if chained.Config.ReadChain != 40 || chained.Config.ReadLatency != 5e6 {
		t.Errorf("config: read chain %d, latency %d ns; want 40 and 5000000", chained.Config.ReadChain, chained.Config.ReadLatency)
	}
	want := map[string]float64{"faasnet-lazy": 0.2, "ondemand": 0.2, "faasnet": 0}
	if len(chained.Results) != len(want) || len(base.Results) != len(want) {
		t.Fatalf("%d results with the chain, %d without; want %d", len(chained.Results), len(base.Results), len(want))
	}
	for i, got := range chained.Results {
		b := base.Results[i]
		later, ok := want[got.Strategy]
		if !ok || got.Strategy != b.Strategy {
			t.Fatalf("result %d: %s with the chain, %s without", i, got.Strategy, b.Strategy)
		}
		if got.ReadChain != 40 || got.ReadLatency != 0.005 || b.ReadChain != 0 || b.ReadLatency != 0 {
			t.Errorf("%s: read chain %d, latency %v s with the flags, %d and %v s without; want 40, 0.005, 0, 0",
				got.Strategy, got.ReadChain, got.ReadLatency, b.ReadChain, b.ReadLatency)
		}
		if len(got.ReadyTimes) != 8 || len(b.ReadyTimes) != 8 {
			t.Fatalf("%s: %d starts with the chain, %d without; want 8", got.Strategy, len(got.ReadyTimes), len(b.ReadyTimes))
		}
		for j := range got.ReadyTimes {
			// Rounding to the 1 µs resolution may add a step per event.
			if d := got.ReadyTimes[j] - b.ReadyTimes[j]; math.Abs(d-later) > 1e-5 {
				t.Errorf("%s: start %d at %.6f s with the chain, %.6f s without; want %.3f s later", got.Strategy, j, got.ReadyTimes[j], b.ReadyTimes[j], later)
				break
			}
		}
	}
}

// TestSimRefusesNegativeReads: a negative --read-chain or --read-latency is
// refused, naming the flag and its value, in every mode of sim.
func TestSimRefusesNegativeReads(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"--read-chain", "-1"}, "--read-chain -1: must not be negative"},
		{[]string{"--read-latency", "-2ms"}, "--read-latency -2ms: must not be negative"},
		{[]string{"--read-chain", "-3", "--trace", t.TempDir()}, "--read-chain -3: must not be negative"},
		{[]string{"--read-latency", "-1s", "--calibrate", filepath.Join(t.TempDir(), "none.json")}, "--read-latency -1s: must not be negative"},
	} {
		root := newRoot()
		root.SetOut(&bytes.Buffer{})
		root.SetArgs(append([]string{"sim"}, tt.args...))
		err := root.ExecuteContext(context.Background())
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("sim %v: err %v, want %q", tt.args, err, tt.want)
		}
	}
}
