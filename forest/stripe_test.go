package forest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
)

// TestStripedFunctions runs seeded random joins and leaves over functions
// of one to four stripes sharing a pool, and checks after each step every
// tree, fan-outs and weights against a recount, and that a VM in several
// striped functions uploads, per function, at most (k+1)/k of an image
// (its children in the function over k) once the function has k² VMs.
func TestStripedFunctions(t *testing.T) {
	steps := 2000
	if testing.Short() {
		steps = 500
	}
	for seed := range uint64(3) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 12))
			f := New()
			const vms = 40
			for i := range vms {
				f.SetVM(fmt.Sprintf("vm%02d", i), 6)
			}
			fns := []string{"one", "two", "three", "four", "two-b"}
			ks := []int{1, 2, 3, 4, 2}
			for i, fn := range fns {
				if err := f.AddStripedFunction(fn, ks[i]); err != nil {
					t.Fatal(err)
				}
			}
			for step := range steps {
				fn := fns[rng.IntN(len(fns))]
				vm := fmt.Sprintf("vm%02d", rng.IntN(vms))
				var err error
				if f.Hosts(vm, fn) {
					_, err = f.RemoveStriped(fn, vm)
				} else if f.Load(vm) < 6 {
					_, err = f.InsertStriped(fn, vm)
				}
				if err != nil {
					t.Fatalf("step %d: %v", step, err)
				}
				check(t, f, step)
				for _, fn := range fns {
					tr := f.Striped(fn)
					k := tr.Stripes()
					if k == 1 || tr.Len() < k*k {
						continue
					}
					for _, n := range tr.Nodes(0) {
						if c := tr.ChildCount(n.VM); c > k+1 {
							t.Fatalf("step %d: %s has %d children in %s of %d stripes", step, n.VM, c, fn, k)
						}
					}
				}
			}
		})
	}
}

// TestStripedNeedsStripedCalls checks that the one-tree calls refuse a
// function of several stripes instead of reporting only stripe 0.
func TestStripedNeedsStripedCalls(t *testing.T) {
	f := New()
	f.SetVM("a", 2)
	if err := f.AddStripedFunction("s", 3); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Insert("s", "a"); !errors.Is(err, ErrStriped) {
		t.Errorf("Insert: %v, want ErrStriped", err)
	}
	if _, err := f.InsertStriped("s", "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Remove("s", "a"); !errors.Is(err, ErrStriped) {
		t.Errorf("Remove: %v, want ErrStriped", err)
	}
	if f.Tree("s") != nil || f.Stripes("s") != 3 || f.Striped("s") == nil {
		t.Errorf("Tree %v, Stripes %d", f.Tree("s"), f.Stripes("s"))
	}
	if err := f.AddStripedFunction("s", 2); !errors.Is(err, ErrExists) {
		t.Errorf("second add: %v", err)
	}
	if err := f.AddStripedFunction("z", 0); err == nil {
		t.Error("0 stripes accepted")
	}
	if _, err := f.RemoveFunction("s"); err != nil {
		t.Fatal(err)
	}
	if f.Load("a") != 0 {
		t.Errorf("load %d after RemoveFunction", f.Load("a"))
	}
}

// TestStripedWeight checks how a VM's weight counts a striped function:
// its children there over k, rounded, so that placement sees an interior
// VM of a k-stripe function as uploading one image, not k.
func TestStripedWeight(t *testing.T) {
	f := New()
	for i := range 9 {
		f.SetVM(fmt.Sprintf("v%d", i), 2)
	}
	if err := f.AddStripedFunction("s", 2); err != nil {
		t.Fatal(err)
	}
	for i := range 9 {
		if _, err := f.InsertStriped("s", fmt.Sprintf("v%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	root := f.Striped("s").Root(0)
	if c := f.Fanout(root); c != 2 {
		t.Fatalf("root of stripe 0 has %d children, want 2", c)
	}
	if w := f.Weight(root); w != 1 {
		t.Errorf("root of stripe 0 weighs %d, want 1 (2 children over 2 stripes)", w)
	}
	check(t, f, 0)
}

// TestRestoreStripedFunction rebuilds a forest with a striped function
// from its layout: the same trees, fan-outs and weights.
func TestRestoreStripedFunction(t *testing.T) {
	f, g := New(), New()
	for i := range 11 {
		f.SetVM(fmt.Sprintf("v%02d", i), 3)
		g.SetVM(fmt.Sprintf("v%02d", i), 3)
	}
	if err := f.AddStripedFunction("s", 3); err != nil {
		t.Fatal(err)
	}
	for i := range 11 {
		if _, err := f.InsertStriped("s", fmt.Sprintf("v%02d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.RemoveStriped("s", "v04"); err != nil {
		t.Fatal(err)
	}
	if err := g.RestoreStripedFunction("s", *f.Striped("s").Layout()); err != nil {
		t.Fatal(err)
	}
	check(t, g, 0)
	for i := range 11 {
		name := fmt.Sprintf("v%02d", i)
		a, _ := f.VM(name)
		b, _ := g.VM(name)
		if fmt.Sprint(a) != fmt.Sprint(b) {
			t.Errorf("VM %s: %+v, restored %+v", name, b, a)
		}
	}
	bad := *f.Striped("s").Layout()
	h := New()
	if err := h.RestoreStripedFunction("s", bad); !errors.Is(err, ErrUnknownVM) {
		t.Errorf("restore into an empty pool: %v", err)
	}
}
