package ftree

import (
	"fmt"
	"slices"
	"strings"
)

// MaxStripes bounds k: more stripes than this would only add latency.
const MaxStripes = 16

// MaxMovesPerStripe bounds how many VMs of one stripe an Insert or Delete of
// a Striped with k stripes (k >= 2) re-parents: two swaps with their
// children, the overflow before and after, and the heap boundary.
func MaxMovesPerStripe(k int) int {
	if k <= 1 {
		return 3
	}
	return 5*k + 6
}

// A StripeMove says that VM now has Parent as its parent in stripe Stripe;
// Parent is "" when VM is that stripe's root.
type StripeMove struct {
	Stripe     int
	VM, Parent string
}

// A StripedChange describes the effect of one Insert or Delete of a
// [Striped].
type StripedChange struct {
	// Moved lists, per stripe, every VM still in the tree whose parent in
	// that stripe differs from before; an inserted VM counts in every
	// stripe, first. Within a stripe the others follow by name.
	Moved []StripeMove
	// Fanout lists every VM still in the tree whose number of children, in
	// some stripe, may differ from before.
	Fanout []string
	// Placed lists, by name, every VM still in the tree whose positions or
	// home stripe may differ from before (see [Striped.Placement]): with
	// two or more stripes a VM can change places under the same parents,
	// which Moved does not show. Empty with one stripe.
	Placed []string
}

// A Striped is one function's k stripe trees over the same VMs
// (SplitStream, Castro et al., SOSP 2003). The zero value is not usable;
// call [NewStriped]. It is not safe for concurrent use.
//
// One binary tree delivers an image at best at half a link's speed: every
// interior VM splits its uplink between two children, and the leaves, about
// half the VMs, upload nothing. A [Striped] tree cuts the content into k
// stripes (block i goes down stripe i mod k) and gives each stripe its own
// tree over the same VMs, such that each VM has children in at most one
// stripe, its home stripe, and is a leaf in all the others. A VM then
// uploads about as much as it downloads, and the registry still sends each
// byte once (each stripe's root fetches that stripe).
//
// # Fan-out
//
// Each stripe tree needs about (n-1)/d interior VMs at fan-out d, and the k
// stripes must find them among n VMs with disjoint interiors, so d must be
// at least about k: with fan-out 2 only two stripes can have disjoint
// interiors. With fan-out k each VM receives S (k stripes of S/k) and sends
// its k children one stripe each, S again, for any k. The simulator
// measured both (faasnet sim --stripes 3,4 with --stripe-fanout 2 or not;
// docs/sim/paper-stripes.txt): on the paper's 128 VMs, 758 MB and 1 Gbps,
// where S/B is 6.06 s, binary stripe trees took 12.3 s for 3 and 4 stripes,
// as long as one binary tree (12.2 s), because some VMs were interior in
// every stripe and sent 2S; fan-out k took 6.13 s for k = 4. So fan-out is
// k (and 2 for k = 1 and k = 2, where both coincide). A larger fan-out
// lengthens each level's pipeline delay (one block at bw/k), which is why
// the simulator's default is k = 2.
//
// # Layout
//
// Stripe s keeps its VMs in an array, at positions 0..n-1. Its home members
// G_s are exactly the VMs at positions 0..g_s-1, and the groups are balanced:
// their sizes differ by at most one. Links follow from the positions alone,
// as in a d-ary heap: position p > 0 has parent (p-1)/k, so the stripe tree
// is a complete k-ary tree, of the least height any tree of fan-out k over
// n VMs can have, whose interior is positions 0..I-1 with I =
// ceil((n-1)/k). When g_s >= I every interior VM is a home member. k
// balanced groups cannot all hold I members when (n-1) mod k is neither 0
// nor k-1 (k·I > n); a stripe with g_s < I then uses m = g_s interior VMs:
// positions up to k·m keep the heap's parent, and the few beyond
// (n-1-k·m <= k-2 of them once n > k) hang one each off positions 0, 1, ...
// as an extra child. Some VMs then have k+1 children and the height does not
// grow. Below k+1 VMs a stripe may have no home member; its tree is then
// the plain heap.
//
// Insert appends the VM at position n in every stripe and swaps it into its
// home stripe's member prefix; Delete moves the last VM of each stripe into
// the hole, and moves one VM between groups if the groups fell out of
// balance. Every step is a constant number of swaps per stripe, each of
// which re-parents the two VMs swapped and their at most k+1 children, and
// the change of n or g_s re-parents at most the k-2 overflow VMs and the k
// around the boundary k·m. So Insert and Delete take O(k²) time, O(1) in n,
// and move at most [MaxMovesPerStripe](k) parent links per stripe.
//
// With k = 1 a Striped is exactly a [Tree] (see [Striped.Tree]), with its
// weight-aware choices.
type Striped struct {
	k    int
	tree *Tree // k == 1
	vms  map[string]*svm
	at   [][]*svm // at[s][p]: the VM at position p of stripe s
	g    []int    // g[s]: home members of stripe s, at positions 0..g[s]-1
	seq  uint64

	// The operation under way records here each VM's parents before it
	// changed any; see touch.
	before map[*svm][]string
}

