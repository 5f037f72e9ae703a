package ftree

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// TestStripedPlacedCoversLayout checks that a change's Placed names every VM
// whose positions or home stripe the change altered, so that a control
// plane that stores the layout may write only those VMs; and that
// Placement agrees with Layout.
func TestStripedPlacedCoversLayout(t *testing.T) {
	for _, k := range []int{2, 3, 4} {
		t.Run(fmt.Sprintf("k%d", k), func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, uint64(k)))
			tr, err := NewStriped(k, nil)
			if err != nil {
				t.Fatal(err)
			}
			var members []string
			next := 0
			for step := range 600 {
				before := placements(t, tr)
				var ch StripedChange
				if len(members) == 0 || r.IntN(5) < 3 {
					vm := fmt.Sprintf("vm-%d", next)
					next++
					if ch, err = tr.Insert(vm); err != nil {
						t.Fatal(err)
					}
					members = append(members, vm)
				} else {
					i := r.IntN(len(members))
					if ch, err = tr.Delete(members[i]); err != nil {
						t.Fatal(err)
					}
					members = slices.Delete(members, i, i+1)
				}
				for vm, now := range placements(t, tr) {
					if was, ok := before[vm]; (!ok || was != now) && !slices.Contains(ch.Placed, vm) {
						t.Fatalf("step %d: %s went from %q to %q, not in Placed %v", step, vm, was, now, ch.Placed)
					}
				}
				if !slices.IsSorted(ch.Placed) {
					t.Fatalf("step %d: Placed %v not by name", step, ch.Placed)
				}
			}
		})
	}
}

// placements returns every VM's positions and home, from Layout, after
// checking that Placement says the same.
func placements(t *testing.T, tr *Striped) map[string]string {
	t.Helper()
	l := tr.Layout()
	out := map[string]string{}
	for _, vm := range l.Order[0] {
		pos := make([]int, len(l.Order))
		home := -1
		for s, order := range l.Order {
			pos[s] = slices.Index(order, vm)
			if pos[s] < l.Members[s] {
				home = s
			}
		}
		gotPos, gotHome, ok := tr.Placement(vm)
		if !ok || !slices.Equal(gotPos, pos) || gotHome != home {
			t.Fatalf("Placement(%s) = %v, %d, %v; Layout has %v, %d", vm, gotPos, gotHome, ok, pos, home)
		}
		out[vm] = fmt.Sprint(pos, home)
	}
	return out
}
