package ftree

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// stripedSnapshot is every VM's parents and child counts per stripe.
type stripedSnapshot map[string]struct {
	parents []string
	kids    []int
}

func snapStriped(tr *Striped) stripedSnapshot {
	out := stripedSnapshot{}
	for _, s := range tr.allVMs() {
		ps, _ := tr.Parents(s)
		kids := make([]int, tr.Stripes())
		for i := range kids {
			kids[i] = len(tr.Children(s, i))
		}
		out[s] = struct {
			parents []string
			kids    []int
		}{ps, kids}
	}
	return out
}

// allVMs lists the VMs of a Striped in stripe 0's breadth-first order.
func (t *Striped) allVMs() []string {
	var out []string
	for _, n := range t.Nodes(0) {
		out = append(out, n.VM)
	}
	return out
}

// verifyStriped checks that ch lists exactly the (stripe, VM) whose parent
// differs, at most MaxMovesPerStripe per stripe, and every VM whose child
// count differs in Fanout.
func verifyStriped(k int, before, after stripedSnapshot, ch StripedChange) error {
	want := map[StripeMove]bool{}
	for vm, a := range after {
		b, ok := before[vm]
		for s := range k {
			if !ok || b.parents[s] != a.parents[s] {
				want[StripeMove{Stripe: s, VM: vm, Parent: a.parents[s]}] = true
			}
			if ok && b.kids[s] != a.kids[s] && !slices.Contains(ch.Fanout, vm) {
				return fmt.Errorf("VM %s has %d children in stripe %d, had %d, not in Fanout %v", vm, a.kids[s], s, b.kids[s], ch.Fanout)
			}
		}
	}
	per := make([]int, k)
	for _, m := range ch.Moved {
		if !want[m] {
			return fmt.Errorf("Moved %v lists %v, which did not move so", ch.Moved, m)
		}
		delete(want, m)
		per[m.Stripe]++
	}
	if len(want) > 0 {
		return fmt.Errorf("Moved %v misses %v", ch.Moved, want)
	}
	if mx := slices.Max(per); mx > MaxMovesPerStripe(k) {
		return fmt.Errorf("%d VMs moved in one stripe, bound %d", mx, MaxMovesPerStripe(k))
	}
	return nil
}

// runStriped performs steps random operations on tr, checking every
// invariant and the reported change after each.
func runStriped(t *testing.T, r *rand.Rand, tr *Striped, m *members, b bias, steps int) {
	t.Helper()
	for step := range steps {
		before := snapStriped(tr)
		var ch StripedChange
		var err error
		if len(m.names) == 0 || r.Float64() < b(len(m.names)) {
			vm := m.fresh()
			ch, err = tr.Insert(vm)
			m.add(vm)
		} else {
			vm := m.random(r)
			ch, err = tr.Delete(vm)
			m.remove(vm)
		}
		if err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		if err := tr.Check(); err != nil {
			t.Fatalf("step %d at %d VMs: %v", step, tr.Len(), err)
		}
		if err := verifyStriped(tr.Stripes(), before, snapStriped(tr), ch); err != nil {
			t.Fatalf("step %d at %d VMs: %v", step, tr.Len(), err)
		}
		if err := verifyBalance(tr); err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
	}
}

// verifyBalance checks what striping is for: distinct roots once there are
// more VMs than stripes (with at most k, Insert keeps earlier VMs roots
// rather than make a new, empty one the root of a stripe), every stripe
// as high as a k-ary tree must be, and, once every group can fill the heap
// but for one extra child, no VM with more than k+1 children over all
// stripes (it uploads at most (k+1)/k of what it downloads).
func verifyBalance(tr *Striped) error {
	n, k := tr.Len(), tr.Stripes()
	if n == 0 {
		return nil
	}
	roots := tr.Roots()
	if n > k && len(slices.Compact(slices.Sorted(slices.Values(roots)))) != k {
		return fmt.Errorf("roots %v are not distinct with %d VMs", roots, n)
	}
	for s := range k {
		if h, opt := tr.Height(s), OptimalHeight(n, k); h > opt {
			return fmt.Errorf("stripe %d: height %d with %d VMs, optimum %d", s, h, n, opt)
		}
	}
	if n < k*(k-1) {
		return nil
	}
	for _, vm := range tr.allVMs() {
		if c := tr.ChildCount(vm); c > k+1 {
			return fmt.Errorf("VM %s has %d children over all stripes with %d VMs", vm, c, n)
		}
	}
	return nil
}

