package ftree

// Placement returns vm's position in each stripe and its home stripe, as
// [Striped.Layout] has them, in O(k) rather than O(n); false if vm is not in
// the tree or the tree has one stripe.
func (t *Striped) Placement(vm string) (positions []int, home int, ok bool) {
	if t.tree != nil {
		return nil, 0, false
	}
	v, ok := t.vms[vm]
	if !ok {
		return nil, 0, false
	}
	return append([]int(nil), v.pos...), v.home, true
}
