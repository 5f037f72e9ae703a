package sim

import (
	"math"
)

// registryNode is the node index of the registry (or the swarm's origin,
// which is the registry seen as a seeder).
const registryNode = -1

// eps is how close, in bytes, counts as equal: far below a byte, far above
// the rounding of float64 byte counts below a petabyte.
const eps = 1e-3

// netParams are the engine's fixed parameters.
type netParams struct {
	vms      int
	up, down float64 // bytes/s of every VM's uplink and downlink
	registry float64 // bytes/s of the registry's egress; +Inf if unlimited
	block    float64 // bytes forwarded at once down a tree
	latency  int64   // ns, one hop's latency
	res      int64   // ns; every event time is rounded up to a multiple
}

// engine is the fluid network model: VMs with an uplink and a downlink,
// the registry with an egress link, flows between them at max-min fair
// rates, and timers. Between two events every rate is constant, so the
// engine jumps from event to event: it solves the rates, asks each flow when
// it next changes state (finishes, catches up with its parent, gets its first
// block), moves the clock to the earliest such time or timer, rounded up to
// the resolution, and moves every flow's bytes forward. Rounding up lets a
// flow overshoot its target by less than one resolution step; bytes are
// clamped to what the sender has, so the cost is a late event, never bytes
// that do not exist.
type engine struct {
	p      netParams
	now    int64 // ns
	flows  []*flow
	timers timerHeap
	seq    uint64
	stamp  uint64

	caps  []float64
	specs []flowSpec
	rates []float64
	mm    maxMin
	done  []*flow

	sent, recv  []float64 // bytes per VM
	waste       []float64 // bytes per VM received but not kept (swarm: duplicates, pieces cut off)
	peakUp      []float64 // highest upload rate seen per VM
	upNow       []float64
	registryOut float64
	steps       int
}

func newEngine(p netParams) *engine {
	e := &engine{p: p}
	e.caps = make([]float64, 2*p.vms+1)
	for v := range p.vms {
		e.caps[2*v] = p.up
		e.caps[2*v+1] = p.down
	}
	e.caps[2*p.vms] = p.registry
	e.sent = make([]float64, p.vms)
	e.recv = make([]float64, p.vms)
	e.waste = make([]float64, p.vms)
	e.peakUp = make([]float64, p.vms)
	e.upNow = make([]float64, p.vms)
	return e
}

func (e *engine) upLink(n int32) int32 {
	if n == registryNode {
		return int32(2 * e.p.vms)
	}
	return 2 * n
}

func (e *engine) downLink(n int32) int32 {
	if n == registryNode {
		return -1
	}
	return 2*n + 1
}

// A flow moves bytes from src to dst. It feeds either a replica (an image
// transfer from a tree parent or the registry) or a swarm connection.
type flow struct {
	idx      int // position in engine.flows; -1 once removed
	src, dst int32
	rate     float64
	active   bool // the request has reached the sender
	rep      *replica
	dir      *sdir
	// blocked is set while the receiver is not behind its parent by a
	// whole block; on leaving that state the flow waits one hop latency
	// (until wakeAt) for the first bytes to travel.
	blocked bool
	wakeAt  int64
}

// A replica is one VM's copy of one function's image (or of the part of it
// needed before the container starts), filled from its parent in the tree or,
// with no parent, from the registry. A parent forwards a block once it has
// fully arrived, so a child can hold at most the parent's bytes less one
// block until the parent is complete.
type replica struct {
	vm      int32
	size    float64 // bytes needed
	have    float64
	parent  *replica // nil: the registry
	flow    *flow
	done    bool
	dropped bool
	stamp   uint64
	onDone  func()
}

func (e *engine) add(f *flow) {
	f.idx = len(e.flows)
	e.flows = append(e.flows, f)
}

func (e *engine) remove(f *flow) {
	if f == nil || f.idx < 0 {
		return
	}
	last := e.flows[len(e.flows)-1]
	e.flows[f.idx] = last
	last.idx = f.idx
	e.flows = e.flows[:len(e.flows)-1]
	f.idx = -1
}