func TestStripedRandomSequences(t *testing.T) {
	biases := []struct {
		name string
		b    bias
		init int
	}{
		{"growing", growing, 0},
		{"shrinking", shrinking, 200},
		{"balanced", balanced, 30},
		{"oscillating-small", oscillating(3), 0},
	}
	seeds, steps := 3, 300
	if testing.Short() {
		seeds, steps = 1, 200
	}
	for k := 2; k <= 5; k++ {
		for _, bc := range biases {
			t.Run(fmt.Sprintf("k%d/%s", k, bc.name), func(t *testing.T) {
				for seed := range seeds {
					r := rand.New(rand.NewPCG(uint64(seed), uint64(k)))
					tr, err := NewStriped(k, nil)
					if err != nil {
						t.Fatal(err)
					}
					m := newMembers()
					for range bc.init {
						vm := m.fresh()
						if _, err := tr.Insert(vm); err != nil {
							t.Fatal(err)
						}
						m.add(vm)
					}
					runStriped(t, r, tr, m, bc.b, steps)
				}
			})
		}
	}
}

// TestStripedOneStripeIsTree drives a one-stripe Striped and a Tree through
// the same operations: the same parents and the same changes.
func TestStripedOneStripeIsTree(t *testing.T) {
	w := func(vm string) int { return len(vm) % 3 }
	st, err := NewStriped(1, w)
	if err != nil {
		t.Fatal(err)
	}
	tr, m := New(w), newMembers()
	r := rand.New(rand.NewPCG(7, 7))
	for step := range 500 {
		var a Change
		var b StripedChange
		if len(m.names) == 0 || r.IntN(3) > 0 {
			vm := m.fresh()
			a, _ = tr.Insert(vm)
			b, _ = st.Insert(vm)
			m.add(vm)
		} else {
			vm := m.random(r)
			a, _ = tr.Delete(vm)
			b, _ = st.Delete(vm)
			m.remove(vm)
		}
		if got := fromChange(a); fmt.Sprint(got) != fmt.Sprint(b) {
			t.Fatalf("step %d: Striped change %v, Tree change %v", step, b, a)
		}
		if fmt.Sprint(tr.Nodes()) != fmt.Sprint(st.Nodes(0)) {
			t.Fatalf("step %d: trees differ", step)
		}
	}
	if st.Tree() == nil || st.Stripes() != 1 || st.Fanout() != 2 {
		t.Errorf("one stripe: Tree %v, Stripes %d, Fanout %d", st.Tree(), st.Stripes(), st.Fanout())
	}
}

