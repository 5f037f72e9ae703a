package ftree

import (
	"errors"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"slices"
	"testing"
)

// vmState is what a snapshot remembers of one VM.
type vmState struct {
	parent string
	kids   int
}

func snapshot(tr *Tree) map[string]vmState {
	s := make(map[string]vmState, tr.Len())
	for vm, n := range tr.nodes {
		s[vm] = vmState{parent: n.parentName(), kids: n.fanout()}
	}
	return s
}

// verifyChange checks that ch reports exactly the VMs whose parent or child
// count differs between the snapshots, and at most three new parents.
func verifyChange(before, after map[string]vmState, ch Change) error {
	moved := make(map[string]string)
	fanout := make(map[string]bool)
	for vm, a := range after {
		b, ok := before[vm]
		if !ok || b.parent != a.parent {
			moved[vm] = a.parent
		}
		if ok && b.kids != a.kids {
			fanout[vm] = true
		}
	}
	if len(ch.Moved) > 3 {
		return fmt.Errorf("%d VMs moved: %v", len(ch.Moved), ch.Moved)
	}
	if len(ch.Moved) != len(moved) {
		return fmt.Errorf("Moved = %v, want %v", ch.Moved, moved)
	}
	for _, m := range ch.Moved {
		if p, ok := moved[m.VM]; !ok || p != m.Parent {
			return fmt.Errorf("Moved = %v, want %v", ch.Moved, moved)
		}
		delete(moved, m.VM) // catches duplicates
	}
	if len(ch.Fanout) != len(fanout) {
		return fmt.Errorf("Fanout = %v, want %v", ch.Fanout, fanout)
	}
	for _, vm := range ch.Fanout {
		if !fanout[vm] {
			return fmt.Errorf("Fanout = %v, want %v", ch.Fanout, fanout)
		}
		delete(fanout, vm)
	}
	return nil
}

// verifyMovedLocally is the O(1) part of verifyChange, for steps too large
// to snapshot: every reported move is real and there are at most three.
func verifyMovedLocally(tr *Tree, ch Change) error {
	if len(ch.Moved) > 3 {
		return fmt.Errorf("%d VMs moved: %v", len(ch.Moved), ch.Moved)
	}
	for _, m := range ch.Moved {
		if p, ok := tr.Parent(m.VM); !ok || p != m.Parent {
			return fmt.Errorf("reported move %v, Parent() = %q, %v", m, p, ok)
		}
	}
	return nil
}

// members mirrors the tree's VM set with O(1) random choice.
type members struct {
	names []string
	index map[string]int
	next  int
}

func newMembers() *members { return &members{index: make(map[string]int)} }

func (m *members) fresh() string {
	m.next++
	return fmt.Sprintf("vm-%d", m.next)
}

func (m *members) add(vm string) {
	m.index[vm] = len(m.names)
	m.names = append(m.names, vm)
}

func (m *members) remove(vm string) {
	i, last := m.index[vm], len(m.names)-1
	m.names[i] = m.names[last]
	m.index[m.names[i]] = i
	m.names = m.names[:last]
	delete(m.index, vm)
}

func (m *members) random(r *rand.Rand) string { return m.names[r.IntN(len(m.names))] }

// A bias decides, given the current size, the probability of inserting.
type bias func(n int) float64

func growing(int) float64   { return 0.8 }
func shrinking(int) float64 { return 0.25 }
func balanced(int) float64  { return 0.5 }

// oscillating keeps the size around 2^k, where the deepest level appears and
// vanishes.
func oscillating(k int) bias {
	return func(n int) float64 {
		switch {
		case n < 1<<k-2:
			return 0.95
		case n > 1<<k+1:
			return 0.05
		}
		return 0.5
	}
}

// run performs steps random operations on tr. Every checkEvery steps it runs
// Check and compares full snapshots; other steps get the local checks only.
func run(t *testing.T, r *rand.Rand, tr *Tree, m *members, b bias, steps, checkEvery int) {
	t.Helper()
	for step := 0; step < steps; step++ {
		full := step%checkEvery == 0
		var before map[string]vmState
		if full {
			before = snapshot(tr)
		}
		var ch Change
		var err error
		insert := len(m.names) == 0 || r.Float64() < b(len(m.names))
		switch {
		case r.IntN(50) == 0 && len(m.names) > 0: // duplicates and strangers fail
			if _, err = tr.Insert(m.random(r)); !errors.Is(err, ErrExists) {
				t.Fatalf("step %d: duplicate insert: %v", step, err)
			}
			if _, err = tr.Delete("stranger"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("step %d: stranger delete: %v", step, err)
			}
			continue
		case insert:
			vm := m.fresh()
			ch, err = tr.Insert(vm)
			m.add(vm)
		default:
			vm := m.random(r)
			ch, err = tr.Delete(vm)
			m.remove(vm)
		}
		if err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		if tr.Len() != len(m.names) || tr.Height() != floorLog2(len(m.names)) {
			t.Fatalf("step %d: Len %d Height %d, want %d, %d",
				step, tr.Len(), tr.Height(), len(m.names), floorLog2(len(m.names)))
		}
		if err := verifyMovedLocally(tr, ch); err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		if !full {
			continue
		}
		if err := tr.Check(); err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		if err := verifyChange(before, snapshot(tr), ch); err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
	}
}