// fetch starts r's transfer from its source; the request takes one hop
// latency to reach the sender.
func (e *engine) fetch(r *replica) {
	if r.done || r.dropped {
		return
	}
	src := int32(registryNode)
	if r.parent != nil {
		src = r.parent.vm
	}
	f := &flow{src: src, dst: r.vm, rep: r}
	e.add(f)
	r.flow = f
	e.after(e.p.latency, func() {
		if f.idx >= 0 {
			f.active = true
		}
	})
}

// reparent makes p (nil: the registry) r's source. An unfinished transfer
// keeps every byte it has and continues from p over a new connection.
func (e *engine) reparent(r *replica, p *replica) {
	r.parent = p
	if r.done || r.dropped {
		return
	}
	e.remove(r.flow)
	r.flow = nil
	e.fetch(r)
}

// drop stops r's transfer for good.
func (e *engine) drop(r *replica) {
	e.remove(r.flow)
	r.flow = nil
	r.dropped = true
}

func (e *engine) finish(r *replica) {
	e.remove(r.flow)
	r.flow = nil
	r.have = r.size
	r.done = true
	if r.onDone != nil {
		r.onDone()
	}
}

// spec describes f to the solver at the current time.
func (e *engine) spec(f *flow) flowSpec {
	s := flowSpec{links: [2]int32{e.upLink(f.src), e.downLink(f.dst)}, capBy: -1}
	if !f.active {
		s.zero = true
		return s
	}
	r := f.rep
	if r == nil {
		return s
	}
	p := r.parent
	if p == nil || p.done {
		return s
	}
	gap := p.have - e.p.block - r.have
	if gap < -eps {
		f.blocked = true
		s.zero = true
		return s
	}
	if f.blocked {
		f.blocked = false
		f.wakeAt = e.now + e.p.latency
		if f.wakeAt > e.now {
			e.at(f.wakeAt, nil)
		}
	}
	if e.now < f.wakeAt {
		s.zero = true
		return s
	}
	if gap <= eps {
		if p.flow == nil || !p.flow.active {
			s.zero = true
		} else {
			s.capBy = int32(p.flow.idx)
		}
	}
	return s
}

// solve sets every flow's rate.
func (e *engine) solve() {
	e.specs = e.specs[:0]
	for _, f := range e.flows {
		e.specs = append(e.specs, e.spec(f))
	}
	e.rates = grow(e.rates, len(e.flows))
	e.mm.solve(e.caps, e.specs, e.rates)
	for i, f := range e.flows {
		f.rate = e.rates[i]
		if f.src >= 0 {
			e.upNow[f.src] += f.rate
		}
	}
	for _, f := range e.flows {
		if f.src >= 0 {
			e.peakUp[f.src] = math.Max(e.peakUp[f.src], e.upNow[f.src])
			e.upNow[f.src] = 0
		}
	}
}

// due returns the seconds until f next changes state at its current rate,
// or +Inf.
func (e *engine) due(f *flow) float64 {
	if f.dir != nil {
		if f.rate <= 0 {
			return math.Inf(1)
		}
		return (f.dir.headLen() - f.dir.got) / f.rate
	}
	r := f.rep
	p := r.parent
	if f.rate <= 0 {
		if f.blocked && p != nil && p.flow != nil && p.flow.rate > 0 {
			return (r.have + e.p.block - p.have) / p.flow.rate
		}
		return math.Inf(1)
	}
	if p == nil || p.done {
		return (r.size - r.have) / f.rate
	}
	rp := 0.0
	if p.flow != nil {
		rp = p.flow.rate
	}
	if f.rate > rp {
		return math.Max(0, p.have-e.p.block-r.have) / (f.rate - rp)
	}
	return math.Inf(1)
}

// advance moves every flow's bytes dt seconds forward.
func (e *engine) advance(dt float64) {
	e.stamp++
	for _, f := range e.flows {
		if f.rate <= 0 {
			continue
		}
		if f.dir != nil {
			d := f.dir
			moved := math.Min(f.rate*dt, d.headLen()-d.got)
			d.got += moved
			e.account(f, moved)
			continue
		}
		e.advanceReplica(f.rep, dt)
	}
}

