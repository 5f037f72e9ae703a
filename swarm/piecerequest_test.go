package swarm

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// bf builds a bitfield of n pieces with the given ones set.
func bf(n int, set ...int) bitfield {
	f := newBitfield(n)
	for _, i := range set {
		f.set(i)
	}
	return f
}

// pick does what a torrent does to choose pieces to ask of peers[from]:
// candidates are the pieces it has and we lack, availability counts the
// connected peers having each piece.
func pick(have bitfield, peers []bitfield, from, limit int, rng *rand.Rand) []int {
	avail := make([]int, have.len())
	for _, p := range peers {
		for i := range avail {
			if p.has(i) {
				avail[i]++
			}
		}
	}
	var cands []int
	for i := range avail {
		if peers[from].has(i) && !have.has(i) {
			cands = append(cands, i)
		}
	}
	return rarestFirst(cands, avail, limit, rng)
}

func TestRarestFirst(t *testing.T) {
	for _, tc := range []struct {
		name  string
		have  bitfield
		peers []bitfield
		from  int
		limit int
		want  [][]int // acceptable answers (ties)
	}{
		{
			name:  "rarest of three",
			have:  bf(3),
			peers: []bitfield{bf(3, 0, 1, 2), bf(3, 1, 2), bf(3, 2)},
			limit: 1,
			want:  [][]int{{0}},
		},
		{
			name:  "rarest missing",
			have:  bf(3, 0),
			peers: []bitfield{bf(3, 0, 1, 2), bf(3, 1, 2), bf(3, 2)},
			limit: 1,
			want:  [][]int{{1}},
		},
		{
			name:  "only what the peer has",
			have:  bf(3),
			peers: []bitfield{bf(3, 0, 1, 2), bf(3, 1, 2), bf(3, 2)},
			from:  2,
			limit: 3,
			want:  [][]int{{2}},
		},
		{
			name:  "in order of rarity",
			have:  bf(4),
			peers: []bitfield{bf(4, 0, 1, 2, 3), bf(4, 0, 1, 3), bf(4, 0, 3), bf(4, 0)},
			limit: 3,
			want:  [][]int{{2, 1, 3}},
		},
		{
			name:  "tie",
			have:  bf(4, 3),
			peers: []bitfield{bf(4, 0, 1, 2, 3), bf(4, 0, 1)},
			limit: 1,
			want:  [][]int{{2}},
		},
		{
			name:  "tie between two",
			have:  bf(4),
			peers: []bitfield{bf(4, 0, 1, 2, 3), bf(4, 0, 1)},
			limit: 1,
			want:  [][]int{{2}, {3}},
		},
		{
			name:  "nothing to ask",
			have:  bf(2, 0, 1),
			peers: []bitfield{bf(2, 0, 1)},
			limit: 3,
			want:  [][]int{{}},
		},
		{
			name:  "more pieces than the limit",
			have:  bf(9),
			peers: []bitfield{bf(9, 0, 1, 2, 3, 4, 5, 6, 7, 8), bf(9, 0, 1, 2, 3, 4, 5, 6, 8), bf(9, 8)},
			limit: 1,
			want:  [][]int{{7}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for seed := range uint64(20) {
				got := pick(tc.have, tc.peers, tc.from, tc.limit, rand.New(rand.NewPCG(seed, 0)))
				if !slices.ContainsFunc(tc.want, func(w []int) bool { return slices.Equal(w, got) }) {
					t.Fatalf("seed %d: picked %v, want one of %v", seed, got, tc.want)
				}
			}
		})
	}
}

// TestRarestFirstTies: ties are broken at random, the same way for the
// same seed, and every tied piece gets its turn.
func TestRarestFirstTies(t *testing.T) {
	peers := []bitfield{bf(8, 0, 1, 2, 3, 4, 5, 6, 7), bf(8, 0, 1, 2, 3)}
	seen := map[int]int{}
	for seed := range uint64(200) {
		a := pick(bf(8), peers, 0, 1, rand.New(rand.NewPCG(seed, 1)))
		b := pick(bf(8), peers, 0, 1, rand.New(rand.NewPCG(seed, 1)))
		if !slices.Equal(a, b) {
			t.Fatalf("seed %d: %v then %v", seed, a, b)
		}
		seen[a[0]]++
	}
	for i := 4; i < 8; i++ {
		if seen[i] < 20 {
			t.Errorf("rarest piece %d picked %d times in 200: %v", i, seen[i], seen)
		}
	}
	for i := range 4 {
		if seen[i] != 0 {
			t.Errorf("common piece %d picked: %v", i, seen)
		}
	}
}

