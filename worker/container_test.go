package worker

import (
	"encoding/json"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/container"
	"github.com/faasnet/faasnet/convert"
	"github.com/faasnet/faasnet/internal/testenv"
	"github.com/faasnet/faasnet/lazy"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// pushFunctionImage pushes a plain image and its eStargz conversion.
func (c *cluster) pushFunctionImage(t *testing.T, filler int) (plain, lazyRef string) {
	t.Helper()
	img := testenv.ServerImage(t, filler)
	plain = c.reg + "/fn/server:plain"
	ref, _ := name.ParseReference(plain, name.Insecure)
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	lazyRef = c.reg + "/fn/server:lazy"
	if _, err := convert.Convert(c.ctx, plain, lazyRef, convert.WithCompressionLevel(1)); err != nil {
		t.Fatal(err)
	}
	return plain, lazyRef
}

func TestContainersStartLazilyThroughTheTree(t *testing.T) {
	testenv.NeedContainers(t)
	c := newCluster(t, time.Hour)
	plain, lazyRef := c.pushFunctionImage(t, 16<<20)
	names := []string{"vm-0", "vm-1", "vm-2"}
	run := map[string]string{}
	for _, id := range names {
		run[id] = testenv.RunDir(t)
		c.start(id, func(cfg *Config) { cfg.Containers = true; cfg.RunDir = run[id]; cfg.BlockSize = 64 << 10 })
	}
	c.waitRegistered(3)
	spec, _ := json.Marshal(api.FunctionSpec{Readiness: &api.Readiness{Path: "/healthz"}, Memory: "128MiB"})
	for fn, ref := range map[string]string{"lazy": lazyRef, "plain": plain} {
		if _, err := c.mgr.PutFunction(c.ctx, fn, api.FunctionRequest{Image: ref, Spec: spec}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.mgr.Scale(c.ctx, fn, api.ScaleRequest{VMs: names}); err != nil {
			t.Fatal(err)
		}
		c.waitReady(fn, names, 2*time.Minute)
	}
	for _, id := range names {
		for _, r := range c.workers[id].Functions() {
			// Sandboxed: the function answers on an address of its own.
			if ap, err := netip.ParseAddrPort(r.Address); err != nil || ap.Addr().IsLoopback() || ap.Port() != container.SandboxPort {
				t.Errorf("%s: function %s answers at %q (%v), want its own address, port %d", id, r.Function, r.Address, err, container.SandboxPort)
			}
			switch r.Function {
			case "lazy":
				t.Logf("%s: lazy container answered after fetching %d of %d bytes (%.1f%%)", id, r.BytesBeforeReady, r.ImageBytes, 100*float64(r.BytesBeforeReady)/float64(r.ImageBytes))
				if r.BytesBeforeReady*2 > r.ImageBytes {
					t.Errorf("%s: the lazy container needed %d of %d bytes before it answered", id, r.BytesBeforeReady, r.ImageBytes)
				}
				if r.Phases["mount"].IsZero() || r.Phases["started"].IsZero() {
					t.Errorf("%s: phases %v lack mount or started", id, r.Phases)
				}
			case "plain":
				if r.BytesBeforeReady < r.ImageBytes {
					t.Errorf("%s: plain image ready with %d of %d bytes", id, r.BytesBeforeReady, r.ImageBytes)
				}
			}
		}
	}
	// Releasing stops the containers and unmounts.
	for _, fn := range []string{"lazy", "plain"} {
		for _, id := range names {
			if err := c.mgr.Release(c.ctx, fn, id); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, id := range names {
		w := c.workers[id]
		deadline := time.Now().Add(30 * time.Second)
		for {
			// The layout of the run directory is package container's (see Host).
			out, _ := exec.Command("runc", "--root", filepath.Join(run[id], "runc"), "list", "-q").Output()
			mounted, _ := lazy.Mounted(filepath.Join(run[id], "mnt", "lazy"))
			w.mu.Lock()
			n := len(w.fns)
			w.mu.Unlock()
			if strings.TrimSpace(string(out)) == "" && !mounted && n == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s after release: containers %q, mounted %v, functions %d", id, out, mounted, n)
			}
			time.Sleep(50 * time.Millisecond) // polling the system's state, with a deadline
		}
	}
}