func floorLog2(n int) int {
	if n == 0 {
		return 0
	}
	return bits.Len(uint(n)) - 1
}

func TestRandomSequences(t *testing.T) {
	biases := []struct {
		name string
		b    bias
		init int // VMs inserted before the random steps
	}{
		{"growing", growing, 0},
		{"shrinking", shrinking, 300},
		{"balanced", balanced, 40},
		{"oscillating-2^3", oscillating(3), 0},
		{"oscillating-2^6", oscillating(6), 60},
		{"oscillating-2^9", oscillating(9), 500},
	}
	seeds, steps := 10, 1000
	if testing.Short() {
		seeds, steps = 3, 400
	}
	for _, bc := range biases {
		t.Run(bc.name, func(t *testing.T) {
			for seed := range seeds {
				r := rand.New(rand.NewPCG(uint64(seed), 1))
				tr, m := New(nil), newMembers()
				for range bc.init {
					vm := m.fresh()
					if _, err := tr.Insert(vm); err != nil {
						t.Fatal(err)
					}
					m.add(vm)
				}
				run(t, r, tr, m, bc.b, steps, 1)
			}
		})
	}
}

// TestLarge runs at up to 100,000 VMs, including oscillation around the
// level boundary at 2^16, checking in full every few hundred steps.
func TestLarge(t *testing.T) {
	k, size, steps, every := 16, 100_000, 3000, 500
	if testing.Short() {
		k, size, steps, every = 12, 6000, 1000, 250
	}
	r := rand.New(rand.NewPCG(42, 2))
	tr, m := New(nil), newMembers()
	grow := func(n int) {
		for len(m.names) < n {
			vm := m.fresh()
			if _, err := tr.Insert(vm); err != nil {
				t.Fatal(err)
			}
			m.add(vm)
		}
		if err := tr.Check(); err != nil {
			t.Fatalf("at %d VMs: %v", n, err)
		}
	}
	grow(1<<k - 1)
	run(t, r, tr, m, oscillating(k), steps, every)
	grow(size)
	run(t, r, tr, m, balanced, steps, every)
	if err := tr.Check(); err != nil {
		t.Fatal(err)
	}
}

// weights is a Weigher backed by a map.
type weights map[string]int

func (w weights) weigh(vm string) int { return w[vm] }

// expectedParent computes Insert's choice by brute force: the least
// (weight, children, insertion) among VMs with a free slot at the shallowest
// such depth.
func expectedParent(tr *Tree, w weights, order map[string]int) string {
	best, bestDepth := Node{}, -1
	key := func(n Node) []int { return []int{w[n.VM], len(n.Children), order[n.VM]} }
	for _, n := range tr.Nodes() {
		if len(n.Children) == 2 || (bestDepth >= 0 && n.Depth > bestDepth) {
			continue
		}
		if bestDepth < 0 || n.Depth < bestDepth || slices.Compare(key(n), key(best)) < 0 {
			best, bestDepth = n, n.Depth
		}
	}
	return best.VM
}

// expectedReplacement computes Delete's choice of replacement for a VM above
// the deepest level: a child (slot 1 first) of the greatest (weight,
// children, insertion) VM with children on the level above the deepest.
func expectedReplacement(tr *Tree, w weights, order map[string]int) string {
	var best Node
	key := func(n Node) []int { return []int{w[n.VM], len(n.Children), order[n.VM]} }
	for _, n := range tr.Nodes() {
		if n.Depth == tr.Height()-1 && len(n.Children) > 0 &&
			(best.VM == "" || slices.Compare(key(n), key(best)) > 0) {
			best = n
		}
	}
	kids := tr.Children(best.VM)
	return kids[len(kids)-1]
}

