package manager

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/ftree"
	"github.com/faasnet/faasnet/manager/store"
	"github.com/faasnet/faasnet/stripe"
)

// A follower keeps its copy of the state with etcd's watch
// (store.Elector.WatchChanges): the whole state once, then each change as
// the batch that made it. A change costs what it touched: the VMs it
// names, and the trees of the functions whose nodes it names, rebuilt
// from the nodes as stored, rather than a load of everything (at 10,000
// VMs a load takes longer than the changes come).

// follow is a follower's record of the stored nodes, by function and VM, to
// rebuild a function's trees from. nil without an election.
type follow struct {
	nodes map[string]map[string]store.Node
	// stale is set while this manager leads: its state is its own, not
	// the watch's, and the watch's changes are not applied to it; the
	// first change after it stops leading loads the whole state again.
	stale bool
	loads int // whole states loaded from the watch, for tests
}

func (f *follow) node(n store.Node) {
	if f.nodes == nil {
		return
	}
	if f.nodes[n.Function] == nil {
		f.nodes[n.Function] = map[string]store.Node{}
	}
	f.nodes[n.Function][n.VM] = n
}

// followChange applies one report of the watch to a follower's copy. It
// asks for the whole state again (true) when the copy cannot take the
// change: this manager led meanwhile, or the change does not fit the copy.
func (m *Manager) followChange(c store.StateChange) (resync bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.Leading() {
		m.follow.stale = true
		return false
	}
	if c.Full != nil {
		if err := m.loadState(*c.Full); err != nil {
			m.log.Warn("follower: loading the state", "err", err)
			m.ha.unknown.Store(true)
			return false
		}
		m.mergeTrust(*c.Full)
		m.ha.unknown.Store(false)
		m.follow.stale = false
		m.follow.loads++
		return false
	}
	if m.follow.stale {
		return true
	}
	if err := m.applyChange(c.Batch); err != nil {
		m.log.Warn("follower: applying a change of the stored state; loading it whole", "err", err)
		m.ha.unknown.Store(true)
		return true
	}
	return false
}

// errFollow marks a change that does not fit a follower's copy.
var errFollow = errors.New("the change does not fit this manager's copy of the state")

// applyChange applies b, a change the store made, to the copy, as a store
// applies a batch: deletes, then puts. m.mu is held.
func (m *Manager) applyChange(b store.Batch) error {
	now := m.opts.Now()
	m.revision = max(m.revision, b.Revision)
	for _, v := range b.PutVMs {
		vs, ok := m.vms[v.Name]
		if !ok {
			vs = &vmState{lastSeen: now}
			m.vms[v.Name] = vs
		}
		vs.rec = v
		m.forest.SetVM(v.Name, v.Capacity)
	}
	fns := map[string]bool{}
	recs := map[string]*store.Function{}
	for name, f := range m.fns {
		recs[name] = &f.rec
	}
	for _, fn := range b.DeleteFunctions {
		fns[fn] = true
		delete(recs, fn)
		delete(m.follow.nodes, fn)
	}
	for _, k := range b.DeleteNodes {
		fns[k.Function] = true
		delete(m.follow.nodes[k.Function], k.VM)
	}
	for i := range b.PutFunctions {
		fns[b.PutFunctions[i].Name] = true
		recs[b.PutFunctions[i].Name] = &b.PutFunctions[i]
	}
	for _, n := range b.PutNodes {
		fns[n.Function] = true
		m.follow.node(n)
	}
	for _, fn := range slices.Sorted(maps.Keys(fns)) {
		if err := m.rebuildCopy(fn, recs[fn]); err != nil {
			return err
		}
	}
	for _, vm := range b.DeleteVMs {
		if err := m.forest.RemoveVM(vm); err != nil {
			return fmt.Errorf("%w: %w", errFollow, err)
		}
		delete(m.vms, vm)
	}
	if len(b.PutTokens) > 0 || len(b.PutCerts) > 0 {
		m.mergeTrust(store.State{Tokens: b.PutTokens, Certs: b.PutCerts})
	}
	return nil
}

// rebuildCopy gives function fn the trees its stored nodes describe, with
// the record rec; nil rec: fn is gone. m.mu is held.
func (m *Manager) rebuildCopy(fn string, rec *store.Function) error {
	if _, ok := m.fns[fn]; ok {
		if _, err := m.forest.RemoveFunction(fn); err != nil {
			return fmt.Errorf("%w: %w", errFollow, err)
		}
		delete(m.fns, fn)
	}
	if rec == nil {
		if len(m.follow.nodes[fn]) > 0 {
			return fmt.Errorf("%w: nodes of function %s, which is gone", errFollow, fn)
		}
		delete(m.follow.nodes, fn)
		return nil
	}
	r := *rec
	if r.BlockSize == 0 {
		r.BlockSize = stripe.DefaultBlock
	}
	f := &fnState{rec: r, gen: map[string]uint64{}, reports: map[string]api.FunctionReport{}}
	nodes := m.follow.nodes[fn]
	var links []ftree.Link
	var striped []store.Node
	for _, vm := range slices.Sorted(maps.Keys(nodes)) {
		n := nodes[vm]
		if _, ok := m.vms[vm]; !ok {
			return fmt.Errorf("%w: node %s/%s names an unknown VM", errFollow, fn, vm)
		}
		if r.Stripes >= 2 {
			striped = append(striped, n)
		} else {
			links = append(links, ftree.Link{VM: n.VM, Parent: n.Parent, Slot: n.Slot})
		}
		f.gen[vm] = n.Generation
		m.recordAssigned(vm, r.Image)
	}
	if err := m.restoreTrees(f, links, striped); err != nil {
		return fmt.Errorf("%w: %w", errFollow, err)
	}
	f.tree = m.forest.Striped(fn)
	m.fns[fn] = f
	return nil
}