// svm is one VM of a Striped.
type svm struct {
	vm   string
	home int
	pos  []int // per stripe
	seq  uint64
}

// NewStriped returns an empty function tree of k stripes that, for k = 1,
// weighs VMs with w (see [New]). k must be between 1 and [MaxStripes].
func NewStriped(k int, w Weigher) (*Striped, error) {
	if k < 1 || k > MaxStripes {
		return nil, fmt.Errorf("ftree: %d stripes, want 1 to %d: %w", k, MaxStripes, ErrInvalid)
	}
	t := &Striped{k: k}
	if k == 1 {
		t.tree = New(w)
		return t, nil
	}
	t.vms = map[string]*svm{}
	t.at = make([][]*svm, k)
	t.g = make([]int, k)
	return t, nil
}

// WrapTree returns a one-stripe Striped that is t, for a caller that
// restored t (see [Restore]). t must not be changed but through the
// Striped.
func WrapTree(t *Tree) *Striped { return &Striped{k: 1, tree: t} }

// Stripes returns k.
func (t *Striped) Stripes() int { return t.k }

// Fanout returns the number of children an interior VM has in a stripe,
// at most one more where a stripe lacks home members (see the layout).
func (t *Striped) Fanout() int { return max(t.k, 2) }

// Tree returns the single tree of a one-stripe Striped, nil otherwise. The
// caller reads it and changes it only through t.
func (t *Striped) Tree() *Tree { return t.tree }

// Len returns the number of VMs.
func (t *Striped) Len() int {
	if t.tree != nil {
		return t.tree.Len()
	}
	return len(t.vms)
}

// Contains reports whether vm is in the tree.
func (t *Striped) Contains(vm string) bool {
	if t.tree != nil {
		return t.tree.Contains(vm)
	}
	_, ok := t.vms[vm]
	return ok
}

// Reweigh has a one-stripe tree read vm's weight again (see
// [Tree.Reweigh]); with more stripes the layout does not depend on weights.
func (t *Striped) Reweigh(vm string) {
	if t.tree != nil {
		t.tree.Reweigh(vm)
	}
}

// Home returns the stripe in which vm may have children, 0 with one stripe.
// It reports false if vm is not in the tree.
func (t *Striped) Home(vm string) (int, bool) {
	if t.tree != nil {
		return 0, t.tree.Contains(vm)
	}
	v, ok := t.vms[vm]
	if !ok {
		return 0, false
	}
	return v.home, true
}

// interior returns the number of interior positions of a k-ary heap of n.
func interior(n, k int) int {
	if n <= 1 {
		return 0
	}
	return (n - 1 + k - 1) / k
}

// params returns the number of positions of stripe s that must hold home
// members (need) and the number m of VMs that have children.
func (t *Striped) params(s int) (need, m int) {
	n := len(t.vms)
	i := interior(n, t.k)
	if t.g[s] == 0 {
		return 0, i
	}
	need = min(t.g[s], i)
	return need, need
}

// parentPos returns the parent position of position p in stripe s, -1 at
// the root.
func (t *Striped) parentPos(s, p int) int {
	if p == 0 {
		return -1
	}
	_, m := t.params(s)
	if p <= t.k*m {
		return (p - 1) / t.k
	}
	return (p - t.k*m - 1) % m
}