func reserve(m *requests, peer string, now time.Time, endgame bool, cands ...int) []int {
	avail := make([]int, 16)
	got := m.reserve(peer, slices.Clone(cands), avail, endgame, now, rand.New(rand.NewPCG(1, 2)))
	slices.Sort(got)
	return got
}

func TestRequestsPipeline(t *testing.T) {
	m := newRequests(time.Second, 3)
	now := time.Unix(0, 0)
	if got := reserve(m, "a", now, false, 0, 1, 2, 3, 4); len(got) != 3 {
		t.Fatalf("first reserve: %v, want 3 pieces", got)
	}
	if got := reserve(m, "a", now, false, 0, 1, 2, 3, 4); len(got) != 0 {
		t.Fatalf("reserve beyond the pipeline: %v", got)
	}
	// b may not take pieces a was asked for.
	got := reserve(m, "b", now, false, 0, 1, 2, 3, 4)
	for _, i := range got {
		if len(m.byPiece[i]) != 1 {
			t.Errorf("piece %d asked of two peers outside endgame", i)
		}
	}
	if len(got) != 2 {
		t.Errorf("b got %v, want the 2 pieces a was not asked for", got)
	}
	m.clear(got[0]) // complete: no longer a candidate
	left := slices.DeleteFunc([]int{0, 1, 2, 3, 4}, func(i int) bool { return i == got[0] })
	if got := reserve(m, "b", now, false, left...); len(got) != 0 {
		t.Errorf("b got %v though every piece is asked of someone", got)
	}
	if m.quota("b", now) != 2 {
		t.Errorf("b's quota %d after one piece completed, want 2", m.quota("b", now))
	}
}

func TestRequestsExpiry(t *testing.T) {
	m := newRequests(time.Second, 2)
	now := time.Unix(0, 0)
	reserve(m, "a", now, false, 0, 1)
	later := now.Add(2 * time.Second)
	if q := m.quota("a", later); q != 2 {
		t.Errorf("quota after expiry %d, want 2", q)
	}
	failed := m.failed(later)
	if len(failed) != 2 {
		t.Errorf("failed = %v, want both expired requests", failed)
	}
	if got := reserve(m, "b", later, false, 0, 1); len(got) != 2 {
		t.Errorf("b got %v, want the expired pieces", got)
	}
	if peers := m.requestedFrom(0); len(peers) != 2 {
		t.Errorf("piece 0 requested from %v, want a (expired, maybe still coming) and b", peers)
	}
	m.clearPeer("a")
	if peers := m.requestedFrom(0); !slices.Equal(peers, []string{"b"}) {
		t.Errorf("after a closed, piece 0 requested from %v", peers)
	}
}

func TestRequestsEndgame(t *testing.T) {
	m := newRequests(time.Second, 3)
	now := time.Unix(0, 0)
	reserve(m, "a", now, true, 0, 1)
	if got := reserve(m, "b", now, true, 0, 1); !slices.Equal(got, []int{0, 1}) {
		t.Errorf("endgame: b got %v, want duplicates of 0 and 1", got)
	}
	if got := reserve(m, "a", now, true, 0, 1); len(got) != 0 {
		t.Errorf("endgame: a asked twice for %v", got)
	}
	m.clear(0)
	if peers := m.requestedFrom(0); len(peers) != 0 {
		t.Errorf("completed piece still requested from %v", peers)
	}
}

func TestRequestsInvalid(t *testing.T) {
	m := newRequests(time.Second, 3)
	now := time.Unix(0, 0)
	reserve(m, "a", now, false, 5)
	m.markInvalid("a", 5)
	if got := reserve(m, "a", now, false, 5); len(got) != 0 {
		t.Errorf("asked a again for a piece it failed: %v", got)
	}
	if got := reserve(m, "b", now, false, 5); !slices.Equal(got, []int{5}) {
		t.Errorf("b got %v, want the failed piece", got)
	}
	if f := m.failed(now); len(f) != 1 || f[0].peer != "a" {
		t.Errorf("failed = %v, want a's request", f)
	}
}
