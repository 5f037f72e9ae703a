package forest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/faasnet/faasnet/ftree"
	"github.com/faasnet/faasnet/placement"
)

// check verifies f against a recount: every tree passes ftree's Check,
// every VM's functions are exactly the trees that hold it, and its fan-out
// is its number of children in them.
func check(t *testing.T, f *Forest, step int) {
	t.Helper()
	hosts := map[string][]string{}
	kids := map[string]int{}
	weight := map[string]int{}
	for fn, tr := range f.trees {
		if err := tr.Check(); err != nil {
			t.Fatalf("step %d: tree of %s: %v", step, fn, err)
		}
		k := tr.Stripes()
		fnKids := map[string]int{}
		for s := range k {
			for _, n := range tr.Nodes(s) {
				if _, ok := f.vms[n.VM]; !ok {
					t.Fatalf("step %d: tree of %s holds %s, not in the pool", step, fn, n.VM)
				}
				if s == 0 {
					hosts[n.VM] = append(hosts[n.VM], fn)
				}
				fnKids[n.VM] += len(n.Children)
			}
		}
		for vm, c := range fnKids {
			kids[vm] += c
			weight[vm] += int(float64(c)/float64(k) + 0.5)
		}
	}
	if len(f.pool) != len(f.vms) {
		t.Fatalf("step %d: %d VMs in the pool's order, %d in the pool", step, len(f.pool), len(f.vms))
	}
	for _, v := range f.pool {
		if f.vms[v.name] != v {
			t.Fatalf("step %d: VM %s in the pool's order is not the pool's", step, v.name)
		}
	}
	for name := range f.vms {
		v, _ := f.VM(name)
		want := hosts[name]
		slices.Sort(want)
		if !slices.Equal(v.Functions, want) {
			t.Fatalf("step %d: VM %s hosts %v, the trees say %v", step, name, v.Functions, want)
		}
		if v.Fanout != kids[name] {
			t.Fatalf("step %d: VM %s has fan-out %d, recount %d", step, name, v.Fanout, kids[name])
		}
		if v.Weight != weight[name] {
			t.Fatalf("step %d: VM %s has weight %d, recount %d", step, name, v.Weight, weight[name])
		}
	}
}

// restored rebuilds f from its trees' links, as a manager does when it
// starts, with the functions in random order. Its trees read every weight
// fresh, so it places VMs as f does only if f's trees hold current weights.
func restored(t *testing.T, f *Forest, rng *rand.Rand) *Forest {
	t.Helper()
	g := New()
	for name, v := range f.vms {
		g.SetVM(name, v.capacity)
	}
	var fns []string
	for fn := range f.trees {
		fns = append(fns, fn)
	}
	slices.Sort(fns)
	rng.Shuffle(len(fns), func(i, j int) { fns[i], fns[j] = fns[j], fns[i] })
	for _, fn := range fns {
		if err := g.RestoreFunction(fn, f.trees[fn].Tree().Links()); err != nil {
			t.Fatal(err)
		}
	}
	return g
}

func sameForest(t *testing.T, step int, a, b *Forest) {
	t.Helper()
	if len(a.trees) != len(b.trees) || len(a.vms) != len(b.vms) {
		t.Fatalf("step %d: %d trees and %d VMs, against %d and %d", step, len(a.trees), len(a.vms), len(b.trees), len(b.vms))
	}
	for fn, ta := range a.trees {
		tb := b.Tree(fn)
		if tb == nil || !slices.Equal(ta.Tree().Links(), tb.Links()) {
			t.Fatalf("step %d: the trees of %s differ", step, fn)
		}
	}
	for name := range a.vms {
		va, _ := a.VM(name)
		vb, _ := b.VM(name)
		if va.Fanout != vb.Fanout || va.Capacity != vb.Capacity || !slices.Equal(va.Functions, vb.Functions) {
			t.Fatalf("step %d: VM %s is %+v, against %+v", step, name, va, vb)
		}
	}
}

// op is one random operation, applied to several forests alike.
type op func(f *Forest) error