// TestWeightedChoices checks, on random sequences with random weights and
// reweighs, that every insert and delete picks what the documented order
// says.
func TestWeightedChoices(t *testing.T) {
	seeds, steps := 20, 800
	if testing.Short() {
		seeds, steps = 5, 400
	}
	for seed := range seeds {
		r := rand.New(rand.NewPCG(uint64(seed), 3))
		w := weights{}
		order := map[string]int{}
		tr, m := New(w.weigh), newMembers()
		for step := range steps {
			switch x := r.IntN(10); {
			case x < 2 && len(m.names) > 0: // the load changes elsewhere
				vm := m.random(r)
				w[vm] = r.IntN(5)
				tr.Reweigh(vm)
			case x < 7 || len(m.names) < 2:
				vm := m.fresh()
				w[vm], order[vm] = r.IntN(5), step
				want := expectedParent(tr, w, order)
				ch, err := tr.Insert(vm)
				if err != nil {
					t.Fatal(err)
				}
				if got, _ := tr.Parent(vm); got != want || ch.Moved[0].Parent != want {
					t.Fatalf("seed %d step %d: %s under %q, want %q", seed, step, vm, got, want)
				}
				m.add(vm)
			default:
				vm := m.random(r)
				d, _ := tr.Depth(vm)
				want := ""
				if d < tr.Height() {
					want = expectedReplacement(tr, w, order)
				}
				ch, err := tr.Delete(vm)
				if err != nil {
					t.Fatal(err)
				}
				if got := ""; want != "" {
					if len(ch.Moved) > 0 {
						got = ch.Moved[0].VM
					}
					if got != want {
						t.Fatalf("seed %d step %d: %s replaced by %q, want %q", seed, step, vm, got, want)
					}
				}
				m.remove(vm)
			}
			if err := tr.Check(); err != nil {
				t.Fatalf("seed %d step %d: %v", seed, step, err)
			}
		}
	}
}

func TestReweighChangesChoice(t *testing.T) {
	w := weights{"b": 1, "c": 2}
	tr := New(w.weigh)
	for _, vm := range []string{"a", "b", "c"} {
		if _, err := tr.Insert(vm); err != nil {
			t.Fatal(err)
		}
	}
	del := func(vm string) {
		t.Helper()
		if _, err := tr.Delete(vm); err != nil {
			t.Fatal(err)
		}
	}
	insertUnder(t, tr, "d", "b") // b is lighter
	w["b"] = 5
	del("d") // b's fan-out changed, so its weight is read again
	insertUnder(t, tr, "d", "c")
	del("d")
	w["b"] = 1                   // not seen yet
	insertUnder(t, tr, "d", "c") // by the weight read last, b is heavier
	del("d")
	tr.Reweigh("b")
	insertUnder(t, tr, "d", "b")
	w["c"] = 1
	tr.Reweigh("c")
	insertUnder(t, tr, "e", "c") // equal weights: c has fewer children
}

func insertUnder(t *testing.T, tr *Tree, vm, parent string) {
	t.Helper()
	if _, err := tr.Insert(vm); err != nil {
		t.Fatal(err)
	}
	if got, _ := tr.Parent(vm); got != parent {
		t.Fatalf("%s under %q, want %q", vm, got, parent)
	}
	if err := tr.Check(); err != nil {
		t.Fatal(err)
	}
}

// TestSharedFanout drives several trees over one VM pool the way the manager
// does: a VM's weight is its fan-out across all trees, refreshed after every
// change. All trees stay valid and Fanout names every VM whose load changed.
func TestSharedFanout(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	pool := make([]string, 64)
	for i := range pool {
		pool[i] = fmt.Sprintf("vm-%d", i)
	}
	load := map[string]int{}
	w := func(vm string) int { return load[vm] }
	trees := make([]*Tree, 8)
	for i := range trees {
		trees[i] = New(w)
	}
	// A deleted VM is not in Fanout, but it lost its children here.
	refresh := func(ch Change, deleted string) {
		for _, vm := range append(ch.Fanout, deleted) {
			if vm == "" {
				continue
			}
			load[vm] = 0
			for _, tr := range trees {
				load[vm] += len(tr.Children(vm))
			}
			for _, tr := range trees {
				tr.Reweigh(vm)
			}
		}
	}
	for step := range 3000 {
		tr := trees[r.IntN(len(trees))]
		vm := pool[r.IntN(len(pool))]
		var ch Change
		var err error
		deleted := ""
		if tr.Contains(vm) {
			ch, err = tr.Delete(vm)
			deleted = vm
		} else {
			ch, err = tr.Insert(vm)
		}
		if err != nil {
			t.Fatal(err)
		}
		refresh(ch, deleted)
		if err := tr.Check(); err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
	}
	// Loads must match the trees: every VM whose fan-out changed was named.
	for _, vm := range pool {
		sum := 0
		for _, tr := range trees {
			sum += len(tr.Children(vm))
		}
		if sum != load[vm] {
			t.Errorf("%s: load %d, fan-out %d", vm, load[vm], sum)
		}
	}
}