// childPos appends the child positions of position q in stripe s to dst.
func (t *Striped) childPos(dst []int, s, q int) []int {
	n := len(t.vms)
	_, m := t.params(s)
	if q >= m {
		return dst
	}
	for p := t.k*q + 1; p <= t.k*q+t.k && p < n; p++ {
		dst = append(dst, p)
	}
	for p := t.k*m + 1 + q; p < n; p += m {
		dst = append(dst, p)
	}
	return dst
}

// Root returns the root of stripe s, "" if the tree is empty or s is out of
// range.
func (t *Striped) Root(s int) string {
	if t.tree != nil {
		if s != 0 {
			return ""
		}
		return t.tree.Root()
	}
	if s < 0 || s >= t.k || len(t.at[s]) == 0 {
		return ""
	}
	return t.at[s][0].vm
}

// Roots returns every stripe's root, nil if the tree is empty.
func (t *Striped) Roots() []string {
	if t.Len() == 0 {
		return nil
	}
	out := make([]string, t.k)
	for s := range out {
		out[s] = t.Root(s)
	}
	return out
}

// Parent returns vm's parent in stripe s, "" if vm is that stripe's root.
// It reports false if vm is not in the tree or s is out of range.
func (t *Striped) Parent(vm string, s int) (string, bool) {
	if t.tree != nil {
		if s != 0 {
			return "", false
		}
		return t.tree.Parent(vm)
	}
	v, ok := t.vms[vm]
	if !ok || s < 0 || s >= t.k {
		return "", false
	}
	return t.parentName(v, s), true
}

func (t *Striped) parentName(v *svm, s int) string {
	pp := t.parentPos(s, v.pos[s])
	if pp < 0 {
		return ""
	}
	return t.at[s][pp].vm
}

// Parents returns vm's parent in each stripe ("" where vm is the root). It
// reports false if vm is not in the tree.
func (t *Striped) Parents(vm string) ([]string, bool) {
	if !t.Contains(vm) {
		return nil, false
	}
	out := make([]string, t.k)
	for s := range out {
		out[s], _ = t.Parent(vm, s)
	}
	return out, true
}

// Children returns vm's children in stripe s, in slot order; nil if vm is
// not in the tree, s is out of range or vm has none there.
func (t *Striped) Children(vm string, s int) []string {
	if t.tree != nil {
		if s != 0 {
			return nil
		}
		return t.tree.Children(vm)
	}
	v, ok := t.vms[vm]
	if !ok || s < 0 || s >= t.k {
		return nil
	}
	var out []string
	for _, p := range t.childPos(nil, s, v.pos[s]) {
		out = append(out, t.at[s][p].vm)
	}
	return out
}

// ChildCount returns vm's number of children over all stripes.
func (t *Striped) ChildCount(vm string) int {
	n := 0
	for s := range t.k {
		n += len(t.Children(vm, s))
	}
	return n
}

// depths returns the depth of every position of stripe s. A parent's
// position is always below its child's, so one pass in position order
// suffices.
func (t *Striped) depths(s int) []int {
	d := make([]int, len(t.at[s]))
	for p := 1; p < len(d); p++ {
		d[p] = d[t.parentPos(s, p)] + 1
	}
	return d
}

// Height returns the depth of stripe s's deepest VM, 0 if it is empty or s
// is out of range.
func (t *Striped) Height(s int) int {
	if t.tree != nil {
		if s != 0 {
			return 0
		}
		return t.tree.Height()
	}
	if s < 0 || s >= t.k || len(t.vms) == 0 {
		return 0
	}
	return slices.Max(t.depths(s))
}

// Node returns vm's position in stripe s, or false if vm is not in the
// tree or s is out of range. It takes O(height) time.
func (t *Striped) Node(vm string, s int) (Node, bool) {
	if t.tree != nil {
		if s != 0 {
			return Node{}, false
		}
		return t.tree.Node(vm)
	}
	v, ok := t.vms[vm]
	if !ok || s < 0 || s >= t.k {
		return Node{}, false
	}
	n := Node{VM: vm, Children: t.Children(vm, s)}
	p := v.pos[s]
	if pp := t.parentPos(s, p); pp >= 0 {
		n.Parent = t.at[s][pp].vm
		n.Slot = slices.Index(t.childPos(nil, s, pp), p)
	}
	for q := p; q > 0; q = t.parentPos(s, q) {
		n.Depth++
	}
	return n, true
}

