package store

import (
	"context"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// writeFence is what a fenced store's every write compares in its
// transaction: that the key through which it holds the prefix (the lock's,
// or the leader's) still exists with the create revision it had when the
// store got it. A key that expired with its lease, or was resigned, fails
// the comparison, and with it the whole write; a key with the same name
// made later has another create revision.
type writeFence struct {
	what  string // "lock" or "leadership", for errors
	cmp   clientv3.Cmp
	key   string
	rev   int64 // the key's create revision; 0: not known (a lock's key names its lease, so is never made again)
	lease clientv3.LeaseID
	done  <-chan struct{} // closed once the session behind the key is gone
}

// holds reports whether kvs, the answer of a get of f.key, is still f's key.
func (f *writeFence) holds(kvs []*mvccpb.KeyValue) bool {
	return len(kvs) == 1 && (f.rev == 0 || kvs[0].CreateRevision == f.rev)
}

// EtcdObserver learns what the store's etcd requests cost and which writes
// were fenced off, for metrics. Its methods must not block.
type EtcdObserver interface {
	// Request reports one etcd request: op is "get" or "txn".
	Request(op string, d time.Duration, err error)
	// Fenced reports a write refused with ErrFenced.
	Fenced()
}

// SetObserver makes o learn of the store's requests from now on; nil stops.
func (s *Etcd) SetObserver(o EtcdObserver) {
	if o == nil {
		s.obs.Store(nil)
		return
	}
	s.obs.Store(&o)
}

// fence returns the fence the next write must hold: nil for a store that
// is neither Exclusive nor elected; ErrFenced for an elected store that does
// not lead, or whose term is known to have ended.
func (s *Etcd) fence() (*writeFence, error) {
	var f *writeFence
	switch {
	case s.lock != nil:
		f = s.lock.fence
	case !s.elect:
		return nil, nil
	default:
		f = s.term.Load()
		if f == nil {
			s.observeFenced()
			return nil, fmt.Errorf("%w: this process does not lead etcd prefix %q", ErrFenced, s.prefix)
		}
	}
	select {
	case <-f.done:
		return nil, s.refused(f)
	default:
		return f, nil
	}
}

// refused returns (and counts) ErrFenced for a write f no longer allows.
func (s *Etcd) refused(f *writeFence) error {
	s.observeFenced()
	return fmt.Errorf("%w: %s %q of prefix %q lost (lease %x expired or given up)", ErrFenced, f.what, f.key, s.prefix, int64(f.lease))
}

func (s *Etcd) observeFenced() {
	if o := s.obs.Load(); o != nil {
		(*o).Fenced()
	}
}

// timed runs one etcd request and reports it to the observer.
func timed[R any](s *Etcd, op string, req func() (R, error)) (R, error) {
	start := time.Now()
	r, err := req()
	if o := s.obs.Load(); o != nil {
		(*o).Request(op, time.Since(start), err)
	}
	return r, err
}

// fast makes the requests of an elected store fail at once, with a gRPC
// Unavailable ("no leader"), when the etcd member has no leader (the
// cluster lost quorum), instead of waiting for one: a manager's writes and
// reloads hold its lock, which its reads wait for.
func (s *Etcd) fast(ctx context.Context) context.Context {
	if !s.elect {
		return ctx
	}
	return clientv3.WithRequireLeader(ctx)
}
