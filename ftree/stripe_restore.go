package ftree

import "fmt"

// A Layout is the state of a [Striped] of two or more stripes, enough to
// rebuild it exactly: per stripe, its VMs by position (Order[s][p]), and
// the number of home members of each stripe, which sit at its first
// positions. A control plane stores it; links follow from it (see the
// layout rules in the package doc).
type Layout struct {
	Order   [][]string `json:"order"`
	Members []int      `json:"members"`
}

// Layout returns t's layout; nil for a one-stripe tree, whose state is its
// [Tree.Links].
func (t *Striped) Layout() *Layout {
	if t.tree != nil {
		return nil
	}
	l := &Layout{Order: make([][]string, t.k), Members: append([]int(nil), t.g...)}
	for s, at := range t.at {
		l.Order[s] = make([]string, len(at))
		for p, v := range at {
			l.Order[s][p] = v.vm
		}
	}
	return l
}

// RestoreStriped rebuilds the Striped that l describes. l must have between
// 2 and [MaxStripes] stripes, each ordering the same distinct, non-empty VM
// names, with member counts that add up to the VMs, differ by at most one
// when there are more VMs than stripes, and put every VM among the members
// of exactly one stripe. Otherwise it
// returns an error wrapping [ErrInvalid]. The first stripe's order is
// taken as the insertion order.
func RestoreStriped(l Layout) (*Striped, error) {
	k := len(l.Order)
	if k < 2 || k > MaxStripes || len(l.Members) != k {
		return nil, fmt.Errorf("ftree: restore: %d stripes and %d member counts, want 2 to %d of each: %w", k, len(l.Members), MaxStripes, ErrInvalid)
	}
	t, _ := NewStriped(k, nil)
	n := len(l.Order[0])
	for i, name := range l.Order[0] {
		if name == "" {
			return nil, fmt.Errorf("ftree: restore: empty VM name: %w", ErrInvalid)
		}
		if _, ok := t.vms[name]; ok {
			return nil, fmt.Errorf("ftree: restore: VM %q listed twice: %w", name, ErrInvalid)
		}
		v := &svm{vm: name, home: -1, seq: uint64(i) + 1, pos: make([]int, k)}
		for s := range v.pos {
			v.pos[s] = -1
		}
		t.vms[name] = v
	}
	t.seq = uint64(n)
	for s, order := range l.Order {
		if len(order) != n {
			return nil, fmt.Errorf("ftree: restore: stripe %d holds %d VMs, stripe 0 %d: %w", s, len(order), n, ErrInvalid)
		}
		t.at[s] = make([]*svm, n)
		for p, name := range order {
			v, ok := t.vms[name]
			if !ok || v.pos[s] >= 0 {
				return nil, fmt.Errorf("ftree: restore: stripe %d lists %q, not in stripe 0 or twice: %w", s, name, ErrInvalid)
			}
			v.pos[s] = p
			t.at[s][p] = v
		}
		if g := l.Members[s]; g < 0 || g > n {
			return nil, fmt.Errorf("ftree: restore: stripe %d has %d members of %d VMs: %w", s, g, n, ErrInvalid)
		}
		t.g[s] = l.Members[s]
		for p := range t.g[s] {
			v := t.at[s][p]
			if v.home >= 0 {
				return nil, fmt.Errorf("ftree: restore: VM %q a member of stripes %d and %d: %w", v.vm, v.home, s, ErrInvalid)
			}
			v.home = s
		}
	}
	if err := t.checkGroups(); err != nil {
		return nil, fmt.Errorf("%w: %w", err, ErrInvalid)
	}
	return t, nil
}
