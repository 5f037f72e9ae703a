package sim

import "math/rand/v2"

// A plane is a data plane: how the VMs the control plane assigns to a
// function get its image. The control plane (forest) and its trees are the
// same under every strategy, so that strategies differ in nothing but the
// data plane.
type plane interface {
	// join starts vm's fetch of fn's image; parent is vm's parent in fn's
	// tree, -1 at the root. done runs when vm has the bytes it needs. With
	// cached, vm has the whole image already: it fetches nothing, done
	// does not run, and vm can serve others at once.
	join(fn, vm, parent int32, cached bool, done func())
	// move tells that vm's parent in fn's tree is now parent.
	move(fn, vm, parent int32)
	// leave stops vm's part in fn.
	leave(fn, vm int32)
}

// treePlane is FaaSNet: every VM streams from its tree parent, the root
// from the registry.
type treePlane struct {
	e    *engine
	size float64
	reps []map[int32]*replica
}

func newTreePlane(e *engine, functions int, size float64) *treePlane {
	p := &treePlane{e: e, size: size, reps: make([]map[int32]*replica, functions)}
	for i := range p.reps {
		p.reps[i] = map[int32]*replica{}
	}
	return p
}

func (p *treePlane) replica(fn, vm int32) *replica {
	if vm < 0 {
		return nil
	}
	return p.reps[fn][vm]
}

func (p *treePlane) join(fn, vm, parent int32, cached bool, done func()) {
	r := &replica{vm: vm, size: p.size, parent: p.replica(fn, parent), onDone: done}
	p.reps[fn][vm] = r
	if cached {
		r.have, r.done = r.size, true
		return
	}
	p.e.fetch(r)
}

func (p *treePlane) move(fn, vm, parent int32) {
	if r := p.replica(fn, vm); r != nil {
		p.e.reparent(r, p.replica(fn, parent))
	}
}

func (p *treePlane) leave(fn, vm int32) {
	if r := p.replica(fn, vm); r != nil {
		p.e.drop(r)
		delete(p.reps[fn], vm)
	}
}

// directPlane is every VM fetching from the registry (whole, or only the
// part read before start).
type directPlane struct {
	treePlane
}

func (p *directPlane) join(fn, vm, _ int32, cached bool, done func()) {
	p.treePlane.join(fn, vm, -1, cached, done)
}
func (p *directPlane) move(fn, vm, parent int32) {}

// swarmPlane is one swarm per function's image.
type swarmPlane struct {
	e           *engine
	cfg         SwarmConfig
	rng         *rand.Rand
	size, piece float64
	swarms      []*swarm
	peers       []map[int32]*speer
}

func newSwarmPlane(e *engine, cfg SwarmConfig, rng *rand.Rand, functions int, size, piece float64) *swarmPlane {
	p := &swarmPlane{e: e, cfg: cfg, rng: rng, size: size, piece: piece,
		swarms: make([]*swarm, functions), peers: make([]map[int32]*speer, functions)}
	for i := range p.peers {
		p.peers[i] = map[int32]*speer{}
	}
	return p
}

func (p *swarmPlane) join(fn, vm, _ int32, cached bool, done func()) {
	if p.swarms[fn] == nil {
		p.swarms[fn] = newSwarm(p.e, p.cfg, p.rng, p.size, p.piece)
	}
	p.peers[fn][vm] = p.swarms[fn].join(vm, cached, done)
}

func (p *swarmPlane) move(fn, vm, parent int32) {}

func (p *swarmPlane) leave(fn, vm int32) {
	if q, ok := p.peers[fn][vm]; ok {
		p.swarms[fn].leave(q)
		delete(p.peers[fn], vm)
	}
}
