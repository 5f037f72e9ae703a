package store

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
)

// Memory is a Store held in memory, for tests. It keeps records encoded, as
// Bolt does, so that both load exactly the same state.
type Memory struct {
	mu     sync.Mutex
	closed bool
	vms    map[string][]byte
	funcs  map[string][]byte
	nodes  map[string]map[string][]byte // function -> VM -> node
	tokens map[string][]byte
	certs  map[string][]byte
	rev    uint64
}

var _ Store = (*Memory)(nil)

// NewMemory returns an empty Memory.
func NewMemory() *Memory {
	return &Memory{
		vms:    make(map[string][]byte),
		funcs:  make(map[string][]byte),
		nodes:  make(map[string]map[string][]byte),
		tokens: make(map[string][]byte),
		certs:  make(map[string][]byte),
	}
}

// Load implements Store.
func (m *Memory) Load(ctx context.Context) (State, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return State{}, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return State{}, fmt.Errorf("store: load: %w", err)
	}
	st := State{Revision: m.rev}
	for _, k := range slices.Sorted(maps.Keys(m.vms)) {
		vm, err := decode(bucketVMs, []byte(k), m.vms[k], vmName)
		if err != nil {
			return State{}, fmt.Errorf("store: load: %w", err)
		}
		st.VMs = append(st.VMs, vm)
	}
	for _, k := range slices.Sorted(maps.Keys(m.funcs)) {
		fn, err := decode(bucketFunctions, []byte(k), m.funcs[k], functionName)
		if err != nil {
			return State{}, fmt.Errorf("store: load: %w", err)
		}
		st.Functions = append(st.Functions, fn)
	}
	for _, fn := range slices.Sorted(maps.Keys(m.nodes)) {
		tree := m.nodes[fn]
		for _, vm := range slices.Sorted(maps.Keys(tree)) {
			n, err := decodeNode(fn, []byte(vm), tree[vm])
			if err != nil {
				return State{}, fmt.Errorf("store: load: %w", err)
			}
			st.Nodes = append(st.Nodes, n)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(m.tokens)) {
		r, err := decode(bucketTokens, []byte(k), m.tokens[k], tokenID)
		if err != nil {
			return State{}, fmt.Errorf("store: load: %w", err)
		}
		st.Tokens = append(st.Tokens, r)
	}
	for _, k := range slices.Sorted(maps.Keys(m.certs)) {
		c, err := decode(bucketCerts, []byte(k), m.certs[k], certSerial)
		if err != nil {
			return State{}, fmt.Errorf("store: load: %w", err)
		}
		st.Certs = append(st.Certs, c)
	}
	return st, nil
}

// Apply implements Store.
func (m *Memory) Apply(ctx context.Context, b Batch) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store: apply: %w", err)
	}
	p, err := prepare(&b)
	if err != nil {
		return err
	}
	// Check before changing anything: this is the only check that depends
	// on the state, so after it the batch cannot fail halfway.
	if err := m.checkFunctions(p); err != nil {
		return err
	}
	for _, k := range p.delVMs {
		delete(m.vms, k)
	}
	for _, k := range p.delFuncs {
		delete(m.funcs, k)
		delete(m.nodes, k)
	}
	for _, k := range p.delNodes {
		delete(m.nodes[k.Function], k.VM)
	}
	for _, k := range p.delCerts {
		delete(m.certs, k)
	}
	for _, e := range p.putVMs {
		m.vms[e.key] = e.val
	}
	for _, e := range p.putTokens {
		m.tokens[e.key] = e.val
	}
	for _, e := range p.putCerts {
		m.certs[e.key] = e.val
	}
	for _, e := range p.putFuncs {
		m.funcs[e.key] = e.val
	}
	if p.revision != 0 {
		m.rev = p.revision
	}
	for _, e := range p.putNodes {
		tree := m.nodes[e.fn]
		if tree == nil {
			tree = make(map[string][]byte)
			m.nodes[e.fn] = tree
		}
		tree[e.vm] = e.val
	}
	return nil
}

// checkFunctions reports a put node whose function will not exist after the
// batch's deletes and function puts.
func (m *Memory) checkFunctions(p *plan) error {
	if len(p.putNodes) == 0 {
		return nil
	}
	deleted := make(map[string]bool, len(p.delFuncs))
	for _, k := range p.delFuncs {
		deleted[k] = true
	}
	put := make(map[string]bool, len(p.putFuncs))
	for _, e := range p.putFuncs {
		put[e.key] = true
	}
	exists := func(fn string) bool {
		_, stored := m.funcs[fn]
		return put[fn] || stored && !deleted[fn]
	}
	for _, e := range p.putNodes {
		if !exists(e.fn) {
			return unknownFunction(e)
		}
	}
	return nil
}

func unknownFunction(e nodeEntry) error {
	return fmt.Errorf("store: put node %q/%q: %w: %q", e.fn, e.vm, ErrUnknownFunction, e.fn)
}

// Close implements Store.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}
