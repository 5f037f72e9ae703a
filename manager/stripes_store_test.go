package manager

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/ftree"
	"github.com/faasnet/faasnet/manager/store"
)

// TestStripedStoreFollowsEveryStep checks, after every scale-out and
// release of a random stream on functions of 2 and 3 stripes, that the
// layout the store holds is the one in memory: a manager writes only the
// nodes a step may have changed, and one it missed would restore another
// tree after a restart or a failover.
func TestStripedStoreFollowsEveryStep(t *testing.T) {
	ctx := t.Context()
	st := store.NewMemory()
	m, err := New(ctx, st, Options{VMTimeout: time.Hour, Pinner: fakePins})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for i := range 40 {
		if _, err := m.RegisterVM(ctx, fmt.Sprintf("vm-%02d", i), api.RegisterRequest{Addr: "10.0.0.1:7071"}); err != nil {
			t.Fatal(err)
		}
	}
	ks := map[string]int{"f2": 2, "f3": 3}
	for fn, k := range ks {
		if _, err := m.PutFunction(ctx, fn, api.FunctionRequest{Image: "reg/f:1", Stripes: k}); err != nil {
			t.Fatal(err)
		}
	}
	r := rand.New(rand.NewPCG(7, 13))
	for step := range 300 {
		fn := []string{"f2", "f3"}[r.IntN(2)]
		tree, err := m.Tree(fn)
		if err != nil {
			t.Fatal(err)
		}
		if len(tree.Nodes) == 0 || len(tree.Nodes) < 30 && r.IntN(2) == 0 {
			if _, err := m.Scale(ctx, fn, api.ScaleRequest{Count: 1 + r.IntN(3)}); err != nil {
				t.Fatal(err)
			}
		} else if err := m.Release(ctx, fn, tree.Nodes[r.IntN(len(tree.Nodes))].VM); err != nil {
			t.Fatal(err)
		}
		s, err := st.Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for fn, k := range ks {
			var nodes []store.Node
			for _, n := range s.Nodes {
				if n.Function == fn {
					nodes = append(nodes, n)
				}
			}
			stored, err := store.Layout(k, nodes)
			if err != nil {
				t.Fatalf("step %d: the stored layout of %s: %v", step, fn, err)
			}
			m.mu.Lock()
			mem := m.fns[fn].tree.Layout()
			m.mu.Unlock()
			if !reflect.DeepEqual(normal(stored), normal(*mem)) {
				t.Fatalf("step %d: %s stored as %v, in memory %v", step, fn, stored, *mem)
			}
		}
	}
}

// normal makes empty and nil orders alike.
func normal(l ftree.Layout) ftree.Layout {
	for s := range l.Order {
		if len(l.Order[s]) == 0 {
			l.Order[s] = nil
		}
		l.Order[s] = slices.Clip(l.Order[s])
	}
	return l
}
