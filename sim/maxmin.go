package sim

import "math"

// A flowSpec is one flow as the max-min solver sees it.
type flowSpec struct {
	// links are the indexes of the links the flow crosses; -1 for none.
	links [2]int32
	// capBy is the index of a flow whose rate bounds this one's (a child
	// that has caught up with its parent cannot go faster than the parent
	// receives), or -1.
	capBy int32
	// zero pins the rate at 0: the flow cannot move now.
	zero bool
}

// maxMin computes max-min fair rates by progressive filling: all rates
// rise together; a link that fills freezes the flows crossing it, and a
// frozen flow freezes the flows it bounds (capBy). The result is the unique
// allocation in which no flow can be raised without lowering one that is no
// faster. It keeps its buffers between calls, so it is not safe for
// concurrent use.
//
// The links wait in a heap keyed by the level at which each fills,
// rem/cnt. Freezing a flow at the current level λ never lowers that key
// ((rem-λ)/(cnt-1) >= rem/cnt whenever rem/cnt >= λ), so keys are not
// updated in the heap: a link popped with a stale key goes back with its
// current one. Each link is in the heap at most once.
type maxMin struct {
	rem       []float64 // capacity not used by frozen flows
	cnt       []int32   // unfrozen flows per link
	linkStart []int32   // flows of link l: linkFlows[linkStart[l]:linkStart[l+1]]
	linkFlows []int32
	depStart  []int32 // flows bounded by flow f: depFlows[depStart[f]:depStart[f+1]]
	depFlows  []int32
	heap      linkHeap
	stack     []int32
}

// solve writes into rates (len(flows) long) the max-min fair rate of each
// flow over links of capacity caps (bytes/s, +Inf for unlimited). A flow
// that crosses no finite link and has no finite bound gets +Inf.
func (m *maxMin) solve(caps []float64, flows []flowSpec, rates []float64) {
	nl, nf := len(caps), len(flows)
	m.rem = grow(m.rem, nl)
	copy(m.rem, caps)
	m.cnt = grow(m.cnt, nl)
	clear(m.cnt)
	m.index(nl, flows)
	for i := range rates[:nf] {
		rates[i] = -1
	}
	for _, f := range flows {
		for _, l := range f.links {
			if l >= 0 {
				m.cnt[l]++
			}
		}
	}
	for i, f := range flows {
		if f.zero {
			m.freeze(flows, rates, int32(i), 0)
		}
	}
	m.heap = m.heap[:0]
	for l := range nl {
		if m.cnt[l] > 0 {
			m.heap = append(m.heap, heapItem{key: m.key(int32(l), 0), link: int32(l)})
		}
	}
	m.heap.init()
	level := 0.0
	for len(m.heap) > 0 {
		it := m.heap.pop()
		l := it.link
		if m.cnt[l] == 0 {
			continue
		}
		if k := m.key(l, level); k > it.key {
			m.heap.push(heapItem{key: k, link: l})
			continue
		}
		level = math.Max(level, it.key)
		for _, f := range m.linkFlows[m.linkStart[l]:m.linkStart[l+1]] {
			m.freeze(flows, rates, f, level)
		}
	}
	for i := range rates[:nf] {
		if rates[i] < 0 {
			rates[i] = math.Inf(1)
		}
	}
}

// index builds the link-to-flows and flow-to-bounded-flows adjacency by
// counting sort, reusing buffers.
func (m *maxMin) index(nl int, flows []flowSpec) {
	nf := len(flows)
	m.linkStart = grow(m.linkStart, nl+1)
	m.depStart = grow(m.depStart, nf+1)
	clear(m.linkStart)
	clear(m.depStart)
	nLinks, nDeps := 0, 0
	for _, f := range flows {
		for _, l := range f.links {
			if l >= 0 {
				m.linkStart[l+1]++
				nLinks++
			}
		}
		if f.capBy >= 0 {
			m.depStart[f.capBy+1]++
			nDeps++
		}
	}
	for l := range nl {
		m.linkStart[l+1] += m.linkStart[l]
	}
	for i := range nf {
		m.depStart[i+1] += m.depStart[i]
	}
	m.linkFlows = grow(m.linkFlows, nLinks)
	m.depFlows = grow(m.depFlows, nDeps)
	// Fill using the start of the next bucket as a cursor, then shift back.
	for i, f := range flows {
		for _, l := range f.links {
			if l >= 0 {
				m.linkFlows[m.linkStart[l]] = int32(i)
				m.linkStart[l]++
			}
		}
		if f.capBy >= 0 {
			m.depFlows[m.depStart[f.capBy]] = int32(i)
			m.depStart[f.capBy]++
		}
	}
	copy(m.linkStart[1:], m.linkStart[:nl])
	m.linkStart[0] = 0
	copy(m.depStart[1:], m.depStart[:nf])
	m.depStart[0] = 0
}

// freeze fixes flow f (and every unfrozen flow it bounds, transitively) at
// rate r and updates the links they cross.
func (m *maxMin) freeze(flows []flowSpec, rates []float64, f int32, r float64) {
	m.stack = append(m.stack[:0], f)
	for len(m.stack) > 0 {
		f := m.stack[len(m.stack)-1]
		m.stack = m.stack[:len(m.stack)-1]
		if rates[f] >= 0 {
			continue
		}
		rates[f] = r
		for _, l := range flows[f].links {
			if l >= 0 {
				m.rem[l] -= r
				m.cnt[l]--
			}
		}
		for _, d := range m.depFlows[m.depStart[f]:m.depStart[f+1]] {
			if rates[d] < 0 {
				m.stack = append(m.stack, d)
			}
		}
	}
}

// key is the level at which link l fills, never below the current level:
// rounding must not let the filling go backwards.
func (m *maxMin) key(l int32, level float64) float64 {
	return math.Max(level, m.rem[l]/float64(m.cnt[l]))
}

type heapItem struct {
	key  float64
	link int32
}

// before orders links by key, then by link (for determinism).
func (it heapItem) before(o heapItem) bool {
	if it.key != o.key {
		return it.key < o.key
	}
	return it.link < o.link
}

type linkHeap = minHeap[heapItem]

// grow returns s with length n, reusing its array when large enough.
func grow[T any](s []T, n int) []T {
	if cap(s) >= n {
		return s[:n]
	}
	return make([]T, n)
}
