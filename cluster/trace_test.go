package cluster

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/faasnet/faasnet/burst"
	"github.com/faasnet/faasnet/internal/testenv"
	"github.com/faasnet/faasnet/sim"
)

// TestRunTrace replays a five-minute schedule on three VMs with every
// strategy that can: f0 runs one instance (warm at the start) and scales
// out to two in minute 1, when f1 starts one too; all three are reclaimed
// in minute 3 (idle a whole minute) and f1 starts again in minute 4, on a
// VM that was recycled. Every cold start becomes ready and fetched bytes of
// its own (a recycled VM keeps nothing); with trees, f0's holds two VMs.
// faasnet runs once more with real containers (runc over lazy mounts)
// instead of replayed reads.
func TestRunTrace(t *testing.T) {
	testenv.NeedContainers(t)
	ctx := context.Background()
	h := newHarness(t, Scenario{BlockSize: 64 << 10, Seed: 1}, Options{Function: serverFunction(t), RunDir: testenv.RunDir(t)})
	rec, err := h.RecordReads(ctx, 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	tr := &sim.Trace{Minutes: 5, Functions: []sim.TraceFunction{
		{Invocations: []int{1, 2, 0, 0, 0}, AvgMillis: 60000},
		{Invocations: []int{0, 1, 0, 0, 1}, AvgMillis: 60000},
	}}
	sched, err := burst.NewSchedule(tr, 3, 1, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if sched.ColdStarts != 3 || sched.Warm != 1 || sched.Rejected != 0 {
		t.Fatalf("schedule: %d cold starts, %d warm, %d rejected; want 3, 1, 0: %v", sched.ColdStarts, sched.Warm, sched.Rejected, sched.Events)
	}
	tests := []struct {
		strategy   string
		tree       int
		containers bool // start the containers instead of replaying reads
	}{
		{"faasnet", 2, false},
		{"ondemand", 1, false},
		{"registry", 1, false},
		{"faasnet", 2, true},
	}
	for _, tt := range tests {
		name := tt.strategy
		if tt.containers {
			name += "/containers"
		}
		t.Run(name, func(t *testing.T) {
			s, err := StrategyByName(tt.strategy)
			if err != nil {
				t.Fatal(err)
			}
			opts := TraceOptions{Minute: 2 * time.Second, Drain: 30 * time.Second, Replay: rec.Reads}
			if tt.containers {
				opts.Minute, opts.Replay = 5*time.Second, nil
			}
			res, err := h.RunTrace(ctx, s, 3, sched, opts)
			if err != nil {
				t.Fatal(err)
			}
			var minutes []int
			for _, st := range res.Starts {
				minutes = append(minutes, st.Minute)
				if st.LatencyS <= 0 || st.Fetched <= 0 || st.Err != "" {
					t.Errorf("start %+v: want ready after some time, with bytes fetched", st)
				}
			}
			if !slices.Equal(minutes, []int{1, 1, 4}) || res.Warm != 1 {
				t.Errorf("cold starts in minutes %v, %d warm; want [1 1 4] and 1", minutes, res.Warm)
			}
			if res.PeakTree != tt.tree {
				t.Errorf("peak tree %d, want %d", res.PeakTree, tt.tree)
			}
			if res.RegistryEgress <= 0 || res.Replayed == tt.containers {
				t.Errorf("registry egress %d, replayed %v", res.RegistryEgress, res.Replayed)
			}
			t.Logf("%s: latencies %v, egress %d, lag %.3fs", tt.strategy, res.Latencies(), res.RegistryEgress, res.LagS)
		})
	}
}