func TestStripedLookups(t *testing.T) {
	tr, _ := NewStriped(3, nil)
	for i := range 10 {
		if _, err := tr.Insert(fmt.Sprintf("v%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tr.Insert("v1"); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate insert: %v", err)
	}
	if _, err := tr.Insert(""); !errors.Is(err, ErrInvalid) {
		t.Errorf("empty insert: %v", err)
	}
	if _, err := tr.Delete("nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("stranger delete: %v", err)
	}
	if _, err := NewStriped(0, nil); !errors.Is(err, ErrInvalid) {
		t.Errorf("0 stripes: %v", err)
	}
	// 10 VMs, 3 stripes: groups of 4, 3, 3; a 3-ary heap of 10 needs
	// positions 0..2 interior, so every stripe is a plain heap.
	for s := range 3 {
		nodes := tr.Nodes(s)
		if len(nodes) != 10 || nodes[0].Parent != "" || nodes[0].VM != tr.Root(s) {
			t.Fatalf("stripe %d: nodes %v", s, nodes)
		}
		home, _ := tr.Home(tr.Root(s))
		if home != s {
			t.Errorf("stripe %d: root %s has home %d", s, tr.Root(s), home)
		}
		if got := len(tr.Children(tr.Root(s), s)); got != 3 {
			t.Errorf("stripe %d: root has %d children, want 3", s, got)
		}
		if h := tr.Height(s); h != 2 {
			t.Errorf("stripe %d: height %d, want 2", s, h)
		}
	}
	if _, ok := tr.Parent("v1", 3); ok {
		t.Error("Parent in stripe 3 of 3 reported ok")
	}
	if ps, ok := tr.Parents("v0"); !ok || len(ps) != 3 {
		t.Errorf("Parents(v0) = %v, %v", ps, ok)
	}
}

func TestOptimalHeight(t *testing.T) {
	for _, c := range []struct{ n, d, want int }{
		{1, 2, 0}, {2, 2, 1}, {3, 2, 1}, {4, 2, 2}, {7, 2, 2}, {8, 2, 3},
		{4, 3, 1}, {5, 3, 2}, {13, 3, 2}, {14, 3, 3}, {128, 4, 4}, {85, 4, 3}, {86, 4, 4},
	} {
		if got := OptimalHeight(c.n, c.d); got != c.want {
			t.Errorf("OptimalHeight(%d, %d) = %d, want %d", c.n, c.d, got, c.want)
		}
	}
}

// TestStripedCheckCatchesCorruption breaks each rule by hand: Check must
// name it.
func TestStripedCheckCatchesCorruption(t *testing.T) {
	build := func() *Striped {
		tr, _ := NewStriped(2, nil)
		for i := range 9 {
			tr.Insert(fmt.Sprintf("v%d", i))
		}
		return tr
	}
	for name, corrupt := range map[string]func(*Striped){
		"unbalanced groups": func(tr *Striped) { tr.g[0]++; tr.g[1]-- },
		"swapped without positions": func(tr *Striped) {
			tr.at[0][1], tr.at[0][2] = tr.at[0][2], tr.at[0][1]
		},
		"home lost": func(tr *Striped) { tr.at[0][0].home = 1 },
		"member outside the prefix": func(tr *Striped) {
			// Swap a member into a leaf position of its stripe, keeping
			// positions consistent.
			a, b := tr.at[1][0], tr.at[1][8]
			tr.at[1][0], tr.at[1][8] = b, a
			a.pos[1], b.pos[1] = 8, 0
		},
	} {
		tr := build()
		if err := tr.Check(); err != nil {
			t.Fatalf("%s: before corruption: %v", name, err)
		}
		corrupt(tr)
		if err := tr.Check(); err == nil {
			t.Errorf("%s: Check passed", name)
		}
	}
}

// FuzzStriped runs operation sequences decoded from fuzz input: the first
// byte picks k, each other byte an insert or a delete of one of 40 VMs.
func FuzzStriped(f *testing.F) {
	f.Add([]byte{3, 0, 1, 2, 3, 4, 5, 6, 128, 129, 7, 8, 130})
	f.Add([]byte{4, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 131, 3, 131, 3, 133, 128})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		k := 1 + int(data[0])%6
		tr, err := NewStriped(k, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i, b := range data[1:] {
			vm := fmt.Sprintf("v%d", b%40)
			before := snapStriped(tr)
			var ch StripedChange
			if b >= 128 {
				ch, err = tr.Delete(vm)
			} else {
				ch, err = tr.Insert(vm)
			}
			if err != nil && !errors.Is(err, ErrExists) && !errors.Is(err, ErrNotFound) {
				t.Fatalf("step %d: %v", i, err)
			}
			if err := tr.Check(); err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
			if err := verifyStriped(k, before, snapStriped(tr), ch); err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
		}
	})
}

// TestStripedLayoutRoundTrip restores random trees from their layouts:
// the same links in every stripe, and the same changes on the next
// operations.
func TestStripedLayoutRoundTrip(t *testing.T) {
	for k := 2; k <= 4; k++ {
		r := rand.New(rand.NewPCG(uint64(k), 99))
		tr, _ := NewStriped(k, nil)
		m := newMembers()
		runStriped(t, r, tr, m, growing, 60)
		runStriped(t, r, tr, m, balanced, 60)
		cp, err := RestoreStriped(*tr.Layout())
		if err != nil {
			t.Fatalf("k=%d: %v", k, err)
		}
		if err := cp.Check(); err != nil {
			t.Fatalf("k=%d: restored: %v", k, err)
		}
		for s := range k {
			if fmt.Sprint(cp.Nodes(s)) != fmt.Sprint(tr.Nodes(s)) {
				t.Fatalf("k=%d: stripe %d differs after restore", k, s)
			}
		}
		vm := m.random(r)
		a, _ := tr.Delete(vm)
		b, _ := cp.Delete(vm)
		if fmt.Sprint(a) != fmt.Sprint(b) {
			t.Errorf("k=%d: delete after restore: %v, want %v", k, b, a)
		}
	}
	one, _ := NewStriped(1, nil)
	if one.Layout() != nil {
		t.Error("a one-stripe tree has a layout")
	}
}

