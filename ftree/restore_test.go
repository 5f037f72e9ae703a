package ftree

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestRestoreRoundTrip(t *testing.T) {
	for seed := range 10 {
		r := rand.New(rand.NewPCG(uint64(seed), 4))
		tr, m := New(nil), newMembers()
		run(t, r, tr, m, balanced, 100+seed*50, 1000)
		if seed == 0 { // and the empty tree
			for _, vm := range append([]string(nil), m.names...) {
				if _, err := tr.Delete(vm); err != nil {
					t.Fatal(err)
				}
			}
		}
		got, err := Restore(tr.Links(), nil)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if err := got.Check(); err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if !reflect.DeepEqual(got.Nodes(), tr.Nodes()) || got.Height() != tr.Height() {
			t.Fatalf("seed %d: restored tree differs", seed)
		}
		// Insertion order survives, so both trees make the same choices.
		for range 50 {
			vm := m.fresh()
			want, err1 := tr.Insert(vm)
			have, err2 := got.Insert(vm)
			if err1 != nil || err2 != nil || !reflect.DeepEqual(want, have) {
				t.Fatalf("seed %d: insert %s: %+v, %v; restored %+v, %v", seed, vm, want, err1, have, err2)
			}
		}
	}
}

func TestRestoreRejects(t *testing.T) {
	tests := []struct {
		name  string
		links []Link
		want  string // in the error message
	}{
		{"empty name", []Link{{VM: ""}}, "empty VM name"},
		{"bad slot", []Link{{VM: "a"}, {VM: "b", Parent: "a", Slot: 2}}, "slot 2"},
		{"negative slot", []Link{{VM: "a"}, {VM: "b", Parent: "a", Slot: -1}}, "slot -1"},
		{"root in slot 1", []Link{{VM: "a", Slot: 1}}, "root"},
		{"own parent", []Link{{VM: "a"}, {VM: "b", Parent: "b"}}, "own parent"},
		{"duplicate VM", []Link{{VM: "a"}, {VM: "b", Parent: "a"}, {VM: "b", Parent: "a", Slot: 1}}, "twice"},
		{"two roots", []Link{{VM: "a"}, {VM: "b"}}, "two roots"},
		{"no root", []Link{{VM: "a", Parent: "b"}, {VM: "b", Parent: "a"}}, "no root"},
		{"unknown parent", []Link{{VM: "a"}, {VM: "b", Parent: "x"}}, "unknown parent"},
		{"slot taken", []Link{{VM: "a"}, {VM: "b", Parent: "a"}, {VM: "c", Parent: "a"}}, "both in slot 0"},
		{
			"cycle beside a root",
			[]Link{{VM: "a"}, {VM: "b", Parent: "c"}, {VM: "c", Parent: "b"}},
			"not below the root",
		},
		{
			"chain",
			[]Link{{VM: "a"}, {VM: "b", Parent: "a"}, {VM: "c", Parent: "b"}},
			"depth 1 holds 1 VMs, want 2",
		},
		{
			"gap above the deepest level",
			[]Link{
				{VM: "a"}, {VM: "b", Parent: "a"}, {VM: "c", Parent: "a", Slot: 1},
				{VM: "d", Parent: "b"}, {VM: "e", Parent: "d"},
			},
			"depth 2 holds 1 VMs, want 4",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := Restore(tc.links, nil)
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Restore = %v, %v; want an ErrInvalid saying %q", tr, err, tc.want)
			}
		})
	}
}

