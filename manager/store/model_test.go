package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// model is the reference semantics of a Store, written independently of the
// implementations: plain maps of records.
type model struct {
	vms   map[string]VM
	funcs map[string]Function
	nodes map[NodeKey]Node
}

func newModel() *model {
	return &model{vms: map[string]VM{}, funcs: map[string]Function{}, nodes: map[NodeKey]Node{}}
}

// apply applies b as Batch documents it, or returns the error class that
// must refuse it and leaves m unchanged.
func (m *model) apply(b Batch) error {
	if !m.valid(b) {
		return ErrInvalid
	}
	next := &model{vms: maps.Clone(m.vms), funcs: maps.Clone(m.funcs), nodes: maps.Clone(m.nodes)}
	for _, k := range b.DeleteVMs {
		delete(next.vms, k)
	}
	for _, k := range b.DeleteFunctions {
		delete(next.funcs, k)
		for nk := range next.nodes {
			if nk.Function == k {
				delete(next.nodes, nk)
			}
		}
	}
	for _, k := range b.DeleteNodes {
		delete(next.nodes, k)
	}
	for _, v := range b.PutVMs {
		if len(v.Images) == 0 {
			v.Images = nil
		}
		next.vms[v.Name] = v
	}
	for _, f := range b.PutFunctions {
		next.funcs[f.Name] = f
	}
	for _, n := range b.PutNodes {
		if _, ok := next.funcs[n.Function]; !ok {
			return ErrUnknownFunction
		}
		next.nodes[n.Key()] = n
	}
	*m = *next
	return nil
}

func (m *model) valid(b Batch) bool {
	name := func(s string) bool { return s != "" && len(s) <= MaxNameLen && utf8.ValidString(s) }
	ok := true
	for _, s := range b.DeleteVMs {
		ok = ok && name(s)
	}
	for _, s := range b.DeleteFunctions {
		ok = ok && name(s)
	}
	for _, k := range b.DeleteNodes {
		ok = ok && name(k.Function) && name(k.VM)
	}
	for _, v := range b.PutVMs {
		ok = ok && name(v.Name) && utf8.ValidString(v.Addr)
		for _, img := range v.Images {
			ok = ok && utf8.ValidString(img)
		}
	}
	for _, f := range b.PutFunctions {
		ok = ok && name(f.Name) && utf8.ValidString(f.Image) && (len(f.Spec) == 0 || json.Valid(f.Spec))
	}
	for _, n := range b.PutNodes {
		ok = ok && name(n.Function) && name(n.VM) && utf8.ValidString(n.Parent)
	}
	return ok
}

func (m *model) state() State {
	var st State
	for _, k := range slices.Sorted(maps.Keys(m.vms)) {
		st.VMs = append(st.VMs, m.vms[k])
	}
	for _, k := range slices.Sorted(maps.Keys(m.funcs)) {
		st.Functions = append(st.Functions, m.funcs[k])
	}
	keys := slices.SortedFunc(maps.Keys(m.nodes), func(a, b NodeKey) int {
		return strings.Compare(a.Function+"\x00"+a.VM, b.Function+"\x00"+b.VM)
	})
	for _, k := range keys {
		st.Nodes = append(st.Nodes, m.nodes[k])
	}
	return st
}

// gen draws batches over few names, so that keys collide often, with now
// and then an invalid entry.
type gen struct{ r *rand.Rand }

func (g gen) pick(prefix string, n int) string {
	switch g.r.IntN(60) {
	case 0:
		return ""
	case 1:
		return prefix + "\xff"
	}
	return fmt.Sprintf("%s%d", prefix, g.r.IntN(n))
}

func (g gen) vmName() string { return g.pick("vm-", 6) }
func (g gen) fnName() string { return g.pick("fn-", 3) }

func (g gen) batch() Batch {
	var b Batch
	for range g.r.IntN(3) {
		v := VM{Name: g.vmName(), Addr: fmt.Sprintf("127.0.0.%d:7000", g.r.IntN(9)), Capacity: g.r.IntN(30)}
		for i := range g.r.IntN(3) {
			v.Images = append(v.Images, fmt.Sprintf("img-%d", i))
		}
		b.PutVMs = append(b.PutVMs, v)
	}
	for range g.r.IntN(2) {
		b.DeleteVMs = append(b.DeleteVMs, g.vmName())
	}
	for range g.r.IntN(2) {
		f := Function{Name: g.fnName(), Image: "img", Generation: g.r.Uint64N(100)}
		switch g.r.IntN(4) {
		case 0:
			f.Spec = json.RawMessage(fmt.Sprintf(`{"n":%d}`, g.r.IntN(9)))
		case 1:
			if g.r.IntN(10) == 0 {
				f.Spec = json.RawMessage(`{"n":`)
			}
		}
		b.PutFunctions = append(b.PutFunctions, f)
	}
	if g.r.IntN(8) == 0 {
		b.DeleteFunctions = append(b.DeleteFunctions, g.fnName())
	}
	for range g.r.IntN(4) {
		b.PutNodes = append(b.PutNodes, Node{
			Function: g.fnName(), VM: g.vmName(), Parent: fmt.Sprintf("vm-%d", g.r.IntN(6)),
			Slot: g.r.IntN(2), Generation: g.r.Uint64N(100),
		})
	}
	for range g.r.IntN(2) {
		b.DeleteNodes = append(b.DeleteNodes, NodeKey{g.fnName(), g.vmName()})
	}
	return b
}

// testModel applies seeded random batches to the store and to the model and
// requires the same outcome after every batch.
func testModel(t *testing.T, open opener) {
	steps := 300
	if testing.Short() {
		steps = 60
	}
	for seed := range uint64(3) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			s, m, g := open(t), newModel(), gen{rand.New(rand.NewPCG(seed, 1))}
			refused := map[error]int{}
			for i := range steps {
				b := g.batch()
				wantErr, err := m.apply(b), s.Apply(t.Context(), b)
				refused[wantErr]++
				if (wantErr == nil) != (err == nil) || wantErr != nil && !errors.Is(err, wantErr) {
					t.Fatalf("step %d: Apply(%+v) = %v, want %v", i, b, err, wantErr)
				}
				if got, want := mustLoad(t, s), m.state(); !reflect.DeepEqual(got, want) {
					t.Fatalf("step %d: after Apply(%+v):\n got %+v\nwant %+v", i, b, got, want)
				}
			}
			st := m.state()
			t.Logf("outcomes %v; final state: %d vms, %d functions, %d nodes", refused, len(st.VMs), len(st.Functions), len(st.Nodes))
			// A generator that never hits a case tests nothing about it.
			for _, e := range []error{nil, ErrInvalid, ErrUnknownFunction} {
				if refused[e] == 0 {
					t.Errorf("no batch in %d steps had outcome %v", steps, e)
				}
			}
		})
	}
}
