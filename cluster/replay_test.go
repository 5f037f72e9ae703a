package cluster

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/faasnet/faasnet/internal/testenv"
)

// TestRecordAndReplayReads records what the function's container reads on
// one VM (real runc over a real FUSE mount, blobs from a real registry),
// then replays those reads on VMs of every strategy with no container: a
// VM is ready once its reads completed, fetched through its worker's lazy
// path, so that in a tree only the root asked the registry; a whole fetch
// is ready with the whole image.
func TestRecordAndReplayReads(t *testing.T) {
	testenv.NeedContainers(t)
	ctx := context.Background()
	runDir := testenv.RunDir(t)
	h := newHarness(t, Scenario{BlockSize: 64 << 10, Seed: 1}, Options{Function: serverFunction(t), RunDir: runDir})
	lazyBytes, plainBytes := h.Images()[0].Bytes(), h.PlainImages()[0].Bytes()

	rec, err := h.RecordReads(ctx, 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	// The footer and TOC are read first; the 8 MiB filler never.
	if rec.Bytes <= 0 || rec.Bytes > lazyBytes/2 {
		t.Fatalf("recorded %d bytes in %d reads of a %d-byte image; want some, and not the filler", rec.Bytes, len(rec.Reads), lazyBytes)
	}
	t.Logf("recorded %d reads, %d bytes, container answered after %v", len(rec.Reads), rec.Bytes, rec.Took)

	tests := []struct {
		strategy string
		vms      int
		tree     bool
		whole    int64 // a whole fetch: the image's bytes
	}{
		{strategy: "faasnet", vms: 3, tree: true},
		{strategy: "ondemand", vms: 2},
		{strategy: "registry", vms: 2, whole: plainBytes},
	}
	for _, tt := range tests {
		t.Run(tt.strategy, func(t *testing.T) {
			s, err := StrategyByName(tt.strategy)
			if err != nil {
				t.Fatal(err)
			}
			res, err := h.Run(ctx, s, tt.vms, RunOptions{Timeout: time.Minute, Replay: rec.Reads})
			if err != nil {
				t.Fatal(err)
			}
			if res.Failed != 0 || !res.Replayed {
				t.Fatalf("%d of %d VMs failed, replayed %v: %s %+v", res.Failed, tt.vms, res.Replayed, res.Err, res.Reports)
			}
			roots := stripeRoots(res)
			for i, r := range res.Reports {
				ph := res.Phases[i]
				if _, ok := ph["replayed"]; !ok || ph["replayed"] > ph["ready"] {
					t.Errorf("%s: phases %v, want replayed before ready", r.VM, ph)
				}
				for _, p := range []string{"mount", "unpacked", "started"} {
					if _, ok := ph[p]; ok {
						t.Errorf("%s: phase %s in a replay: %v", r.VM, p, ph)
					}
				}
				switch {
				case tt.whole > 0 && float64(r.BytesBeforeReady) < 0.99*float64(tt.whole):
					t.Errorf("%s: fetched %d bytes before ready, want the whole image, %d", r.VM, r.BytesBeforeReady, tt.whole)
				case tt.whole == 0 && (r.BytesBeforeReady < rec.Bytes || r.BytesBeforeReady > lazyBytes/2):
					t.Errorf("%s: fetched %d bytes before ready; the reads are %d bytes of %d", r.VM, r.BytesBeforeReady, rec.Bytes, lazyBytes)
				}
				if alone := roots[r.VM] || !tt.tree; alone != (r.FromRegistry > 0) {
					t.Errorf("%s: %d bytes from the registry; a stripe's root or alone: %v", r.VM, r.FromRegistry, alone)
				}
			}
			t.Logf("%s on %d VMs: makespan %v, bytes before ready %d", tt.strategy, tt.vms, res.Makespan, res.Reports[0].BytesBeforeReady)
		})
	}
	if left, _ := os.ReadDir(runDir); len(left) != 0 {
		t.Errorf("left in the run directory: %v", left)
	}
}
