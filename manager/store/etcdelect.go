package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// etcdElection is where, under the store's prefix, the managers campaign:
// one key per candidate under it and "/", holding its advertised URL; the
// oldest leads. (concurrency.Election adds the "/".)
const etcdElection = "election"

// Elector campaigns for the leadership of an elected store's prefix
// (EtcdOptions.Elect) with concurrency.Election. While a Term lasts, the
// store writes, every write fenced on the term's leader key.
type Elector struct {
	s     *Etcd
	value string
	ttl   int // seconds

	mu   sync.Mutex
	term *Term // the last term won; nil before
}

// Elector returns an elector for s that campaigns with value (the
// manager's advertised URL, which followers send clients to) on sessions
// whose lease lasts ttl (DefaultSessionTTL if 0).
func (s *Etcd) Elector(value string, ttl time.Duration) (*Elector, error) {
	if !s.elect {
		return nil, fmt.Errorf("store: etcd prefix %q was not opened with Elect", s.prefix)
	}
	if ttl == 0 {
		ttl = DefaultSessionTTL
	}
	return &Elector{s: s, value: value, ttl: int((ttl + time.Second - 1) / time.Second)}, nil
}

// Term is one tenure as leader. It ends when its session's lease is gone
// (the process was cut off from etcd or paused for the TTL) or with End.
type Term struct {
	s        *Etcd
	session  *concurrency.Session
	election *concurrency.Election
	fence    *writeFence
	once     sync.Once
}

// Campaign waits until this process leads the prefix, or ctx ends. A term
// won earlier that has not ended is returned again.
func (e *Elector) Campaign(ctx context.Context) (*Term, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if t := e.term; t != nil {
		select {
		case <-t.Done():
		default:
			if e.s.term.Load() == t.fence {
				return t, nil
			}
		}
	}
	pfx := e.s.prefix + etcdElection
	// The keep-alive runs until the term ends; ctx bounds only the
	// campaign.
	session, err := concurrency.NewSession(e.s.cli, concurrency.WithTTL(e.ttl), concurrency.WithContext(context.WithoutCancel(ctx)))
	if err != nil {
		return nil, fmt.Errorf("store: lease to campaign for %q: %w", pfx, err)
	}
	// A campaign whose session died meanwhile could still "win" with a
	// key that is gone; stop it instead.
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { // ends with Campaign, which cancels cctx
		select {
		case <-session.Done():
			cancel()
		case <-cctx.Done():
		}
	}()
	el := concurrency.NewElection(session, pfx)
	if err := el.Campaign(cctx, e.value); err != nil {
		session.Close()
		return nil, fmt.Errorf("store: campaign for %q: %w", pfx, err)
	}
	f := &writeFence{what: "leadership", key: el.Key(), rev: el.Rev(), lease: session.Lease(), done: session.Done(),
		cmp: clientv3.Compare(clientv3.CreateRevision(el.Key()), "=", el.Rev())}
	t := &Term{s: e.s, session: session, election: el, fence: f}
	e.s.term.Store(f)
	e.term = t
	return t, nil
}

// Done is closed when the term's lease is gone: writes are refused from
// then on, and another process may lead.
func (t *Term) Done() <-chan struct{} { return t.session.Done() }

// Key returns the term's leader key; Rev its create revision, which every
// write compares.
func (t *Term) Key() string { return t.fence.key }

// Rev returns the create revision of the term's leader key.
func (t *Term) Rev() int64 { return t.fence.rev }

// End gives the leadership up: the store refuses writes from now on, and
// the leader key is deleted, so that another process leads at once rather
// than after the lease. Ending twice is a no-op.
func (t *Term) End(ctx context.Context) {
	t.once.Do(func() {
		t.s.term.CompareAndSwap(t.fence, nil)
		t.election.Resign(ctx) // an error leaves the key to its lease
		t.session.Close()
	})
}

// ObserveLeader calls f with the current leader's value ("" when none) at
// the start and after every change, until ctx ends.
func (s *Etcd) ObserveLeader(ctx context.Context, f func(leader string)) {
	pfx := s.prefix + etcdElection + "/"
	last := "\x00" // no value: f is called at the start
	for ctx.Err() == nil {
		rev, err := s.readLeader(ctx, pfx, func(v string) {
			if v != last {
				last = v
				f(v)
			}
		})
		if err == nil {
			err = s.waitChange(ctx, pfx, rev)
		}
		if err != nil && ctx.Err() == nil {
			// etcd unreachable, or without quorum: the leader is
			// unknown until it answers again.
			if last != "" {
				last = ""
				f("")
			}
			t := time.NewTimer(500 * time.Millisecond)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
		}
	}
}

// readLeader reads the oldest key under pfx (the leader's) and returns the
// revision it read at.
func (s *Etcd) readLeader(ctx context.Context, pfx string, f func(string)) (int64, error) {
	resp, err := timed(s, "get", func() (*clientv3.GetResponse, error) {
		return s.cli.Get(s.fast(ctx), pfx, clientv3.WithFirstCreate()...)
	})
	if err != nil {
		return 0, err
	}
	v := ""
	if len(resp.Kvs) > 0 {
		v = string(resp.Kvs[0].Value)
	}
	f(v)
	return resp.Header.Revision, nil
}

// waitChange returns when a key under pfx changes after revision rev.
func (s *Etcd) waitChange(ctx context.Context, pfx string, rev int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for wr := range s.cli.Watch(wctx, pfx, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
		if err := wr.Err(); err != nil {
			return err
		}
		if len(wr.Events) > 0 {
			return nil
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return errors.New("store: watch of the election ended")
}

// Value returns what the elector campaigns with: this process's advertised
// URL.
func (e *Elector) Value() string { return e.value }

// ObserveLeader is the store's ObserveLeader.
func (e *Elector) ObserveLeader(ctx context.Context, f func(leader string)) {
	e.s.ObserveLeader(ctx, f)
}
