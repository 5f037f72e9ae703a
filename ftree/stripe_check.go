package ftree

import "fmt"

// OptimalHeight returns the least height of a tree of n VMs in which no VM
// has more than d children (d >= 2): the least h with 1 + d + ... + d^h >= n.
func OptimalHeight(n, d int) int {
	h, full, level := 0, 1, 1
	for full < n {
		level *= d
		full += level
		h++
	}
	return h
}

// Check verifies every invariant of t and returns an error naming the first
// violation found. With one stripe it is [Tree.Check]. Otherwise it derives
// each stripe's links from the parent rule alone and checks, against them
// and the positions:
//
//   - each stripe holds every VM exactly once, at the position it records;
//   - the groups cover every VM once (a VM's home is the one stripe in whose
//     member prefix it sits), and with n >= k+1 their sizes differ by at
//     most one;
//   - every parent sits at a lower position than its child (so each stripe
//     is one tree), and the children found from the parents are those
//     Children reports;
//   - with n >= k+1, a VM has children only in its home stripe;
//   - each stripe's height is within one of [OptimalHeight](n, k), and no VM
//     has more than k children in a stripe, plus one per m VMs beyond the
//     heap where the stripe lacks members.
func (t *Striped) Check() error {
	if t.tree != nil {
		return t.tree.Check()
	}
	if err := t.checkPositions(); err != nil {
		return err
	}
	if err := t.checkGroups(); err != nil {
		return err
	}
	for s := range t.k {
		if err := t.checkStripe(s); err != nil {
			return fmt.Errorf("ftree: stripe %d: %w", s, err)
		}
	}
	return nil
}

func (t *Striped) checkPositions() error {
	n := len(t.vms)
	if len(t.at) != t.k || len(t.g) != t.k {
		return fmt.Errorf("ftree: %d stripes, %d arrays, %d groups", t.k, len(t.at), len(t.g))
	}
	for s, at := range t.at {
		if len(at) != n {
			return fmt.Errorf("ftree: stripe %d holds %d VMs, the tree %d", s, len(at), n)
		}
		for p, v := range at {
			if v == nil || t.vms[v.vm] != v || v.pos[s] != p {
				return fmt.Errorf("ftree: stripe %d position %d holds a stale or misplaced VM", s, p)
			}
		}
	}
	for name, v := range t.vms {
		if v.vm != name || len(v.pos) != t.k {
			return fmt.Errorf("ftree: VM %q filed under %q", v.vm, name)
		}
	}
	return nil
}

func (t *Striped) checkGroups() error {
	sum, lo, hi := 0, t.g[0], t.g[0]
	for _, g := range t.g {
		sum += g
		lo, hi = min(lo, g), max(hi, g)
	}
	// While the tree has at most k VMs the groups need not be balanced
	// (see Insert): no VM has to be a leaf anywhere yet.
	if sum != len(t.vms) || hi-lo > 1 && len(t.vms) > t.k {
		return fmt.Errorf("ftree: groups of sizes %v for %d VMs", t.g, len(t.vms))
	}
	for _, v := range t.vms {
		homes := 0
		for s := range t.k {
			if v.pos[s] < t.g[s] {
				homes++
				if v.home != s {
					return fmt.Errorf("ftree: VM %q in the members of stripe %d, home %d", v.vm, s, v.home)
				}
			}
		}
		if homes != 1 {
			return fmt.Errorf("ftree: VM %q a member of %d stripes", v.vm, homes)
		}
	}
	return nil
}

func (t *Striped) checkStripe(s int) error {
	n, k := len(t.vms), t.k
	kids := make([][]int, n)
	depth := make([]int, n)
	for p := 1; p < n; p++ {
		pp := t.parentPos(s, p)
		if pp < 0 || pp >= p {
			return fmt.Errorf("position %d has parent position %d", p, pp)
		}
		kids[pp] = append(kids[pp], p)
		depth[p] = depth[pp] + 1
	}
	if n > 0 && t.parentPos(s, 0) != -1 {
		return fmt.Errorf("the root has a parent")
	}
	_, m := t.params(s)
	extra := 0
	if over := n - 1 - k*m; over > 0 {
		extra = (over + m - 1) / m
	}
	height := 0
	for p, cs := range kids {
		v := t.at[s][p]
		height = max(height, depth[p])
		if got := t.childPos(nil, s, p); len(got) != len(cs) {
			return fmt.Errorf("VM %q has children at %v by the parent rule, at %v by childPos", v.vm, cs, got)
		}
		if len(cs) > k+extra {
			return fmt.Errorf("VM %q has %d children, want at most %d", v.vm, len(cs), k+extra)
		}
		if len(cs) > 0 && n >= k+1 && v.home != s {
			return fmt.Errorf("VM %q has children but its home is stripe %d", v.vm, v.home)
		}
	}
	if opt := OptimalHeight(n, k); height > opt+1 {
		return fmt.Errorf("height %d with %d VMs, optimum %d", height, n, opt)
	}
	return nil
}
