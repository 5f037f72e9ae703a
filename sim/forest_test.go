package sim

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/manager"
	"github.com/faasnet/faasnet/manager/store"
)

// TestForestFollowsManager drives the real manager and the simulator's
// control plane through the same seeded random scale-outs and releases and
// checks that they pick the same VMs and build the same trees: the
// simulator's trees are the manager's.
func TestForestFollowsManager(t *testing.T) {
	const vms, functions, capacity = 40, 6, 3
	ctx := context.Background()
	m, err := manager.New(ctx, store.NewMemory(), manager.Options{VMTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	f := newForest(vms, functions, capacity)
	for i := range vms {
		c := capacity
		_, err := m.RegisterVM(ctx, f.names[i], api.RegisterRequest{Addr: fmt.Sprintf("127.0.0.1:%d", 10000+i), Capacity: &api.Capacity{Functions: c}})
		if err != nil {
			t.Fatal(err)
		}
	}
	fname := func(fn int) string { return fmt.Sprintf("fn%d", fn) }
	for fn := range functions {
		if _, err := m.PutFunction(ctx, fname(fn), api.FunctionRequest{Image: "registry.local/img:" + fname(fn)}); err != nil {
			t.Fatal(err)
		}
	}
	rng := rand.New(rand.NewPCG(3, 9))
	for step := range 600 {
		fn := rng.IntN(functions)
		members := f.fns[fn].Nodes()
		if len(members) > 0 && rng.IntN(5) < 2 {
			vm := members[rng.IntN(len(members))].VM
			if err := m.Release(ctx, fname(fn), vm); err != nil {
				t.Fatal(err)
			}
			if _, err := f.remove(int32(fn), f.index[vm]); err != nil {
				t.Fatal(err)
			}
		} else {
			free := len(f.choose(int32(fn), vms))
			if free == 0 {
				continue
			}
			count := 1 + rng.IntN(min(free, 6))
			resp, err := m.Scale(ctx, fname(fn), api.ScaleRequest{Count: count})
			if err != nil {
				t.Fatal(err)
			}
			chosen := f.choose(int32(fn), count)
			var want []string
			for _, p := range resp.Added {
				want = append(want, p.VM)
			}
			var got []string
			for _, vm := range chosen {
				got = append(got, f.names[vm])
				if _, err := f.insert(int32(fn), vm); err != nil {
					t.Fatal(err)
				}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("step %d: scaling %s by %d picked %v, the manager %v", step, fname(fn), count, got, want)
			}
		}
		for g := range functions {
			compareTree(t, step, m, fname(g), f, g)
		}
	}
}

func compareTree(t *testing.T, step int, m *manager.Manager, name string, f *forest, fn int) {
	t.Helper()
	tree, err := m.Tree(name)
	if err != nil {
		t.Fatal(err)
	}
	if len(tree.Nodes) != f.fns[fn].Len() {
		t.Fatalf("step %d: %s has %d VMs in the manager, %d here", step, name, len(tree.Nodes), f.fns[fn].Len())
	}
	for _, n := range tree.Nodes {
		want := ""
		if n.Parent != nil {
			want = *n.Parent
		}
		got, ok := f.fns[fn].Parent(n.VM)
		if !ok || got != want {
			t.Fatalf("step %d: in %s, %s has parent %q here, %q in the manager", step, name, n.VM, got, want)
		}
		if fo := f.vms[f.index[n.VM]].fanout; fo != n.Fanout {
			t.Fatalf("step %d: %s has fan-out %d here, %d in the manager", step, n.VM, fo, n.Fanout)
		}
	}
	if err := f.fns[fn].Check(); err != nil {
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
	f := newForest(c.VMs, c.Functions, c.FunctionsPerVM)
	for fn := range 3 {
		n := 833
		if fn == 0 {
			n = 834
		}
		for _, vm := range f.choose(int32(fn), n) {
			if _, err := f.insert(int32(fn), vm); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i, v := range f.vms {
		if len(v.fns) < 2 || len(v.fns) > 3 {
			t.Fatalf("VM %d hosts %d functions", i, len(v.fns))
		}
	}
}