// TestRestoreAcceptsAnyLevelFullShape checks that Restore takes shapes this
// package would not build itself, e.g. a right child without a left one.
func TestRestoreAcceptsAnyLevelFullShape(t *testing.T) {
	links := []Link{
		{VM: "a"}, {VM: "c", Parent: "a", Slot: 1}, {VM: "b", Parent: "a"},
		{VM: "e", Parent: "c", Slot: 1},
	}
	tr, err := Restore(links, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Check(); err != nil {
		t.Fatal(err)
	}
	if got := shape(tr); got != "[a() b(a) c(a/1) e(c/1)]" {
		t.Errorf("shape = %s", got)
	}
	if !slices.Equal(tr.Links(), links) {
		t.Errorf("Links() = %v, want %v", tr.Links(), links)
	}
	// Insert continues from there: b is the lightest parent with a free
	// slot (no children), and its slot 0 is free.
	insertUnder(t, tr, "f", "b")
}

// decodeLinks turns fuzz input into links over a small name space, so that
// duplicates, cycles and missing parents are likely. Each link takes three
// bytes: the VM, the parent (0 for none) and the slot.
func decodeLinks(data []byte) []Link {
	name := func(b byte) string {
		if b%17 == 16 {
			return ""
		}
		return fmt.Sprintf("v%d", b%17)
	}
	var links []Link
	for ; len(data) >= 3; data = data[3:] {
		l := Link{VM: name(data[0]), Slot: int(data[2]%4) - 1}
		if data[1] != 0 {
			l.Parent = name(data[1])
		}
		if data[2] < 128 { // mostly valid slots
			l.Slot = int(data[2] % 2)
		}
		links = append(links, l)
	}
	return links
}

func encodeLinks(links []Link) []byte {
	var out []byte
	for _, l := range links {
		var vm, parent byte
		fmt.Sscanf(l.VM, "v%d", &vm)
		if l.Parent != "" {
			fmt.Sscanf(l.Parent, "v%d", &parent)
			if parent == 0 {
				parent = 17 // v0, but not "no parent"
			}
		}
		out = append(out, vm, parent, byte(l.Slot))
	}
	return out
}

func FuzzRestore(f *testing.F) {
	// Seeds: valid trees built by Insert, and some of the rejected shapes.
	tr := New(nil)
	for i := range 12 {
		if _, err := tr.Insert(fmt.Sprintf("v%d", i)); err != nil {
			f.Fatal(err)
		}
		f.Add(encodeLinks(tr.Links()))
	}
	f.Add([]byte{})
	f.Add([]byte{1, 0, 0, 2, 1, 0, 3, 2, 0})   // chain
	f.Add([]byte{1, 2, 0, 2, 1, 0})            // cycle
	f.Add([]byte{1, 0, 0, 2, 1, 0, 3, 1, 0})   // slot taken
	f.Add([]byte{1, 0, 200, 2, 1, 0, 3, 1, 1}) // root in a bad slot
	f.Add([]byte{16, 0, 0, 2, 16, 0, 3, 1, 1}) // empty names
	f.Fuzz(func(t *testing.T, data []byte) {
		links := decodeLinks(data)
		tr, err := Restore(links, func(vm string) int { return len(vm) })
		if err != nil {
			if !errors.Is(err, ErrInvalid) || tr != nil {
				t.Fatalf("Restore = %v, %v", tr, err)
			}
			return
		}
		if err := tr.Check(); err != nil {
			t.Fatalf("accepted %v: %v", links, err)
		}
		if !slices.Equal(tr.Links(), links) {
			t.Fatalf("Links() = %v, want %v", tr.Links(), links)
		}
		// The accepted tree keeps its invariants under further changes.
		for _, l := range links {
			if _, err := tr.Delete(l.VM); err != nil {
				t.Fatal(err)
			}
			if err := tr.Check(); err != nil {
				t.Fatalf("after deleting %s from %v: %v", l.VM, links, err)
			}
		}
	})
}

// FuzzOps runs operation sequences decoded from fuzz input: each byte is an
// insert or a delete of one of 32 VMs, so that the sequence revisits names.
func FuzzOps(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 128, 129, 7, 8, 130})
	f.Add([]byte{0, 1, 2, 3, 131, 3, 131, 3, 131, 128})
	f.Fuzz(func(t *testing.T, data []byte) {
		tr := New(func(vm string) int { return len(vm) % 3 })
		for i, b := range data {
			vm := fmt.Sprintf("v%d", b%32)
			before := snapshot(tr)
			var ch Change
			var err error
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
			if err := verifyChange(before, snapshot(tr), ch); err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
		}
	})
}
