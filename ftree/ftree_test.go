package ftree

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"
)

// op is one step of a scripted test.
type op struct {
	del bool
	vm  string
}

func ins(vm string) op { return op{vm: vm} }
func del(vm string) op { return op{del: true, vm: vm} }

// apply runs o on tr and checks the tree and the reported change afterwards.
func apply(t *testing.T, tr *Tree, o op) (Change, error) {
	t.Helper()
	before := snapshot(tr)
	var ch Change
	var err error
	if o.del {
		ch, err = tr.Delete(o.vm)
	} else {
		ch, err = tr.Insert(o.vm)
	}
	if cerr := tr.Check(); cerr != nil {
		t.Fatalf("after %+v: %v", o, cerr)
	}
	if err == nil {
		if verr := verifyChange(before, snapshot(tr), ch); verr != nil {
			t.Fatalf("after %+v: %v", o, verr)
		}
	} else if !reflect.DeepEqual(before, snapshot(tr)) {
		t.Fatalf("failed %+v changed the tree", o)
	}
	return ch, err
}

// shape renders a tree as "vm(parent)" in breadth-first order, with a slot
// marker for right children, e.g. "a() b(a) c(a/1)".
func shape(tr *Tree) string {
	var s []string
	for _, n := range tr.Nodes() {
		slot := ""
		if n.Slot == 1 {
			slot = "/1"
		}
		s = append(s, fmt.Sprintf("%s(%s%s)", n.VM, n.Parent, slot))
	}
	return fmt.Sprint(s)
}