// randomOp draws an operation on f's current state.
func randomOp(rng *rand.Rand, f *Forest, vms, fns int) (string, op) {
	vm := fmt.Sprintf("vm%02d", rng.IntN(vms))
	fn := fmt.Sprintf("fn%d", rng.IntN(fns))
	switch k := rng.IntN(100); {
	case k < 3:
		c := 1 + rng.IntN(4)
		return fmt.Sprintf("set %s capacity %d", vm, c), func(f *Forest) error { f.SetVM(vm, c); return nil }
	case k < 5:
		return "leave " + vm, func(f *Forest) error {
			v, ok := f.VM(vm)
			if !ok {
				return nil
			}
			for _, fn := range v.Functions {
				if _, err := f.Remove(fn, vm); err != nil {
					return err
				}
			}
			return f.RemoveVM(vm)
		}
	case k < 7:
		return "add function " + fn, func(f *Forest) error {
			if err := f.AddFunction(fn); err != nil && !errors.Is(err, ErrExists) {
				return err
			}
			return nil
		}
	case k < 8:
		return "remove function " + fn, func(f *Forest) error {
			if _, err := f.RemoveFunction(fn); err != nil && !errors.Is(err, ErrUnknownFunction) {
				return err
			}
			return nil
		}
	case k < 40:
		return "remove " + vm + " from " + fn, func(f *Forest) error {
			_, err := f.Remove(fn, vm)
			if err != nil && (f.Tree(fn) == nil || !f.Tree(fn).Contains(vm)) {
				return nil // expected refusal
			}
			return err
		}
	case k < 60:
		return "insert " + vm + " into " + fn, func(f *Forest) error {
			_, err := f.Insert(fn, vm)
			if err != nil && !expectedRefusal(f, fn, vm) {
				return err
			}
			return nil
		}
	default:
		n := 1 + rng.IntN(5)
		return fmt.Sprintf("scale %s by up to %d", fn, n), func(f *Forest) error {
			if f.Tree(fn) == nil {
				return nil
			}
			cs := f.AppendCandidates(nil, fn, func(vm string) bool { return vm[len(vm)-1] == '7' })
			for _, vm := range placement.Choose(cs, min(n, len(cs))) {
				if _, err := f.Insert(fn, vm); err != nil {
					return err
				}
			}
			return nil
		}
	}
}

// expectedRefusal reports whether inserting vm into fn's tree must fail.
func expectedRefusal(f *Forest, fn, vm string) bool {
	v, ok := f.VM(vm)
	return f.Tree(fn) == nil || !ok || f.Hosts(vm, fn) || len(v.Functions) >= v.Capacity
}

// TestRandomOperations runs seeded random sequences of every operation and
// checks fan-outs against a recount and every tree after each step. Every
// few steps it restores a copy from the trees' links and runs the next
// steps on both: the copy reads all weights fresh, so the two place VMs
// alike only if the forest kept every tree's weights current.
func TestRandomOperations(t *testing.T) {
	steps := 3000
	if testing.Short() {
		steps = 600
	}
	for seed := range uint64(6) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 42))
			vms, fns := 12+int(seed)*8, 2+int(seed)
			f := New()
			for i := range vms {
				f.SetVM(fmt.Sprintf("vm%02d", i), 1+rng.IntN(4))
			}
			for i := range fns {
				if err := f.AddFunction(fmt.Sprintf("fn%d", i)); err != nil {
					t.Fatal(err)
				}
			}
			var twin *Forest
			for step := range steps {
				if step%50 == 0 {
					twin = restored(t, f, rng)
					sameForest(t, step, f, twin)
				}
				what, o := randomOp(rng, f, vms, fns)
				if err := o(f); err != nil {
					t.Fatalf("step %d: %s: %v", step, what, err)
				}
				if err := o(twin); err != nil {
					t.Fatalf("step %d: %s on the restored copy: %v", step, what, err)
				}
				check(t, f, step)
				sameForest(t, step, f, twin)
			}
		})
	}
}

// TestRemovedVMLosesItsFanout checks the case ftree.Change leaves to the
// caller: a VM deleted from one tree lost its children there, and its
// other trees must weigh it lighter.
func TestRemovedVMLosesItsFanout(t *testing.T) {
	f := New()
	for _, vm := range []string{"r", "x", "y", "p", "q", "n1", "n2"} {
		f.SetVM(vm, 5)
	}
	for _, fn := range []string{"a", "b"} {
		if err := f.AddFunction(fn); err != nil {
			t.Fatal(err)
		}
	}
	insert := func(fn, vm string) ftree.Change {
		t.Helper()
		ch, err := f.Insert(fn, vm)
		if err != nil {
			t.Fatal(err)
		}
		return ch
	}
	parent := func(fn, vm string) string {
		p, _ := f.Tree(fn).Parent(vm)
		return p
	}
	// In a, x is the root of p and q: fan-out 2. In b, r has x and y.
	insert("a", "x")
	insert("a", "p")
	insert("a", "q")
	insert("b", "r")
	insert("b", "x")
	insert("b", "y")
	if got := f.Fanout("x"); got != 2 {
		t.Fatalf("fan-out of x = %d, want 2", got)
	}
	// y is lighter than x: n1 goes below y.
	insert("b", "n1")
	if p := parent("b", "n1"); p != "y" {
		t.Fatalf("n1 under %s, want y", p)
	}
	// x leaves a: its fan-out drops to 0, below y's 1, so n2 goes below x.
	if _, err := f.Remove("a", "x"); err != nil {
		t.Fatal(err)
	}
	if got := f.Fanout("x"); got != 0 {
		t.Fatalf("fan-out of x after leaving a = %d, want 0", got)
	}
	insert("b", "n2")
	if p := parent("b", "n2"); p != "x" {
		t.Fatalf("n2 under %s, want x: b did not reweigh x", p)
	}
}

