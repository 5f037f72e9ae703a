package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/faasnet/faasnet/stripe"
)

// small is a scenario small enough for -race on a busy 2-core machine.
var small = Scenario{ImageSize: 4 << 20, Layers: 3, Bandwidth: 16 << 20, RegistryBandwidth: 32 << 20, BlockSize: 128 << 10, PieceSize: 512 << 10, Seed: 7}

func newHarness(t *testing.T, sc Scenario, opts Options) *Harness {
	t.Helper()
	opts.Dir = t.TempDir()
	h, err := New(context.Background(), sc, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func run(t *testing.T, h *Harness, name string, vms int) *Result {
	t.Helper()
	s, err := StrategyByName(name)
	if err != nil {
		t.Fatal(err)
	}
	res, err := h.Run(context.Background(), s, vms, RunOptions{Timeout: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res.Reports {
		if !r.Correct {
			t.Errorf("%s: %s not correct: %s", name, r.VM, r.Err)
		}
		// Manifests left out: a faasnet root sometimes reports its
		// manifest's bytes, sometimes not (worker accounting, not ours;
		// the registry's count below is exact).
		if r.Received < blobBytes(h) {
			t.Errorf("%s: %s received %d bytes, want at least the %d of the blobs", name, r.VM, r.Received, blobBytes(h))
		}
	}
	if res.Failed != 0 || len(res.Reports) != vms {
		t.Fatalf("%s: %d of %d VMs failed (%d reports): %s", name, res.Failed, vms, len(res.Reports), res.Err)
	}
	t.Logf("%s on %d VMs: makespan %v (first %v), lower bound %v, efficiency %.2f, registry egress %d, busiest upload %d, CPU %.0f%%",
		name, vms, res.Makespan, res.FirstReady, res.LowerBound, res.Efficiency, res.RegistryEgress, res.MaxVMUpload, 100*res.CPU)
	// The emulated links hold: nothing beats the lower bound but by the
	// limiters' initial bursts, a twentieth of a second of traffic each
	// (bwlimit), and timer jitter. With a lower bound of a quarter second
	// (TestFaasnetOverlappingFunctions) a burst alone is 20% of it.
	if res.Makespan < res.LowerBound*95/100-time.Second/20 {
		t.Errorf("%s: efficiency %.2f: makespan %v under the lower bound %v", name, res.Efficiency, res.Makespan, res.LowerBound)
	}
	return res
}

// blobBytes is the size of the images without their manifests.
func blobBytes(h *Harness) int64 {
	var n int64
	for _, im := range h.Images() {
		n += im.Bytes() - im.Manifest.Size
	}
	return n
}

func TestStrategiesDeliverTheImage(t *testing.T) {
	const vms = 6
	h := newHarness(t, small, Options{})
	size := h.ImageBytes()
	tests := []struct {
		strategy string
		// egress is the registry egress the strategy must cause, in
		// images; 0 means at least one image, at most vms.
		egress  int64
		uploads bool // VMs upload to each other
	}{
		{strategy: "faasnet", egress: 1, uploads: true},
		{strategy: "registry", egress: vms, uploads: false},
		{strategy: "swarm", uploads: true},
	}
	for _, tt := range tests {
		t.Run(tt.strategy, func(t *testing.T) {
			res := run(t, h, tt.strategy, vms)
			if tt.egress == 0 && (res.RegistryEgress < size-res.ImageBytes/2 || res.RegistryEgress > vms*size) {
				t.Errorf("registry egress %d bytes, want between about one image (%d) and %d", res.RegistryEgress, size, vms*size)
			}
			if tt.egress != 0 && res.RegistryEgress != tt.egress*size {
				t.Errorf("registry egress %d bytes, want %d (%d images of %d)", res.RegistryEgress, tt.egress*size, tt.egress, size)
			}
			if got := res.MaxVMUpload > 0; got != tt.uploads {
				t.Errorf("busiest VM uploaded %d bytes; uploads expected: %v", res.MaxVMUpload, tt.uploads)
			}
			if res.Received < vms*blobBytes(h) || tt.strategy == "registry" && res.Received != vms*size {
				t.Errorf("VMs received %d bytes together, want %d", res.Received, vms*size)
			}
			if res.P50 > res.P90 || res.P90 > res.P99 || res.P99 > res.Makespan || res.FirstReady > res.P50 {
				t.Errorf("ready times out of order: first %v p50 %v p90 %v p99 %v makespan %v", res.FirstReady, res.P50, res.P90, res.P99, res.Makespan)
			}
		})
	}
}

func TestFaasnetOverlappingFunctions(t *testing.T) {
	sc := small
	sc.Functions = 2
	sc.ImageSize = 2 << 20
	h := newHarness(t, sc, Options{})
	if len(h.Images()) != 2 || h.Images()[0].Manifest.Digest == h.Images()[1].Manifest.Digest {
		t.Fatalf("want two different images, got %+v", h.Images())
	}
	res := run(t, h, "faasnet", 5)
	if res.RegistryEgress != h.ImageBytes() {
		t.Errorf("registry egress %d bytes, want each image once: %d", res.RegistryEgress, h.ImageBytes())
	}
	if len(res.Trees) != 2 {
		t.Errorf("%d trees, want one per function", len(res.Trees))
	}
	for _, tr := range res.Trees {
		if len(tr.Nodes) != 5 {
			t.Errorf("tree of %s has %d VMs, want 5", tr.Function, len(tr.Nodes))
		}
	}
}

// TestRunCleansUp: after runs of every strategy and Close, no goroutine the
// harness started is left and the runs' directories are gone.
func TestRunCleansUp(t *testing.T) {
	dir := t.TempDir()
	before := runtime.NumGoroutine()
	h, err := New(context.Background(), small, Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range Strategies() {
		s, _ := StrategyByName(name)
		_, err := h.Run(context.Background(), s, 3, RunOptions{Timeout: time.Minute})
		if name == "ondemand" || name == "containerd" { // need a function (TestOnDemandNeedsAFunction); they must clean up all the same
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("left in the harness directory: %v", left)
	}
	// Connections closed by the servers end their client goroutines
	// asynchronously: poll, with a deadline.
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestVMHosts(t *testing.T) {
	if !ownLoopback() {
		t.Skip("only 127.0.0.1 can be bound here")
	}
	seen := map[string]bool{}
	for i := range 70000 {
		h := vmHost(i)
		if seen[h] {
			t.Fatalf("VM %d shares %s", i, h)
		}
		seen[h] = true
		if ip := net.ParseIP(h); ip == nil || !ip.IsLoopback() || h == "127.0.0.1" {
			t.Fatalf("VM %d: %q is not a loopback address of its own", i, h)
		}
	}
}

// probed is a strategy whose deployments are checked before they
// provision.
type probed struct {
	Strategy
	check func(Deployment)
}

func (p probed) Deploy(ctx context.Context, env *Env) (Deployment, error) {
	d, err := p.Strategy.Deploy(ctx, env)
	if err == nil {
		p.check(d)
	}
	return d, err
}

// The faasnet strategy runs as production does, over TLS: the manager's
// URL is https and a worker's listener answers no client without a
// cluster certificate. The plaintext variant, for measuring TLS's cost,
// answers anyone.
func TestFaasnetRunsOverTLS(t *testing.T) {
	h := newHarness(t, small, Options{})
	insecure := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // only to show the server wants a certificate
	}}
	for _, plaintext := range []bool{false, true} {
		check := func(dep Deployment) {
			d := dep.(*workerDeployment)
			if got := strings.HasPrefix(d.client.Base, "https://"); got == plaintext {
				t.Errorf("plaintext %v: manager URL %s", plaintext, d.client.Base)
			}
			addr := d.workers[0].Addr()
			_, tlsErr := insecure.Get("https://" + addr + "/healthz")
			resp, plainErr := http.Get("http://" + addr + "/healthz")
			if plainErr == nil {
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					plainErr = errors.New(resp.Status)
				}
			}
			switch {
			case !plaintext && tlsErr == nil:
				t.Errorf("a worker answered a TLS client without a certificate")
			case !plaintext && plainErr == nil:
				t.Errorf("a worker answered plain HTTP")
			case plaintext && plainErr != nil:
				t.Errorf("a plaintext worker did not answer plain HTTP: %v", plainErr)
			}
		}
		res, err := h.Run(context.Background(), probed{Faasnet{Plaintext: plaintext}, check}, 2, RunOptions{Timeout: time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if res.Failed != 0 {
			t.Errorf("plaintext %v: %d VMs failed: %s", plaintext, res.Failed, res.Err)
		}
	}
}

// The block the manager assigns is the scenario's, the strategy's own, or
// with AutoBlock its pick for the image (stripe.BlockFor), and the result
// says which it was.
func TestFaasnetBlock(t *testing.T) {
	const vms = 4
	h := newHarness(t, small, Options{})
	tests := []struct {
		s    Faasnet
		want int64
	}{
		{Faasnet{Stripes: 2}, small.BlockSize},
		{Faasnet{Stripes: 2, Block: 256 << 10}, 256 << 10},
		{Faasnet{Stripes: 2, Block: AutoBlock}, stripe.BlockFor(small.ImageSize, small.Layers, 2, 2)},
	}
	for _, tt := range tests {
		t.Run(tt.s.Name(), func(t *testing.T) {
			res, err := h.Run(context.Background(), tt.s, vms, RunOptions{Timeout: 2 * time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			if res.Failed != 0 {
				t.Fatalf("%d VMs failed: %s", res.Failed, res.Err)
			}
			if res.BlockSize != tt.want {
				t.Errorf("assigned block %d, want %d", res.BlockSize, tt.want)
			}
		})
	}
}
