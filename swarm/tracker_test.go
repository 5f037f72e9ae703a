package swarm

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

func newTestTracker(t *testing.T, cfg Config) *Tracker {
	t.Helper()
	cfg.Logger = quietLogger
	tr := NewTracker(listen(t), cfg)
	t.Cleanup(func() { tr.Close() })
	return tr
}

func ids(ps []PeerInfo) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.ID)
	}
	return out
}

func TestHandout(t *testing.T) {
	tr := newTestTracker(t, Config{PeerHandoutLimit: 3, Seed: 1})
	tr.origins = []PeerInfo{{ID: "origin", Addr: "o:1", Origin: true, Complete: true}}
	now := time.Unix(1000, 0)
	const d = "sha256:aa"
	if got := tr.announce(d, PeerInfo{ID: "a", Addr: "a:1"}, now); !slices.Equal(ids(got), []string{"origin"}) {
		t.Errorf("first announce: %v, want only the origin", ids(got))
	}
	tr.announce(d, PeerInfo{ID: "seed", Addr: "s:1", Complete: true}, now)
	if got := tr.announce(d, PeerInfo{ID: "done", Addr: "d:1", Complete: true}, now); got != nil {
		t.Errorf("a complete peer got a handout: %v", ids(got))
	}
	got := tr.announce(d, PeerInfo{ID: "b", Addr: "b:1"}, now)
	if len(got) != 4 {
		t.Fatalf("handout %v, want 3 peers and the origin", ids(got))
	}
	// Seeders first, then the origin, then the incomplete.
	prio := func(p PeerInfo) int { return handoutPriority(p) }
	if !slices.IsSortedFunc(got, func(x, y PeerInfo) int { return prio(x) - prio(y) }) {
		t.Errorf("handout %+v not ordered seeders, origins, incomplete", got)
	}
	if slices.Contains(ids(got), "b") {
		t.Errorf("handout %v includes the announcer", ids(got))
	}
	// The limit caps the sample of peers, not the origin.
	for i := range 10 {
		tr.announce(d, PeerInfo{ID: fmt.Sprint("p", i), Addr: "p:1"}, now)
	}
	got = tr.announce(d, PeerInfo{ID: "c", Addr: "c:1"}, now)
	origins := 0
	for _, p := range got {
		if p.Origin {
			origins++
		}
	}
	if len(got) != 4 || origins != 1 {
		t.Errorf("handout %v, want 3 sampled peers and the origin", ids(got))
	}
	// Peers that stopped announcing expire.
	got = tr.announce(d, PeerInfo{ID: "late", Addr: "l:1"}, now.Add(peerTTL+time.Second))
	if !slices.Equal(ids(got), []string{"origin"}) {
		t.Errorf("handout after every peer expired: %v", ids(got))
	}
}

// TestHandoutSample: the sample is random, so that peers spread over the
// swarm rather than all dialing the same few.
func TestHandoutSample(t *testing.T) {
	tr := newTestTracker(t, Config{PeerHandoutLimit: 2, Seed: 2})
	now := time.Unix(1000, 0)
	for i := range 10 {
		tr.announce("d", PeerInfo{ID: fmt.Sprint("p", i), Addr: "p:1"}, now)
	}
	seen := map[string]bool{}
	for range 100 {
		for _, p := range tr.announce("d", PeerInfo{ID: "x", Addr: "x:1"}, now) {
			seen[p.ID] = true
		}
	}
	if len(seen) != 10 {
		t.Errorf("100 handouts of 2 covered %d of 10 peers", len(seen))
	}
}

func TestOwnerStable(t *testing.T) {
	tr := newTestTracker(t, Config{})
	for i := range 5 {
		tr.origins = append(tr.origins, PeerInfo{ID: fmt.Sprint("o", i), Addr: "o:1", Origin: true})
	}
	moved, owners := 0, map[string]int{}
	for i := range 200 {
		key := fmt.Sprint("sha256:", i)
		o, _ := tr.owner(key)
		owners[o.ID]++
		tr.origins = append(tr.origins, PeerInfo{ID: "o-new", Addr: "o:2", Origin: true})
		if o2, _ := tr.owner(key); o2.ID != o.ID && o2.ID != "o-new" {
			t.Fatalf("adding an origin moved %s from %s to %s", key, o.ID, o2.ID)
		} else if o2.ID == "o-new" {
			moved++
		}
		tr.origins = tr.origins[:5]
	}
	if len(owners) != 5 || moved == 0 || moved > 80 {
		t.Errorf("owners %v, %d of 200 keys moved to a sixth origin", owners, moved)
	}
}

func TestTrackerHTTP(t *testing.T) {
	tr := newTestTracker(t, Config{})
	c := newTrackerClient(tr.Addr())
	defer c.close()
	ctx := context.Background()
	for _, tc := range []struct {
		method, path, body string
		want               int
	}{
		{"POST", "/swarm/v1/announce", "{", http.StatusBadRequest},
		{"POST", "/swarm/v1/announce", `{"digest":"d","peer":{"id":"a"}}`, http.StatusBadRequest},
		{"POST", "/swarm/v1/announce", `{"digest":"d","peer":{"id":"a","addr":"a:1"}}`, http.StatusOK},
		{"GET", "/swarm/v1/metainfo/sha256:aa?namespace=r", "", http.StatusServiceUnavailable},
		{"GET", "/swarm/v1/manifest?image=x", "", http.StatusServiceUnavailable},
		{"POST", "/swarm/v1/origins", `{"id":""}`, http.StatusBadRequest},
		{"GET", "/healthz", "", http.StatusOK},
	} {
		req, _ := http.NewRequestWithContext(ctx, tc.method, c.base+tc.path, strings.NewReader(tc.body))
		resp, err := c.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s %s %s: %d, want %d", tc.method, tc.path, tc.body, resp.StatusCode, tc.want)
		}
	}
	// An origin that registers but does not answer makes metainfo fail
	// with 502, not hang.
	if err := c.registerOrigin(ctx, PeerInfo{ID: "o", Addr: "127.0.0.1:1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.metaInfo(ctx, "r", "sha256:"+strings.Repeat("a", 64)); err == nil || !strings.Contains(err.Error(), "502") {
		t.Errorf("metainfo through a dead origin: %v, want 502", err)
	}
}