// Nodes returns stripe s's VMs in breadth-first order, nil if s is out of
// range.
func (t *Striped) Nodes(s int) []Node {
	if t.tree != nil {
		if s != 0 {
			return nil
		}
		return t.tree.Nodes()
	}
	if s < 0 || s >= t.k {
		return nil
	}
	d := t.depths(s)
	out := make([]Node, 0, len(d))
	slot := make([]int, len(d))
	for p, v := range t.at[s] {
		n := Node{VM: v.vm, Depth: d[p]}
		if pp := t.parentPos(s, p); pp >= 0 {
			n.Parent = t.at[s][pp].vm
			n.Slot = slot[pp]
			slot[pp]++
		}
		n.Children = t.Children(v.vm, s)
		out = append(out, n)
	}
	slices.SortStableFunc(out, func(a, b Node) int { return a.Depth - b.Depth })
	return out
}

// Insert adds vm to every stripe. With one stripe it is [Tree.Insert].
// Otherwise vm joins the smallest group (the first of the smallest): it
// becomes a home member of that stripe, and a leaf in the others.
//
// While the tree has at most k VMs, vm joins the largest group instead, so
// that it roots no stripe: a stripe without members is laid out in order
// of arrival, and its root is a VM that was there before. A new VM has
// nothing cached, and as a stripe's root it would fetch that stripe from
// the registry while the function's first VM holds it all. (In the bursty
// trace replay that made the registry send 190 MiB against one tree's 160.)
// When the k+1th VM comes, members of the largest group move to the empty
// groups first, so the new VM roots no stripe then either.
func (t *Striped) Insert(vm string) (StripedChange, error) {
	if t.tree != nil {
		ch, err := t.tree.Insert(vm)
		return fromChange(ch), err
	}
	if vm == "" {
		return StripedChange{}, fmt.Errorf("ftree: insert: empty VM name: %w", ErrInvalid)
	}
	if _, ok := t.vms[vm]; ok {
		return StripedChange{}, fmt.Errorf("ftree: insert %q: %w", vm, ErrExists)
	}
	t.begin()
	t.touchLayout()
	t.seq++
	v := &svm{vm: vm, seq: t.seq, pos: make([]int, t.k)}
	t.vms[vm] = v
	for s := range t.k {
		v.pos[s] = len(t.at[s])
		t.at[s] = append(t.at[s], v)
	}
	switch n := len(t.vms); {
	case n <= t.k:
		t.addMember(v, t.largest())
	case n == t.k+1:
		t.fillEmptyGroups()
		t.addMember(v, t.smallest())
	default:
		t.addMember(v, t.smallest())
	}
	return t.end(v, nil), nil
}

// fillEmptyGroups gives every group without members one: the last member
// of the largest group, which joined it last unless leaves reordered it
// (chosen from the layout alone, so that a restored tree does alike). It is
// needed when the tree grows past k VMs: then every group must have a
// member. The VM being inserted is in no group yet.
func (t *Striped) fillEmptyGroups() {
	for s := range t.k {
		if t.g[s] > 0 {
			continue
		}
		big := t.largest()
		if t.g[big] < 2 {
			return
		}
		u := t.at[big][t.g[big]-1]
		t.dropMember(u)
		t.addMember(u, s)
	}
}

// Delete removes vm from every stripe. With one stripe it is
// [Tree.Delete]. Otherwise the last VM of each stripe takes vm's position
// (after vm left its group's prefix), and if the groups are then out of
// balance one VM moves from the largest group to vm's.
func (t *Striped) Delete(vm string) (StripedChange, error) {
	if t.tree != nil {
		ch, err := t.tree.Delete(vm)
		return fromChange(ch), err
	}
	v, ok := t.vms[vm]
	if !ok {
		return StripedChange{}, fmt.Errorf("ftree: delete %q: %w", vm, ErrNotFound)
	}
	t.begin()
	t.touchLayout()
	parents := make([]string, t.k)
	for s := range t.k {
		parents[s] = t.parentName(v, s)
	}
	t.dropMember(v)
	last := len(t.vms) - 1
	for s := range t.k {
		t.swap(s, v.pos[s], last)
	}
	t.touchLayout()
	delete(t.vms, vm)
	for s := range t.k {
		t.at[s][last] = nil
		t.at[s] = t.at[s][:last]
	}
	if big, small := t.largest(), t.smallest(); t.g[big]-t.g[small] > 1 {
		u := t.at[big][t.g[big]-1]
		t.dropMember(u)
		t.addMember(u, small)
	}
	return t.end(nil, parents), nil
}

