package cluster

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/imagegen"
	"github.com/faasnet/faasnet/internal/testenv"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// serverFunction is a small function: runtime's test server (answers
// /healthz on $PORT) in an image with 8 MiB it never reads.
func serverFunction(t *testing.T) *Function {
	t.Helper()
	img := testenv.ServerImage(t, 8<<20)
	return &Function{Image: img, Spec: api.FunctionSpec{Readiness: &api.Readiness{Path: "/healthz"}, Memory: "64MiB"}}
}

// TestFunctionStrategies runs a function's container on a few VMs with
// each strategy that can: faasnet and ondemand over lazy mounts of the
// eStargz image, registry by pulling and unpacking the plain image. (The
// Python function runs in report's TestLazyDemo.)
func TestFunctionStrategies(t *testing.T) {
	testenv.NeedContainers(t)
	ctx := context.Background()
	fn := serverFunction(t)
	var progress strings.Builder
	fn.Progress = &progress
	runDir := testenv.RunDir(t)
	// Links unlimited: this checks what each strategy does, not how fast.
	h := newHarness(t, Scenario{BlockSize: 64 << 10, Seed: 1}, Options{Function: fn, RunDir: runDir})
	t.Logf("preparing the function:\n%s", progress.String())
	if !h.Containers() || len(h.Images()) != 1 || len(h.PlainImages()) != 1 {
		t.Fatalf("harness with a function: containers %v, %d images, %d plain", h.Containers(), len(h.Images()), len(h.PlainImages()))
	}
	lazyBytes, plainBytes := h.Images()[0].Bytes(), h.PlainImages()[0].Bytes()

	tests := []struct {
		strategy string
		vms      int
		phase    string // the phase between manifest and started
		image    int64  // the bytes of the image the strategy uses
		tree     bool   // VMs other than the root fetch from their parent
	}{
		{strategy: "faasnet", vms: 3, phase: "mount", image: lazyBytes, tree: true},
		{strategy: "ondemand", vms: 2, phase: "mount", image: lazyBytes},
		{strategy: "registry", vms: 2, phase: "unpacked", image: plainBytes},
		// containerd's CRI and the faasnet snapshotter: PullImage mounts
		// the layers lazily, and BytesBeforeReady is what the node read.
		{strategy: "containerd", vms: 3, phase: "pulled", image: lazyBytes, tree: true},
	}
	for _, tt := range tests {
		t.Run(tt.strategy, func(t *testing.T) {
			if tt.strategy == "containerd" {
				testenv.NeedTool(t, "containerd")
				testenv.NeedTool(t, "ctr")
			}
			s, err := StrategyByName(tt.strategy)
			if err != nil {
				t.Fatal(err)
			}
			res, err := h.Run(ctx, s, tt.vms, RunOptions{Timeout: 2 * time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			if res.Failed != 0 || len(res.Reports) != tt.vms {
				t.Fatalf("%d of %d VMs failed (%d reports): %s %+v", res.Failed, tt.vms, len(res.Reports), res.Err, res.Reports)
			}
			if !res.Containers || res.ImageBytes != tt.image {
				t.Errorf("containers %v, image bytes %d; want true and %d", res.Containers, res.ImageBytes, tt.image)
			}
			if got := len(res.Trees) > 0; got != tt.tree {
				t.Errorf("%d trees; want a tree: %v", len(res.Trees), tt.tree)
			}
			roots := stripeRoots(res)
			for i, r := range res.Reports {
				checkFunctionVM(t, r, res.Phases[i], tt.phase, tt.image)
				alone := roots[r.VM] || !tt.tree
				if alone != (r.FromRegistry > 0) {
					t.Errorf("%s: %d bytes from the registry; a stripe's root or alone: %v", r.VM, r.FromRegistry, alone)
				}
			}
			if res.LowerBound != 0 || res.Efficiency != 0 {
				t.Errorf("links unlimited, yet lower bound %v, efficiency %v", res.LowerBound, res.Efficiency)
			}
			t.Logf("%s on %d VMs: makespan %v, bytes before ready %d of %d, registry egress %d",
				tt.strategy, tt.vms, res.Makespan, res.Reports[0].BytesBeforeReady, res.ImageBytes, res.RegistryEgress)
		})
	}
	t.Run("swarm", func(t *testing.T) {
		if _, err := h.Run(ctx, Swarm{}, 2, RunOptions{}); err == nil || !strings.Contains(err.Error(), "container") {
			t.Errorf("swarm with a function: err %v, want one saying it cannot start containers", err)
		}
	})
	// Every run stopped its containers and unmounted: nothing is left.
	if left, _ := os.ReadDir(runDir); len(left) != 0 {
		t.Errorf("left in the run directory: %v", left)
	}
}

// checkFunctionVM checks one VM of a run with containers: it went through
// the phases in order, with the image's own (mount or unpacked), and
// fetched before ready less than half of a lazy image (not the file the
// function never reads) or all of a plain one.
func checkFunctionVM(t *testing.T, r VMReport, phases map[string]time.Duration, middle string, image int64) {
	t.Helper()
	if !r.Correct || r.Ready.IsZero() {
		t.Errorf("%s: not ready or not correct: %s", r.VM, r.Err)
	}
	order := []string{"assigned", "manifest", middle, "started", "ready"}
	for i, p := range order {
		if _, ok := phases[p]; !ok {
			t.Errorf("%s: no phase %q in %v", r.VM, p, phases)
			continue
		}
		if i > 0 && phases[p] < phases[order[i-1]] {
			t.Errorf("%s: phase %s at %v before %s at %v", r.VM, p, phases[p], order[i-1], phases[order[i-1]])
		}
	}
	for _, other := range []string{"mount", "unpacked", "pulled"} {
		if _, ok := phases[other]; ok && other != middle {
			t.Errorf("%s: phase %q in a run that should have %q: %v", r.VM, other, middle, phases)
		}
	}
	switch frac := float64(r.BytesBeforeReady) / float64(image); {
	case (middle == "mount" || middle == "pulled") && (frac <= 0 || frac > 0.5):
		t.Errorf("%s: fetched %d bytes (%.1f%% of the image) before ready, want some and not the 8 MiB never read", r.VM, r.BytesBeforeReady, 100*frac)
	case middle == "unpacked" && float64(r.BytesBeforeReady) < 0.99*float64(image):
		t.Errorf("%s: fetched %d bytes before ready, want the whole image, %d", r.VM, r.BytesBeforeReady, image)
	}
}

// TestOnDemandNeedsAFunction: without a function to run there is nothing
// to fetch lazily, and ondemand says so instead of measuring a registry
// pull under another name.
func TestOnDemandNeedsAFunction(t *testing.T) {
	h := newHarness(t, small, Options{})
	_, err := h.Run(context.Background(), OnDemand{}, 2, RunOptions{Timeout: time.Minute})
	if err == nil || !strings.Contains(err.Error(), "function") {
		t.Fatalf("ondemand without a function: err %v", err)
	}
}

func TestFunctionNeedsReadiness(t *testing.T) {
	_, err := New(context.Background(), small, Options{Function: &Function{Spec: api.FunctionSpec{Memory: "64MiB"}}})
	if err == nil || !strings.Contains(err.Error(), "readiness") {
		t.Fatalf("a function without a readiness check: err %v", err)
	}
}

func TestNeededBytes(t *testing.T) {
	tests := []struct {
		name       string
		containers bool
		before     []int64
		want       int64
	}{
		{name: "images only", before: []int64{10, 20}, want: 1000},
		{name: "containers: the least", containers: true, before: []int64{30, 10, 20}, want: 10},
		{name: "containers: unknown counts left out", containers: true, before: []int64{0, 40, 0}, want: 40},
		{name: "containers: none known", containers: true, before: []int64{0, 0}, want: 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &Result{ImageBytes: 1000, Containers: tt.containers}
			for _, b := range tt.before {
				r.Reports = append(r.Reports, VMReport{BytesBeforeReady: b})
			}
			if got := r.neededBytes(); got != tt.want {
				t.Errorf("neededBytes = %d, want %d", got, tt.want)
			}
		})
	}
}

// TestConvertCache: a conversion stored in the cache loads back as the
// same image, and a missing or damaged entry is an error, not an image.
func TestConvertCache(t *testing.T) {
	img := mustGenerate(t)
	dir := filepath.Join(t.TempDir(), "cache", "entry")
	if _, err := loadConverted(dir); err == nil {
		t.Fatal("loaded an entry never stored")
	}
	if _, err := loadConverted(""); err == nil {
		t.Fatal("loaded from no cache")
	}
	if err := storeConverted(dir, img); err != nil {
		t.Fatal(err)
	}
	// Storing again (another process did meanwhile) is fine.
	if err := storeConverted(dir, img); err != nil {
		t.Fatalf("storing twice: %v", err)
	}
	got, err := loadConverted(dir)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := img.Digest()
	if d, _ := got.Digest(); d != want {
		t.Errorf("loaded %s, stored %s", d, want)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(dir), "tmp-*")); len(left) != 0 {
		t.Errorf("scratch directories left: %v", left)
	}
	os.Remove(filepath.Join(dir, "index.json"))
	if _, err := loadConverted(dir); err == nil {
		t.Error("loaded an entry without its index")
	}
}

// mustGenerate returns a small generated image.
func mustGenerate(t *testing.T) v1.Image {
	t.Helper()
	img, err := imagegen.Image(imagegen.Spec{TotalSize: 1 << 20, Layers: 2, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// stripeRoots are the roots of the first function's stripe trees: each
// fetches its stripe from the registry.
func stripeRoots(res *Result) map[string]bool {
	roots := map[string]bool{}
	if len(res.Trees) > 0 {
		for _, st := range res.Trees[0].StripeTrees() {
			if st.Root != nil {
				roots[*st.Root] = true
			}
		}
	}
	return roots
}