func TestScripts(t *testing.T) {
	tests := []struct {
		name   string
		ops    []op
		last   Change
		shape  string
		height int
	}{
		{
			name:  "empty",
			shape: "[]",
		},
		{
			name:  "one",
			ops:   []op{ins("a")},
			last:  Change{Moved: []Move{{"a", ""}}},
			shape: "[a()]",
		},
		{
			name:   "two",
			ops:    []op{ins("a"), ins("b")},
			last:   Change{Moved: []Move{{"b", "a"}}, Fanout: []string{"a"}},
			shape:  "[a() b(a)]",
			height: 1,
		},
		{
			name:   "three",
			ops:    []op{ins("a"), ins("b"), ins("c")},
			last:   Change{Moved: []Move{{"c", "a"}}, Fanout: []string{"a"}},
			shape:  "[a() b(a) c(a/1)]",
			height: 1,
		},
		{
			name: "fourth goes under the earliest leaf",
			ops:  []op{ins("a"), ins("b"), ins("c"), ins("d")},
			last: Change{Moved: []Move{{"d", "b"}}, Fanout: []string{"b"}},
			// b and c tie on weight and fan-out; b came first.
			shape:  "[a() b(a) c(a/1) d(b)]",
			height: 2,
		},
		{
			name: "fifth prefers the parent with fewer children",
			ops:  []op{ins("a"), ins("b"), ins("c"), ins("d"), ins("e")},
			last: Change{Moved: []Move{{"e", "c"}}, Fanout: []string{"c"}},
			// b has a child already, c has none.
			shape:  "[a() b(a) c(a/1) d(b) e(c)]",
			height: 2,
		},
		{
			name:  "delete the only VM",
			ops:   []op{ins("a"), del("a")},
			last:  Change{},
			shape: "[]",
		},
		{
			name:  "delete the root of two: its child is the new root",
			ops:   []op{ins("a"), ins("b"), del("a")},
			last:  Change{Moved: []Move{{"b", ""}}},
			shape: "[b()]",
		},
		{
			name:   "delete a leaf",
			ops:    []op{ins("a"), ins("b"), ins("c"), del("b")},
			last:   Change{Fanout: []string{"a"}},
			shape:  "[a() c(a/1)]",
			height: 1,
		},
		{
			name: "delete the root of three: its own child replaces it",
			ops:  []op{ins("a"), ins("b"), ins("c"), del("a")},
			// c (slot 1 of the only parent a) replaces a and adopts b.
			last:   Change{Moved: []Move{{"c", ""}, {"b", "c"}}, Fanout: []string{"c"}},
			shape:  "[c() b(c)]",
			height: 1,
		},
		{
			name: "delete an interior VM: a deepest VM elsewhere replaces it",
			ops:  []op{ins("a"), ins("b"), ins("c"), ins("d"), ins("e"), ins("f"), ins("g"), del("b")},
			// Fan-out alternates: d,f under b and e,g under c. All weights
			// are 0, both have 2 children, c is the latest: g (slot 1) moves.
			last: Change{
				Moved:  []Move{{"g", "a"}, {"d", "g"}, {"f", "g"}},
				Fanout: []string{"c", "g"},
			},
			shape:  "[a() g(a) c(a/1) d(g) f(g/1) e(c)]",
			height: 2,
		},
		{
			name: "delete the root of a full tree",
			ops:  []op{ins("a"), ins("b"), ins("c"), ins("d"), ins("e"), ins("f"), ins("g"), del("a")},
			last: Change{
				Moved:  []Move{{"g", ""}, {"b", "g"}, {"c", "g"}},
				Fanout: []string{"c", "g"},
			},
			shape:  "[g() b(g) c(g/1) d(b) f(b/1) e(c)]",
			height: 2,
		},
		{
			name: "delete a parent of deepest VMs: its own child replaces it",
			ops:  []op{ins("a"), ins("b"), ins("c"), ins("d"), ins("e"), ins("f"), ins("g"), del("c")},
			last: Change{
				Moved:  []Move{{"g", "a"}, {"e", "g"}},
				Fanout: []string{"g"},
			},
			shape:  "[a() b(a) g(a/1) d(b) f(b/1) e(g)]",
			height: 2,
		},
		{
			name: "the last deepest VM leaves: the tree shrinks a level",
			ops:  []op{ins("a"), ins("b"), ins("c"), ins("d"), del("a")},
			last: Change{
				Moved:  []Move{{"d", ""}, {"b", "d"}, {"c", "d"}},
				Fanout: []string{"b", "d"},
			},
			shape:  "[d() b(d) c(d/1)]",
			height: 1,
		},
		{
			name:   "re-insert after delete",
			ops:    []op{ins("a"), ins("b"), ins("c"), del("b"), ins("b")},
			last:   Change{Moved: []Move{{"b", "a"}}, Fanout: []string{"a"}},
			shape:  "[a() b(a) c(a/1)]",
			height: 1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := New(nil)
			var last Change
			for _, o := range tc.ops {
				var err error
				if last, err = apply(t, tr, o); err != nil {
					t.Fatalf("%+v: %v", o, err)
				}
			}
			if !reflect.DeepEqual(last, tc.last) {
				t.Errorf("last change = %+v, want %+v", last, tc.last)
			}
			if got := shape(tr); got != tc.shape {
				t.Errorf("shape = %s, want %s", got, tc.shape)
			}
			if tr.Height() != tc.height {
				t.Errorf("Height() = %d, want %d", tr.Height(), tc.height)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	tr := New(nil)
	for _, vm := range []string{"a", "b", "c"} {
		if _, err := tr.Insert(vm); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		o    op
		want error
	}{
		{ins("a"), ErrExists},
		{ins("c"), ErrExists},
		{ins(""), ErrInvalid},
		{del("x"), ErrNotFound},
		{del(""), ErrNotFound},
	}
	for _, tc := range tests {
		ch, err := apply(t, tr, tc.o)
		if !errors.Is(err, tc.want) {
			t.Errorf("%+v: error %v, want %v", tc.o, err, tc.want)
		}
		if ch.Moved != nil || ch.Fanout != nil {
			t.Errorf("%+v: change %+v on error", tc.o, ch)
		}
	}
}

func TestLookups(t *testing.T) {
	tr := New(nil)
	for _, vm := range []string{"a", "b", "c", "d"} {
		if _, err := tr.Insert(vm); err != nil {
			t.Fatal(err)
		}
	}
	if got := tr.Root(); got != "a" {
		t.Errorf("Root() = %q", got)
	}
	if got := tr.Len(); got != 4 {
		t.Errorf("Len() = %d", got)
	}
	tests := []struct {
		vm       string
		in       bool
		parent   string
		depth    int
		children []string
	}{
		{vm: "a", in: true, children: []string{"b", "c"}},
		{vm: "b", in: true, parent: "a", depth: 1, children: []string{"d"}},
		{vm: "c", in: true, parent: "a", depth: 1},
		{vm: "d", in: true, parent: "b", depth: 2},
		{vm: "x"},
	}
	for _, tc := range tests {
		if got := tr.Contains(tc.vm); got != tc.in {
			t.Errorf("Contains(%q) = %v", tc.vm, got)
		}
		p, ok := tr.Parent(tc.vm)
		if ok != tc.in || p != tc.parent {
			t.Errorf("Parent(%q) = %q, %v", tc.vm, p, ok)
		}
		d, ok := tr.Depth(tc.vm)
		if ok != tc.in || d != tc.depth {
			t.Errorf("Depth(%q) = %d, %v", tc.vm, d, ok)
		}
		if got := tr.Children(tc.vm); !slices.Equal(got, tc.children) {
			t.Errorf("Children(%q) = %q", tc.vm, got)
		}
	}
	// A right child alone keeps its slot.
	if _, err := tr.Delete("d"); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.Delete("b"); err != nil {
		t.Fatal(err)
	}
	want := []Node{
		{VM: "a", Children: []string{"c"}},
		{VM: "c", Parent: "a", Slot: 1, Depth: 1},
	}
	if got := tr.Nodes(); !reflect.DeepEqual(got, want) {
		t.Errorf("Nodes() = %+v, want %+v", got, want)
	}
	// The free slot 0 is used first.
	if _, err := tr.Insert("e"); err != nil {
		t.Fatal(err)
	}
	if got := tr.Children("a"); !slices.Equal(got, []string{"e", "c"}) {
		t.Errorf("Children(a) = %q, want [e c]", got)
	}
}

func TestEmpty(t *testing.T) {
	tr := New(nil)
	if err := tr.Check(); err != nil {
		t.Fatal(err)
	}
	if tr.Len() != 0 || tr.Height() != 0 || tr.Root() != "" || tr.Nodes() == nil || len(tr.Nodes()) != 0 ||
		len(tr.Links()) != 0 {
		t.Errorf("empty tree: Len %d Height %d Root %q Nodes %v Links %v",
			tr.Len(), tr.Height(), tr.Root(), tr.Nodes(), tr.Links())
	}
	tr.Reweigh("x") // no-op, no panic
}

// TestCheckCatchesCorruption makes sure Check is not vacuous: each way of
// breaking a valid tree must be reported.
func TestCheckCatchesCorruption(t *testing.T) {
	tests := []struct {
		name    string
		corrupt func(tr *Tree)
	}{
		{"child not linking back", func(tr *Tree) { tr.nodes["d"].parent = tr.nodes["c"] }},
		{"wrong slot", func(tr *Tree) { tr.nodes["c"].slot = 0 }},
		{"wrong depth", func(tr *Tree) { tr.nodes["e"].depth = 1 }},
		{"wrong height", func(tr *Tree) { tr.height = 3 }},
		{"unreachable cycle", func(tr *Tree) {
			x, y := &node{vm: "x", slot: 0}, &node{vm: "y", slot: 0}
			x.parent, x.kids[0], y.parent, y.kids[0] = y, y, x, x
			tr.nodes["x"], tr.nodes["y"] = x, y
		}},
		{"unbalanced", func(tr *Tree) { // move d and f from b to below e
			b, d, e, f := tr.nodes["b"], tr.nodes["d"], tr.nodes["e"], tr.nodes["f"]
			b.kids = [2]*node{}
			e.kids = [2]*node{d, f}
			d.parent, d.depth, f.parent, f.depth = e, 3, e, 3
		}},
		{"balanced but level not full", func(tr *Tree) { // move g from c to below d
			c, d, g := tr.nodes["c"], tr.nodes["d"], tr.nodes["g"]
			c.kids[1], d.kids[0], g.parent, g.slot, g.depth = nil, g, d, 0, 3
		}},
		{"heap out of order", func(tr *Tree) { tr.levels[2].open.nodes[0].weight = 100 }},
		{"missing from a heap", func(tr *Tree) {
			n := tr.levels[2].open.nodes[0]
			tr.levels[2].open.set(n, false)
		}},
		{"stale index", func(tr *Tree) { tr.nodes["a"].pos[posAll] = 1 }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := New(nil)
			// b has children d, f and c has e, g.
			for _, vm := range []string{"a", "b", "c", "d", "e", "f", "g"} {
				if _, err := tr.Insert(vm); err != nil {
					t.Fatal(err)
				}
			}
			if err := tr.Check(); err != nil {
				t.Fatal(err)
			}
			tc.corrupt(tr)
			err := tr.Check()
			if err == nil {
				t.Fatal("Check passed a corrupt tree")
			}
			t.Log(err)
		})
	}
}
