package store

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"

	"github.com/faasnet/faasnet/ftree"
)

// testStripes writes a striped function's layout through its nodes, as the
// manager does (only the nodes whose place changed), after a seeded
// sequence of joins and leaves, and checks that each Load gives back the
// exact layout, from which ftree restores the same trees.
func testStripes(t *testing.T, open opener) {
	for _, k := range []int{2, 3} {
		t.Run(fmt.Sprint("k=", k), func(t *testing.T) {
			s := open(t)
			tree, err := ftree.NewStriped(k, nil)
			if err != nil {
				t.Fatal(err)
			}
			mustApply(t, s, Batch{PutFunctions: []Function{{Name: "f", Image: "i", Stripes: k}}})
			rng := rand.New(rand.NewPCG(uint64(k), 12))
			stored := map[string]Placement{}
			var members []string
			for step := range 40 {
				var b Batch
				if len(members) > 0 && rng.IntN(3) == 0 {
					i := rng.IntN(len(members))
					if _, err := tree.Delete(members[i]); err != nil {
						t.Fatal(err)
					}
					b.DeleteNodes = append(b.DeleteNodes, NodeKey{"f", members[i]})
					delete(stored, members[i])
					members = slices.Delete(members, i, i+1)
				} else {
					vm := fmt.Sprintf("vm-%02d", step)
					if _, err := tree.Insert(vm); err != nil {
						t.Fatal(err)
					}
					members = append(members, vm)
				}
				for vm, pl := range Placements(tree.Layout()) {
					if old, ok := stored[vm]; ok && reflect.DeepEqual(old, pl) {
						continue
					}
					stored[vm] = pl
					b.PutNodes = append(b.PutNodes, Node{Function: "f", VM: vm, Positions: pl.Positions, Home: pl.Home})
				}
				mustApply(t, s, b)
				st := mustLoad(t, s)
				if len(st.Functions) != 1 || st.Functions[0].Stripes != k {
					t.Fatalf("step %d: functions %+v, want f of %d stripes", step, st.Functions, k)
				}
				got, err := Layout(k, st.Nodes)
				if err != nil {
					t.Fatalf("step %d: %v", step, err)
				}
				if want := tree.Layout(); !reflect.DeepEqual(&got, want) {
					t.Fatalf("step %d: loaded layout %+v, want %+v", step, got, *want)
				}
				back, err := ftree.RestoreStriped(got)
				if err != nil {
					t.Fatalf("step %d: restoring the loaded layout: %v", step, err)
				}
				for _, vm := range members {
					want, _ := tree.Parents(vm)
					if got, _ := back.Parents(vm); !slices.Equal(got, want) {
						t.Fatalf("step %d: %s restored with parents %q, want %q", step, vm, got, want)
					}
				}
			}
		})
	}
}

func TestLayoutRefusesBadNodes(t *testing.T) {
	for _, tt := range []struct {
		name  string
		k     int
		nodes []Node
	}{
		{"one stripe", 1, nil},
		{"positions short", 2, []Node{{VM: "a", Positions: []int{0}}}},
		{"position beyond", 2, []Node{{VM: "a", Positions: []int{0, 1}}}},
		{"home beyond", 2, []Node{{VM: "a", Positions: []int{0, 0}, Home: 2}}},
		{"position twice", 2, []Node{{VM: "a", Positions: []int{0, 0}}, {VM: "b", Positions: []int{0, 1}}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Layout(tt.k, tt.nodes); err == nil {
				t.Error("Layout accepted it")
			}
		})
	}
}

// FuzzLayout feeds stored nodes as JSON to Layout and, where it accepts
// them, to ftree.RestoreStriped: neither may panic, and a restored tree
// must pass its Check and give back the layout it was built from.
func FuzzLayout(f *testing.F) {
	f.Add(2, []byte(`[{"vm":"a","positions":[0,1]},{"vm":"b","positions":[1,0],"home":1}]`))
	f.Add(3, []byte(`[{"vm":"a","positions":[0,0,0]}]`))
	f.Add(2, []byte(`[{"vm":"a","positions":[0,1],"home":5}]`))
	f.Add(2, []byte(`[{"vm":"a","positions":[0,-1]}]`))
	f.Fuzz(func(t *testing.T, k int, data []byte) {
		var nodes []Node
		if json.Unmarshal(data, &nodes) != nil {
			return
		}
		l, err := Layout(k, nodes)
		if err != nil {
			return
		}
		tree, err := ftree.RestoreStriped(l)
		if err != nil {
			return
		}
		if err := tree.Check(); err != nil {
			t.Fatalf("restored %+v, which fails its check: %v", l, err)
		}
		if got := tree.Layout(); !reflect.DeepEqual(got, &l) {
			t.Fatalf("restored %+v, layout now %+v", l, *got)
		}
	})
}
