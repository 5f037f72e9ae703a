package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// etcdLockPrefix is where, under the store's prefix, an Exclusive store's
// lock lives: one key per waiting process, the oldest holds it.
const etcdLockPrefix = "lock/"

// DefaultSessionTTL is the lease of an Exclusive store's lock: how long a
// process that died or was cut off keeps others waiting, and how long a
// paused one has before its writes are fenced off.
const DefaultSessionTTL = 5 * time.Second

// ErrFenced marks a write refused because the store does not hold its
// prefix: an Exclusive store's lease expired, and another process may hold
// the lock now; or an elected store (EtcdOptions.Elect) does not lead, or
// its term ended. Nothing of the write was applied.
var ErrFenced = errors.New("store: does not hold the lock or the leadership of its etcd prefix")

// etcdLock is an Exclusive store's hold on its prefix.
type etcdLock struct {
	session *concurrency.Session
	mutex   *concurrency.Mutex
	fence   *writeFence
}

// acquire waits until this process holds the lock under key, or ctx ends.
func acquire(ctx context.Context, cli *clientv3.Client, key string, ttl time.Duration) (*etcdLock, error) {
	if ttl == 0 {
		ttl = DefaultSessionTTL
	}
	secs := int((ttl + time.Second - 1) / time.Second) // etcd leases count whole seconds
	// The session's keep-alive runs until Close; WithContext only bounds
	// the lease grant.
	session, err := concurrency.NewSession(cli, concurrency.WithTTL(secs), concurrency.WithContext(context.WithoutCancel(ctx)))
	if err != nil {
		return nil, fmt.Errorf("lease for the lock %q: %w", key, err)
	}
	mutex := concurrency.NewMutex(session, key)
	if err := mutex.Lock(ctx); err != nil {
		session.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("another process holds the lock %q (a manager still running, or one that died less than its %ds lease ago): %w", key, secs, err)
		}
		return nil, fmt.Errorf("lock %q: %w", key, err)
	}
	f := &writeFence{what: "lock", cmp: mutex.IsOwner(), key: mutex.Key(),
		lease: session.Lease(), done: session.Done()}
	return &etcdLock{session: session, mutex: mutex, fence: f}, nil
}

// release gives up the lock at once (revoking the lease), so that the next
// process need not wait for it to expire. It is a no-op on nil.
func (l *etcdLock) release() {
	if l != nil {
		l.session.Close() // revokes the lease; an error leaves it to expire
	}
}

// Lost returns a channel closed when an Exclusive store has lost its lock
// (or was closed): its writes are fenced off from then on. It is nil, never
// closed, for a store that is not Exclusive.
func (s *Etcd) Lost() <-chan struct{} {
	if s.lock == nil {
		return nil
	}
	return s.lock.session.Done()
}