// advanceReplica moves r forward, after its parent so that r stays a block
// behind the parent's new position.
func (e *engine) advanceReplica(r *replica, dt float64) {
	if r.stamp == e.stamp {
		return
	}
	r.stamp = e.stamp
	f := r.flow
	if f == nil || f.rate <= 0 {
		return
	}
	limit := r.size
	if p := r.parent; p != nil && !p.done {
		e.advanceReplica(p, dt)
		limit = math.Min(limit, p.have-e.p.block)
	}
	next := math.Min(r.have+f.rate*dt, limit)
	if next <= r.have {
		return
	}
	e.account(f, next-r.have)
	r.have = next
}

// wasted records that vm received bytes it does not keep.
func (e *engine) wasted(vm int32, bytes float64) {
	if vm >= 0 {
		e.waste[vm] += bytes
	}
}

func (e *engine) account(f *flow, bytes float64) {
	if f.src == registryNode {
		e.registryOut += bytes
	} else {
		e.sent[f.src] += bytes
	}
	if f.dst >= 0 {
		e.recv[f.dst] += bytes
	}
}

// complete handles the flows that reached their targets.
func (e *engine) complete() {
	e.done = e.done[:0]
	for _, f := range e.flows {
		if f.dir != nil && f.dir.got >= f.dir.headLen()-eps ||
			f.rep != nil && f.rep.have >= f.rep.size-eps {
			e.done = append(e.done, f)
		}
	}
	for _, f := range e.done {
		if f.idx < 0 {
			continue
		}
		if f.dir != nil {
			f.dir.pieceDone()
		} else {
			e.finish(f.rep)
		}
	}
}

// step processes the next event no later than limit. It reports false when
// nothing is left to happen before limit; the clock is then at limit (or
// stays put if limit is math.MaxInt64 and nothing is left to happen).
func (e *engine) step(limit int64) bool {
	if t, ok := peek(e.timers); ok && t <= e.now {
		e.fire()
		return true
	}
	e.solve()
	e.steps++
	next := int64(math.MaxInt64)
	for _, f := range e.flows {
		if d := e.due(f); !math.IsInf(d, 1) {
			next = min(next, e.now+ceilNs(d))
		}
	}
	if next != math.MaxInt64 {
		next = e.roundUp(max(next, e.now+1))
	}
	if t, ok := peek(e.timers); ok {
		next = min(next, t)
	}
	if next == math.MaxInt64 {
		// Idle: nothing will happen before limit.
		if limit != math.MaxInt64 {
			e.now = max(e.now, limit)
		}
		return false
	}
	if next > limit {
		if limit > e.now {
			e.advance(float64(limit-e.now) / 1e9)
			e.now = limit
			e.complete()
		}
		return false
	}
	e.advance(float64(next-e.now) / 1e9)
	e.now = next
	e.complete()
	e.fire()
	return true
}

// run processes events until none is left before limit.
func (e *engine) run(limit int64) {
	for e.step(limit) {
	}
}

func (e *engine) roundUp(t int64) int64 {
	if e.p.res <= 1 {
		return t
	}
	return (t + e.p.res - 1) / e.p.res * e.p.res
}

func ceilNs(sec float64) int64 {
	const maxSec = 1e9 // ~30 years: later than any simulation ends
	if sec > maxSec {
		sec = maxSec
	}
	return int64(math.Ceil(sec * 1e9))
}

// after runs fn d nanoseconds from now (rounded up to the resolution).
func (e *engine) after(d int64, fn func()) { e.at(e.now+d, fn) }

// at runs fn (which may be nil: just wake up) at time t.
func (e *engine) at(t int64, fn func()) {
	e.seq++
	e.timers.push(timer{at: e.roundUp(t), seq: e.seq, fn: fn})
}

// fire runs every timer that is due, in time then scheduling order.
func (e *engine) fire() {
	for {
		t, ok := peek(e.timers)
		if !ok || t > e.now {
			return
		}
		tm := e.timers.pop()
		if tm.fn != nil {
			tm.fn()
		}
	}
}

type timer struct {
	at  int64
	seq uint64
	fn  func()
}

// before orders timers by time, then by when they were set.
func (t timer) before(o timer) bool {
	if t.at != o.at {
		return t.at < o.at
	}
	return t.seq < o.seq
}

type timerHeap = minHeap[timer]

// peek returns the time of the next timer.
func peek(h timerHeap) (int64, bool) {
	if len(h) == 0 {
		return 0, false
	}
	return h[0].at, true
}