// smallest returns the first stripe with the fewest home members.
func (t *Striped) smallest() int {
	best := 0
	for s := range t.k {
		if t.g[s] < t.g[best] {
			best = s
		}
	}
	return best
}

// largest returns the last stripe with the most home members.
func (t *Striped) largest() int {
	best := 0
	for s := range t.k {
		if t.g[s] >= t.g[best] {
			best = s
		}
	}
	return best
}

// addMember makes v, not in any group's prefix, a home member of stripe s.
func (t *Striped) addMember(v *svm, s int) {
	t.touchLayout()
	t.swap(s, v.pos[s], t.g[s])
	t.g[s]++
	v.home = s
	t.touchLayout()
}

// dropMember takes v out of its home group's prefix, to its end first.
func (t *Striped) dropMember(v *svm) {
	s := v.home
	t.touchLayout()
	t.swap(s, v.pos[s], t.g[s]-1)
	t.g[s]--
	v.home = -1
	t.touchLayout()
}

// swap exchanges the VMs at positions p and q of stripe s.
func (t *Striped) swap(s, p, q int) {
	if p == q {
		return
	}
	for _, x := range []int{p, q} {
		t.touch(t.at[s][x])
		for _, c := range t.childPos(nil, s, x) {
			t.touch(t.at[s][c])
		}
	}
	a, b := t.at[s][p], t.at[s][q]
	t.at[s][p], t.at[s][q] = b, a
	a.pos[s], b.pos[s] = q, p
}

// begin starts recording the parents that the operation changes.
func (t *Striped) begin() { t.before = map[*svm][]string{} }

// touch records v's parents, unless already recorded, before a step that
// may change them.
func (t *Striped) touch(v *svm) {
	if v == nil {
		return
	}
	if _, ok := t.before[v]; ok {
		return
	}
	ps := make([]string, t.k)
	for s := range t.k {
		ps[s] = t.parentName(v, s)
	}
	t.before[v] = ps
}

// touchLayout records the VMs whose parent follows from n and g rather than
// from the heap alone: those past the heap boundary k·m of each stripe, and
// the k before it, which a smaller m would move to the overflow.
func (t *Striped) touchLayout() {
	for s := range t.k {
		_, m := t.params(s)
		for p := max(1, t.k*(m-1)+1); p < len(t.at[s]); p++ {
			t.touch(t.at[s][p])
		}
	}
}

// end reports the change from what begin recorded; added is the inserted
// VM, removedParents the deleted VM's parents before.
func (t *Striped) end(added *svm, removedParents []string) StripedChange {
	var ch StripedChange
	fan := map[string]bool{}
	for _, ps := range [][]string{removedParents} {
		for _, p := range ps {
			fan[p] = true
		}
	}
	var moved []*svm
	for v := range t.before {
		if _, ok := t.vms[v.vm]; ok && v != added {
			moved = append(moved, v)
		}
	}
	// By name, so that a restored tree reports changes alike.
	slices.SortFunc(moved, func(a, b *svm) int { return strings.Compare(a.vm, b.vm) })
	for _, v := range moved {
		ch.Placed = append(ch.Placed, v.vm)
	}
	if added != nil {
		moved = append([]*svm{added}, moved...)
		i, _ := slices.BinarySearch(ch.Placed, added.vm)
		ch.Placed = slices.Insert(ch.Placed, i, added.vm)
	}
	for s := range t.k {
		for _, v := range moved {
			now := t.parentName(v, s)
			if v != added {
				was := t.before[v][s]
				if was == now {
					continue
				}
				fan[was] = true
			}
			fan[now] = true
			ch.Moved = append(ch.Moved, StripeMove{Stripe: s, VM: v.vm, Parent: now})
		}
	}
	for vm := range fan {
		if _, ok := t.vms[vm]; ok {
			ch.Fanout = append(ch.Fanout, vm)
		}
	}
	slices.Sort(ch.Fanout)
	t.before = nil
	return ch
}

func fromChange(ch Change) StripedChange {
	out := StripedChange{Fanout: ch.Fanout}
	for _, m := range ch.Moved {
		out.Moved = append(out.Moved, StripeMove{VM: m.VM, Parent: m.Parent})
	}
	return out
}
