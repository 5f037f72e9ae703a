package sim

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/digest"
	"github.com/faasnet/faasnet/manager"
	"github.com/faasnet/faasnet/manager/store"
)

// TestControlPlaneFollowsManager drives the real manager and the
// simulator's control plane through the same seeded random scale-outs and
// releases and checks that they pick the same VMs and build the same
// trees. Both keep their state in a forest.Forest; this checks the glue
// around it: names, placement's inputs, the partial choose.
// fakePins pins every image to the digest of its name: these images exist
// in no registry, and what runs is not what this test checks.
var fakePins = manager.PinFunc(func(_ context.Context, image string) (string, error) {
	return digest.Of([]byte(image)).String(), nil
})

func TestControlPlaneFollowsManager(t *testing.T) {
	const vms, functions, capacity = 40, 6, 3
	ctx := context.Background()
	m, err := manager.New(ctx, store.NewMemory(), manager.Options{VMTimeout: time.Hour, Pinner: fakePins})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	cp := newControlPlane(vms, functions, capacity, 1, false)
	for i := range vms {
		_, err := m.RegisterVM(ctx, cp.names[i], api.RegisterRequest{Addr: fmt.Sprintf("127.0.0.1:%d", 10000+i), Capacity: &api.Capacity{Functions: capacity}})
		if err != nil {
			t.Fatal(err)
		}
	}
	for fn := range functions {
		if _, err := m.PutFunction(ctx, cp.fnNames[fn], api.FunctionRequest{Image: "registry.local/img:" + cp.fnNames[fn]}); err != nil {
			t.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(3, 9))
	for step := range 600 {
		fn := int32(rng.IntN(functions))
		name := cp.fnNames[fn]
		members := cp.trees[fn].Nodes(0)
		if len(members) > 0 && rng.IntN(5) < 2 {
			vm := members[rng.IntN(len(members))].VM
			if err := m.Release(ctx, name, vm); err != nil {
				t.Fatal(err)
			}
			if _, err := cp.remove(fn, cp.index[vm]); err != nil {
				t.Fatal(err)
			}
		} else {
			free := len(cp.choose(fn, vms))
			if free == 0 {
				continue
			}
			count := 1 + rng.IntN(min(free, 6))
			resp, err := m.Scale(ctx, name, api.ScaleRequest{Count: count})
			if err != nil {
				t.Fatal(err)
			}
			var want, got []string
			for _, p := range resp.Added {
				want = append(want, p.VM)
			}
			for _, vm := range cp.choose(fn, count) {
				got = append(got, cp.names[vm])
				if _, err := cp.insert(fn, vm); err != nil {
					t.Fatal(err)
				}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("step %d: scaling %s by %d picked %v, the manager %v", step, name, count, got, want)
			}
		}
		for g := range functions {
			compareTree(t, step, m, cp, int32(g))
		}
	}
}

func compareTree(t *testing.T, step int, m *manager.Manager, cp *controlPlane, fn int32) {
	t.Helper()
	name := cp.fnNames[fn]
	tree, err := m.Tree(name)
	if err != nil {
		t.Fatal(err)
	}
	if len(tree.Nodes) != cp.trees[fn].Len() {
		t.Fatalf("step %d: %s has %d VMs in the manager, %d here", step, name, len(tree.Nodes), cp.trees[fn].Len())
	}
	for _, n := range tree.Nodes {
		want := int32(-1)
		if n.Parent != nil {
			want = cp.index[*n.Parent]
		}
		if got := cp.parent(fn, cp.index[n.VM], 0); got != want {
			t.Fatalf("step %d: in %s, %s has parent %d here, %d in the manager", step, name, n.VM, got, want)
		}
		if fo := cp.fanout(cp.index[n.VM]); fo != n.Fanout {
			t.Fatalf("step %d: %s has fan-out %d here, %d in the manager", step, n.VM, fo, n.Fanout)
		}
	}
	if err := cp.check(fn); err != nil {
		t.Fatalf("step %d: %s: %v", step, name, err)
	}
}

// TestPaperPlacement checks the 2,500-on-1,000 shape: three functions of
// 833 or 834 containers land 2 or 3 on every VM.
func TestPaperPlacement(t *testing.T) {
	c := DefaultConfig()
	c.VMs, c.Containers = 1000, 2500
	c, err := c.normalize()
	if err != nil {
		t.Fatal(err)
	}
	if c.Functions != 3 {
		t.Fatalf("functions = %d, want 3", c.Functions)
	}
	cp := newControlPlane(c.VMs, c.Functions, c.FunctionsPerVM, 1, false)
	for fn := range int32(3) {
		n := 833
		if fn == 0 {
			n = 834
		}
		for _, vm := range cp.choose(fn, n) {
			if _, err := cp.insert(fn, vm); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range int32(c.VMs) {
		if l := cp.load(i); l < 2 || l > 3 {
			t.Fatalf("VM %d hosts %d functions", i, l)
		}
	}
}
