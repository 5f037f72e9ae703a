package store

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/faasnet/faasnet/internal/testenv"
)

// counter is an EtcdObserver that counts.
type counter struct {
	mu       sync.Mutex
	requests map[string]int
	fenced   int
}

func (c *counter) Request(op string, _ time.Duration, _ error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.requests[op]++
}

func (c *counter) Fenced() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fenced++
}

func (c *counter) counts() (txn, fenced int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.requests["txn"], c.fenced
}

// TestEtcdElection runs two elected stores on one prefix: only the leader
// writes; a leader whose lease ended is refused by etcd itself (the fence
// in the transaction), even before it noticed; the other takes over, and
// ObserveLeader follows.
func TestEtcdElection(t *testing.T) {
	ep := testenv.StartEtcd(t, 1).Endpoints()
	open := func() *Etcd {
		s, err := OpenEtcd(t.Context(), EtcdOptions{Endpoints: ep, Prefix: "/elect/", Elect: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	a, b := open(), open()
	obs := &counter{requests: map[string]int{}}
	a.SetObserver(obs)
	if err := a.Apply(t.Context(), base); !errors.Is(err, ErrFenced) {
		t.Fatalf("Apply before any campaign = %v, want ErrFenced", err)
	}
	ea, err := a.Elector("https://a", 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	eb, err := b.Elector("https://b", 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	leaders := make(chan string, 16)
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() { b.ObserveLeader(ctx, func(l string) { leaders <- l }) })
	waitLeader := func(want string) {
		t.Helper()
		for {
			select {
			case l := <-leaders:
				if l == want {
					return
				}
			case <-time.After(10 * time.Second): // bounds a hang
				t.Fatalf("ObserveLeader never saw %q", want)
			}
		}
	}
	waitLeader("")

	ta, err := ea.Campaign(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	waitLeader("https://a")
	if again, err := ea.Campaign(t.Context()); err != nil || again != ta {
		t.Fatalf("second Campaign of a leader = %p, %v; want its term %p", again, err, ta)
	}
	mustApply(t, a, base)
	if err := b.Apply(t.Context(), Batch{Revision: 9}); !errors.Is(err, ErrFenced) {
		t.Fatalf("Apply of the follower = %v, want ErrFenced", err)
	}

	won := make(chan *Term, 1)
	wg.Go(func() {
		tb, err := eb.Campaign(ctx)
		if err != nil {
			t.Error(err)
		}
		won <- tb
	})
	// a is deposed as if paused past its TTL. Its fence is kept as it
	// was, its end unnoticed, so that only etcd's comparison can refuse.
	stale := *a.term.Load()
	stale.done = nil
	if _, err := rawEtcd(t, ep).Revoke(t.Context(), stale.lease); err != nil {
		t.Fatal(err)
	}
	var tb *Term
	select {
	case tb = <-won:
	case <-time.After(10 * time.Second):
		t.Fatal("b did not win after a's lease was revoked")
	}
	waitLeader("https://b")
	a.term.Store(&stale)
	_, fencedBefore := obs.counts()
	if err := a.Apply(t.Context(), Batch{Revision: 5, DeleteVMs: []string{"vm-a"}}); !errors.Is(err, ErrFenced) {
		t.Fatalf("Apply of the deposed leader = %v, want ErrFenced", err)
	}
	if txn, fenced := obs.counts(); txn == 0 || fenced != fencedBefore+1 {
		t.Errorf("observer counted %d transactions, %d fenced writes (was %d); want some, and one more", txn, fenced, fencedBefore)
	}
	if err := a.PutFiles(t.Context(), map[string][]byte{"x": []byte("y")}); !errors.Is(err, ErrFenced) {
		t.Fatalf("PutFiles of the deposed leader = %v, want ErrFenced", err)
	}
	select {
	case <-ta.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the revoked term's Done never closed")
	}
	mustApply(t, b, Batch{Revision: 6})
	want := baseState
	want.Revision = 6
	if got := mustLoad(t, a); !reflect.DeepEqual(got, want) {
		t.Fatalf("state after the fenced write:\n got %+v\nwant %+v", got, want)
	}

	// Ending a term hands over at once, without waiting for the lease.
	ta2 := make(chan *Term, 1)
	wg.Go(func() {
		t2, err := ea.Campaign(ctx)
		if err != nil {
			t.Error(err)
		}
		ta2 <- t2
	})
	tb.End(t.Context())
	if err := b.Apply(t.Context(), Batch{Revision: 7}); !errors.Is(err, ErrFenced) {
		t.Fatalf("Apply after End = %v, want ErrFenced", err)
	}
	select {
	case t2 := <-ta2:
		defer t2.End(context.Background())
	case <-time.After(time.Second): // well under the 2 s lease
		t.Fatal("a did not take over within a second of b's End")
	}
	waitLeader("https://a")
	mustApply(t, a, Batch{Revision: 8})
}
