package swarm

import (
	"math/rand/v2"
	"slices"
	"time"
)

// rarestFirst returns up to limit pieces of candidates, those that the
// fewest connected peers have first (availability[i] is how many have piece
// i). Ties are broken at random by rng, so that peers holding the same
// pieces do not all ask for the same one. candidates is reordered.
func rarestFirst(candidates, availability []int, limit int, rng *rand.Rand) []int {
	rng.Shuffle(len(candidates), func(i, j int) {
		candidates[i], candidates[j] = candidates[j], candidates[i]
	})
	slices.SortStableFunc(candidates, func(a, b int) int {
		return availability[a] - availability[b]
	})
	return candidates[:min(limit, len(candidates))]
}

// requestStatus is the state of one piece request, as in Kraken's
// piecerequest.Manager.
type requestStatus int

const (
	// requestPending is in flight and counts against the pipeline.
	requestPending requestStatus = iota
	// requestInvalid was answered with an error or a bad piece: the piece
	// must be asked of another peer.
	requestInvalid
)

type request struct {
	piece  int
	peer   string
	status requestStatus
	sentAt time.Time
}

// requests is the bookkeeping of one blob's piece requests: which piece is
// asked of which peer since when. A request expires after timeout: it
// stops counting against the pipeline and the piece may be asked again.
// It is not safe for concurrent use; the torrent's lock guards it.
type requests struct {
	timeout  time.Duration
	pipeline int

	byPiece map[int][]*request
	byPeer  map[string]map[int]*request
}

func newRequests(timeout time.Duration, pipeline int) *requests {
	return &requests{
		timeout:  timeout,
		pipeline: pipeline,
		byPiece:  map[int][]*request{},
		byPeer:   map[string]map[int]*request{},
	}
}

func (m *requests) live(r *request, now time.Time) bool {
	return r.status == requestPending && now.Sub(r.sentAt) <= m.timeout
}

// quota returns how many more requests peer may be sent now.
func (m *requests) quota(peer string, now time.Time) int {
	q := m.pipeline
	for _, r := range m.byPeer[peer] {
		if m.live(r, now) {
			q--
		}
	}
	return max(q, 0)
}

// valid reports whether piece i may be asked of peer now: nobody has a
// live request for it (in endgame: peer has none), and peer did not fail
// it.
func (m *requests) valid(peer string, i int, endgame bool, now time.Time) bool {
	for _, r := range m.byPiece[i] {
		live := m.live(r, now)
		if r.peer == peer && (live || r.status == requestInvalid) {
			// Kraken does not ask a peer again for a piece it failed.
			return false
		}
		if live && !endgame {
			return false
		}
	}
	return true
}

// reserve picks the pieces to ask of peer among candidates (pieces peer has
// and we lack), rarest first, within peer's pipeline quota, and records
// them as pending.
func (m *requests) reserve(peer string, candidates, availability []int, endgame bool, now time.Time, rng *rand.Rand) []int {
	q := m.quota(peer, now)
	if q == 0 {
		return nil
	}
	valid := candidates[:0]
	for _, i := range candidates {
		if m.valid(peer, i, endgame, now) {
			valid = append(valid, i)
		}
	}
	pieces := rarestFirst(valid, availability, q, rng)
	for _, i := range pieces {
		m.add(&request{piece: i, peer: peer, sentAt: now})
	}
	return pieces
}

func (m *requests) add(r *request) {
	m.remove(r.peer, r.piece)
	m.byPiece[r.piece] = append(m.byPiece[r.piece], r)
	if m.byPeer[r.peer] == nil {
		m.byPeer[r.peer] = map[int]*request{}
	}
	m.byPeer[r.peer][r.piece] = r
}

// requestedFrom returns the peers asked for piece i that have not failed
// it, expired requests included: their answers may still be coming.
func (m *requests) requestedFrom(i int) []string {
	var peers []string
	for _, r := range m.byPiece[i] {
		if r.status == requestPending {
			peers = append(peers, r.peer)
		}
	}
	return peers
}

// markInvalid records that peer failed to deliver piece i.
func (m *requests) markInvalid(peer string, i int) {
	if r, ok := m.byPeer[peer][i]; ok {
		r.status = requestInvalid
	}
}

// remove forgets the request of piece i to peer.
func (m *requests) remove(peer string, i int) {
	if _, ok := m.byPeer[peer][i]; !ok {
		return
	}
	delete(m.byPeer[peer], i)
	if len(m.byPeer[peer]) == 0 {
		delete(m.byPeer, peer)
	}
	m.byPiece[i] = slices.DeleteFunc(m.byPiece[i], func(r *request) bool { return r.peer == peer })
	if len(m.byPiece[i]) == 0 {
		delete(m.byPiece, i)
	}
}

// clear forgets every request for piece i: it is complete.
func (m *requests) clear(i int) {
	for _, r := range m.byPiece[i] {
		delete(m.byPeer[r.peer], i)
		if len(m.byPeer[r.peer]) == 0 {
			delete(m.byPeer, r.peer)
		}
	}
	delete(m.byPiece, i)
}

// clearPeer forgets every request to peer: its connection closed.
func (m *requests) clearPeer(peer string) {
	for i := range m.byPeer[peer] {
		m.byPiece[i] = slices.DeleteFunc(m.byPiece[i], func(r *request) bool { return r.peer == peer })
		if len(m.byPiece[i]) == 0 {
			delete(m.byPiece, i)
		}
	}
	delete(m.byPeer, peer)
}

// failed returns the requests that expired or failed, which must be sent
// to other peers, and their peers.
func (m *requests) failed(now time.Time) []request {
	var out []request
	for _, rs := range m.byPiece {
		for _, r := range rs {
			if !m.live(r, now) {
				out = append(out, *r)
			}
		}
	}
	return out
}