func TestRestoreStripedRejects(t *testing.T) {
	for name, l := range map[string]Layout{
		"one stripe":        {Order: [][]string{{"a"}}, Members: []int{1}},
		"counts mismatch":   {Order: [][]string{{"a", "b"}, {"b", "a"}}, Members: []int{1}},
		"empty name":        {Order: [][]string{{""}, {""}}, Members: []int{1, 0}},
		"twice":             {Order: [][]string{{"a", "a"}, {"a", "a"}}, Members: []int{1, 1}},
		"other VMs":         {Order: [][]string{{"a", "b"}, {"a", "c"}}, Members: []int{1, 1}},
		"short stripe":      {Order: [][]string{{"a", "b"}, {"a"}}, Members: []int{1, 1}},
		"member twice":      {Order: [][]string{{"a", "b"}, {"a", "b"}}, Members: []int{1, 1}},
		"unbalanced":        {Order: [][]string{{"a", "b", "c"}, {"c", "a", "b"}}, Members: []int{3, 0}},
		"negative members":  {Order: [][]string{{"a", "b"}, {"b", "a"}}, Members: []int{3, -1}},
		"members not cover": {Order: [][]string{{"a", "b", "c"}, {"b", "a", "c"}}, Members: []int{1, 1}},
	} {
		if _, err := RestoreStriped(l); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
}

// FuzzRestoreStriped decodes layouts from fuzz input: each is refused or
// passes Check, and takes operations afterwards.
func FuzzRestoreStriped(f *testing.F) {
	f.Add([]byte{2, 3, 0, 1, 2, 1, 0, 2, 2, 1})
	f.Add([]byte{3, 4, 0, 1, 2, 3, 1, 2, 3, 0, 2, 3, 0, 1, 2, 1, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 2 {
			return
		}
		k, n := int(data[0])%5, int(data[1])%12
		data = data[2:]
		l := Layout{Order: make([][]string, k), Members: make([]int, k)}
		next := func() int {
			if len(data) == 0 {
				return 0
			}
			b := int(data[0])
			data = data[1:]
			return b
		}
		for s := range k {
			for range n {
				l.Order[s] = append(l.Order[s], fmt.Sprintf("v%d", next()%(n+1)))
			}
		}
		for s := range k {
			l.Members[s] = next()%(n+2) - 1
		}
		tr, err := RestoreStriped(l)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if err := tr.Check(); err != nil {
			t.Fatalf("restored %v: %v", l, err)
		}
		if _, err := tr.Insert("new"); err != nil {
			t.Fatal(err)
		}
		if err := tr.Check(); err != nil {
			t.Fatalf("insert after restoring %v: %v", l, err)
		}
	})
}

// TestStripedNodeMatchesNodes checks Node against the breadth-first listing
// for every VM and stripe.
func TestStripedNodeMatchesNodes(t *testing.T) {
	for _, k := range []int{1, 2, 3, 5} {
		tr, _ := NewStriped(k, nil)
		for i := range 23 {
			tr.Insert(fmt.Sprintf("v%d", i))
		}
		tr.Delete("v3")
		for s := range k {
			for _, want := range tr.Nodes(s) {
				got, ok := tr.Node(want.VM, s)
				if !ok || fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("k=%d stripe %d: Node(%s) = %v, %v; Nodes says %v", k, s, want.VM, got, ok, want)
				}
			}
		}
		if _, ok := tr.Node("v3", 0); ok {
			t.Errorf("k=%d: Node of a deleted VM", k)
		}
	}
}

// A VM that joins a tree of others never roots a stripe: it has nothing
// cached yet, and a stripe's root fetches that stripe from the registry
// while the others may hold it. Random joins and leaves, many small trees;
// a tree restored from its layout makes the same choice.
func TestNewVMRootsNoStripe(t *testing.T) {
	for k := 2; k <= 5; k++ {
		r := rand.New(rand.NewPCG(uint64(k), 7))
		tr, _ := NewStriped(k, nil)
		var in []string
		for step := range 3000 {
			if len(in) > 0 && (len(in) > 3*k || r.IntN(2) == 0) {
				i := r.IntN(len(in))
				if _, err := tr.Delete(in[i]); err != nil {
					t.Fatal(err)
				}
				in = slices.Delete(in, i, i+1)
				continue
			}
			var cp *Striped
			if len(in) > 0 {
				var err error
				if cp, err = RestoreStriped(*tr.Layout()); err != nil {
					t.Fatalf("k=%d step %d: restore: %v", k, step, err)
				}
			}
			vm := fmt.Sprintf("vm-%d", step)
			if _, err := tr.Insert(vm); err != nil {
				t.Fatal(err)
			}
			in = append(in, vm)
			if err := tr.Check(); err != nil {
				t.Fatalf("k=%d step %d: %v", k, step, err)
			}
			if cp != nil {
				cp.Insert(vm)
				for _, u := range in {
					a, _ := tr.Parents(u)
					b, _ := cp.Parents(u)
					if !slices.Equal(a, b) {
						t.Fatalf("k=%d step %d: %s has parents %v, restored %v", k, step, u, a, b)
					}
				}
			}
			if len(in) > 1 && slices.Contains(tr.Roots(), vm) {
				t.Fatalf("k=%d step %d: %s joined %d VMs and roots a stripe: roots %v", k, step, vm, len(in)-1, tr.Roots())
			}
		}
	}
}