func TestErrors(t *testing.T) {
	f := New()
	f.SetVM("full", 1)
	f.SetVM("free", 2)
	for _, fn := range []string{"a", "b"} {
		if err := f.AddFunction(fn); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.Insert("a", "full"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		err  error
		want error
	}{
		{"insert into an unknown function", second(f.Insert("c", "free")), ErrUnknownFunction},
		{"insert an unknown VM", second(f.Insert("a", "ghost")), ErrUnknownVM},
		{"insert a VM at capacity", second(f.Insert("b", "full")), ErrCapacity},
		{"insert a member", second(f.Insert("a", "full")), ftree.ErrExists},
		{"remove a non-member", second(f.Remove("a", "free")), ftree.ErrNotFound},
		{"remove from an unknown function", second(f.Remove("c", "full")), ErrUnknownFunction},
		{"add an existing function", f.AddFunction("a"), ErrExists},
		{"restore an existing function", f.RestoreFunction("b", nil), ErrExists},
		{"restore with an unknown VM", f.RestoreFunction("c", []ftree.Link{{VM: "ghost"}}), ErrUnknownVM},
		{"restore a broken tree", f.RestoreFunction("c", []ftree.Link{{VM: "free", Parent: "full"}}), ftree.ErrInvalid},
		{"remove an unknown function", second(f.RemoveFunction("c")), ErrUnknownFunction},
		{"remove a hosting VM", f.RemoveVM("full"), ErrHosting},
		{"remove an unknown VM", f.RemoveVM("ghost"), ErrUnknownVM},
	}
	for _, tt := range tests {
		if !errors.Is(tt.err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, tt.err, tt.want)
		}
	}
	if f.Tree("c") != nil {
		t.Error("a failed restore left a tree")
	}
	check(t, f, 0)
}

func second[T any](_ T, err error) error { return err }

// TestCandidates checks who may join a tree and what placement learns.
func TestCandidates(t *testing.T) {
	f := New()
	f.SetVM("member", 3)
	f.SetVM("full", 1)
	f.SetVM("parent", 3)
	f.SetVM("idle", 3)
	for _, fn := range []string{"a", "b"} {
		if err := f.AddFunction(fn); err != nil {
			t.Fatal(err)
		}
	}
	for _, step := range [][2]string{{"a", "member"}, {"b", "full"}, {"b", "parent"}, {"b", "member"}} {
		if _, err := f.Insert(step[0], step[1]); err != nil {
			t.Fatal(err)
		}
	}
	// In b, full is the root with parent and member below it.
	cs := f.AppendCandidates(nil, "a", func(vm string) bool { return vm == "idle" })
	slices.SortFunc(cs, func(x, y placement.Candidate) int {
		switch {
		case x.VM < y.VM:
			return -1
		case x.VM > y.VM:
			return 1
		}
		return 0
	})
	want := []placement.Candidate{
		{VM: "idle", Cached: true},
		{VM: "parent", Functions: 1},
	}
	if !slices.Equal(cs, want) {
		t.Errorf("candidates for a = %+v, want %+v", cs, want)
	}
	var order []string
	for _, c := range f.AppendCandidates(nil, "c", nil) {
		order = append(order, c.VM)
	}
	if want := []string{"member", "parent", "idle"}; !slices.Equal(order, want) {
		t.Errorf("candidates in the order %v, want the pool's %v", order, want)
	}
	if got := placement.Choose(f.AppendCandidates(nil, "b", nil), 1); !slices.Equal(got, []string{"idle"}) {
		t.Errorf("placement for b picks %v, want [idle]", got)
	}
	// A capacity below the load keeps the functions and refuses more.
	f.SetVM("member", 1)
	if v, _ := f.VM("member"); len(v.Functions) != 2 {
		t.Errorf("member hosts %v after a lower capacity", v.Functions)
	}
	if cs := f.AppendCandidates(nil, "c", nil); len(cs) != 2 {
		t.Errorf("%d candidates for a new function, want idle and parent", len(cs))
	}
}

// TestRemoveFunction checks that dropping a tree relieves its members in
// their other trees.
func TestRemoveFunction(t *testing.T) {
	f := New()
	for i := range 6 {
		f.SetVM(fmt.Sprint("vm", i), 2)
	}
	for _, fn := range []string{"a", "b"} {
		if err := f.AddFunction(fn); err != nil {
			t.Fatal(err)
		}
		for i := range 6 {
			if _, err := f.Insert(fn, fmt.Sprint("vm", i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	members, err := f.RemoveFunction("a")
	if err != nil {
		t.Fatal(err)
	}
	if len(members) != 6 {
		t.Errorf("members = %v", members)
	}
	check(t, f, 0)
	sameForest(t, 0, f, restored(t, f, rand.New(rand.NewPCG(1, 1))))
}

// BenchmarkScaleOut is one scale-out as the simulator and the manager do
// it at paper scale: 1,000 VMs, candidates, placement, inserts.
func BenchmarkScaleOut(b *testing.B) {
	for b.Loop() {
		f := New()
		for i := range 1000 {
			f.SetVM(fmt.Sprintf("vm%04d", i), 20)
		}
		for fn := range 3 {
			name := fmt.Sprint("fn", fn)
			if err := f.AddFunction(name); err != nil {
				b.Fatal(err)
			}
			cs := f.AppendCandidates(nil, name, nil)
			for _, vm := range placement.Choose(cs, 833) {
				if _, err := f.Insert(name, vm); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
}
