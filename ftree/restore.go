package ftree

import (
	"fmt"
	"slices"
)

// A Link is one VM's place in the tree: its parent ("" at the root) and its
// slot among the parent's children (0 at the root). The links of a tree are
// enough to rebuild it exactly.
type Link struct {
	VM, Parent string
	Slot       int
}

// Links returns one Link per VM, in insertion order. [Restore] takes that
// order as the insertion order, so a restored tree also breaks future ties as
// the original would.
func (t *Tree) Links() []Link {
	ns := make([]*node, 0, len(t.nodes))
	for _, n := range t.nodes {
		ns = append(ns, n)
	}
	slices.SortFunc(ns, func(a, b *node) int {
		switch {
		case a.seq < b.seq:
			return -1
		case a.seq > b.seq:
			return 1
		}
		return 0
	})
	out := make([]Link, len(ns))
	for i, n := range ns {
		out[i] = Link{VM: n.vm, Parent: n.parentName(), Slot: n.slot}
	}
	return out
}

// Restore rebuilds the tree described by links, with the same parents and
// slots, weighing VMs with w. The position of a link in the slice is its VM's
// insertion order, the last tie-breaker of later operations. The links must
// name each VM once, with a non-empty name, and form one tree: exactly one
// root (with slot 0), every parent in the tree, slots 0 or 1 and no slot taken
// twice, no cycles, and every level except the deepest full. Otherwise Restore
// returns an error wrapping [ErrInvalid] that names the offending VM.
func Restore(links []Link, w Weigher) (*Tree, error) {
	t := New(w)
	for i, l := range links {
		if err := checkLink(l); err != nil {
			return nil, err
		}
		if _, ok := t.nodes[l.VM]; ok {
			return nil, fmt.Errorf("ftree: restore: VM %q listed twice: %w", l.VM, ErrInvalid)
		}
		t.nodes[l.VM] = &node{vm: l.VM, slot: l.Slot, seq: uint64(i) + 1}
	}
	t.seq = uint64(len(links))
	if err := t.link(links); err != nil {
		return nil, err
	}
	order := t.breadthFirst()
	if len(order) != len(t.nodes) {
		return nil, fmt.Errorf("ftree: restore: %d of %d VMs are not below the root %q (a cycle): %w",
			len(t.nodes)-len(order), len(t.nodes), t.root.vm, ErrInvalid)
	}
	for _, n := range order {
		d := 0
		if n.parent != nil {
			d = n.parent.depth + 1
		}
		t.place(n, d)
		t.height = max(t.height, d)
	}
	for d := 0; d < t.height; d++ {
		if got, want := len(t.levels[d].all), 1<<d; got != want {
			return nil, fmt.Errorf("ftree: restore: depth %d holds %d VMs, want %d above the deepest depth %d: %w",
				d, got, want, t.height, ErrInvalid)
		}
	}
	return t, nil
}

func checkLink(l Link) error {
	switch {
	case l.VM == "":
		return fmt.Errorf("ftree: restore: empty VM name: %w", ErrInvalid)
	case l.Slot != 0 && l.Slot != 1:
		return fmt.Errorf("ftree: restore: VM %q in slot %d, want 0 or 1: %w", l.VM, l.Slot, ErrInvalid)
	case l.Parent == "" && l.Slot != 0:
		return fmt.Errorf("ftree: restore: root %q in slot %d, want 0: %w", l.VM, l.Slot, ErrInvalid)
	case l.Parent == l.VM:
		return fmt.Errorf("ftree: restore: VM %q is its own parent: %w", l.VM, ErrInvalid)
	}
	return nil
}

// link connects the nodes of t as links say and finds the root.
func (t *Tree) link(links []Link) error {
	for _, l := range links {
		n := t.nodes[l.VM]
		if l.Parent == "" {
			if t.root != nil {
				return fmt.Errorf("ftree: restore: two roots %q and %q: %w", t.root.vm, l.VM, ErrInvalid)
			}
			t.root = n
			continue
		}
		p, ok := t.nodes[l.Parent]
		if !ok {
			return fmt.Errorf("ftree: restore: VM %q has unknown parent %q: %w", l.VM, l.Parent, ErrInvalid)
		}
		if c := p.kids[l.Slot]; c != nil {
			return fmt.Errorf("ftree: restore: VMs %q and %q both in slot %d of %q: %w",
				c.vm, l.VM, l.Slot, l.Parent, ErrInvalid)
		}
		p.kids[l.Slot] = n
		n.parent = p
	}
	if t.root == nil && len(links) > 0 {
		return fmt.Errorf("ftree: restore: no root among %d VMs (a cycle): %w", len(links), ErrInvalid)
	}
	return nil
}
