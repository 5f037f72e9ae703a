package manager

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/faasnet/faasnet/manager/store"
)

// Group commit. An etcd transaction takes a round trip and a sync to disk
// (a few milliseconds on one member, more with a quorum); one at a time,
// with the lock held, the manager made at most a few hundred changes a
// second however many clients asked. Instead a change is made in memory
// under the lock, joins the open group of changes, and the lock is let go
// while one writer stores the group as one batch: the changes that come
// in while a group is being written are stored together next.
//
// A change is acknowledged only once its group is stored; its onCommit
// work (tokens, certificates: state a reload does not restore) runs then,
// under the lock. A group
// that fails fails every change after it too (they were made on top of
// it) and reloads the state from the store, as one failed change did
// before. Heartbeats and pushes wait for the group of the newest change
// they could see (see durable), so no worker is told of a change the store
// might still refuse. The other reads may show a change up to one group
// write before it is acknowledged.

// writeTimeout bounds storing one group.
const writeTimeout = 15 * time.Second

// maxGroupKeys bounds the keys a group writes as estimated by groupKeys,
// below what one etcd transaction may hold (store.DefaultMaxTxnOps), with
// room for the keys the store adds (batch id, revision).
const maxGroupKeys = 96

// group is changes stored together.
type group struct {
	batch store.Batch
	keys  int           // groupKeys of batch
	after []func()      // the changes' onCommit work, run under the lock once stored
	done  chan struct{} // closed once stored, or failed
	err   error         // set before done closes
}

// writes is the queue of groups; guarded by Manager.mu.
type writes struct {
	queue   []*group // the first is being written (if writing), the last is open
	writing bool     // a writer goroutine runs
	sealed  bool     // queue[0] is being written: no change joins it
}

// pending returns the newest group not yet stored, nil if none. m.mu is
// held.
func (w *writes) pending() *group {
	if len(w.queue) == 0 {
		return nil
	}
	return w.queue[len(w.queue)-1]
}

// join adds b, with its onCommit work, to the open group and returns that
// group, starting a writer if none runs. m.mu is held.
func (m *Manager) join(b store.Batch, after []func()) *group {
	w := &m.writes
	k := groupKeys(&b)
	g := w.pending()
	if g == nil || (len(w.queue) == 1 && w.sealed) || g.keys > 0 && g.keys+k > maxGroupKeys {
		g = &group{done: make(chan struct{})}
		w.queue = append(w.queue, g)
	}
	merge(&g.batch, b)
	g.keys += k
	g.after = append(g.after, after...)
	if !w.writing {
		w.writing = true
		go m.writeGroups()
	}
	return g
}

// writeGroups stores the queued groups in order until none is left.
func (m *Manager) writeGroups() {
	m.mu.Lock()
	defer m.mu.Unlock()
	w := &m.writes
	for len(w.queue) > 0 {
		g := w.queue[0]
		w.sealed = true
		m.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
		err := m.store.Apply(ctx, g.batch)
		cancel()
		m.mu.Lock()
		w.sealed = false
		if err == nil {
			w.queue = w.queue[1:]
			for _, f := range g.after {
				f()
			}
			close(g.done)
			continue
		}
		// Every queued change was made on top of this group. The state is
		// reloaded (or marked unknown) before any of them is answered, as
		// a reader asking after the answer must not see them.
		if _, lerr := m.load(context.Background()); lerr != nil {
			m.log.Error("reloading state after a failed write", "err", lerr)
			m.stateUnknown()
		}
		for _, q := range w.queue {
			q.err = err
			close(q.done)
		}
		w.queue = nil
	}
	w.writing = false
}

// durable waits until g (from writes.pending, under the lock) is stored;
// nil g is. It reports the group's failure as a 503.
func durable(g *group) error {
	if g == nil {
		return nil
	}
	<-g.done
	if g.err != nil {
		return &Error{503, fmt.Sprintf("storing the changes this answer depends on: %v", g.err)}
	}
	return nil
}

// groupKeys estimates the etcd keys b writes: one per VM, token and
// certificate, and per function one and the node shards its nodes fall in
// (at most 16, store's nodeShards).
func groupKeys(b *store.Batch) int {
	n := len(b.PutVMs) + len(b.DeleteVMs) + len(b.PutTokens) + len(b.PutCerts) + len(b.DeleteCerts)
	nodes := map[string]int{}
	for _, f := range b.PutFunctions {
		nodes[f.Name] += 0
	}
	for _, fn := range b.DeleteFunctions {
		nodes[fn] = 16
	}
	for _, nd := range b.PutNodes {
		nodes[nd.Function]++
	}
	for _, k := range b.DeleteNodes {
		nodes[k.Function]++
	}
	for _, c := range nodes {
		n += 1 + min(c, 16)
	}
	return n
}

// merge makes dst the batch that does what dst and then b do. A Store
// applies a batch's deletes before its puts, so a put in dst that b
// deletes is dropped rather than left to win.
func merge(dst *store.Batch, b store.Batch) {
	for _, vm := range b.DeleteVMs {
		dst.PutVMs = slices.DeleteFunc(dst.PutVMs, func(v store.VM) bool { return v.Name == vm })
	}
	for _, fn := range b.DeleteFunctions {
		dst.PutFunctions = slices.DeleteFunc(dst.PutFunctions, func(f store.Function) bool { return f.Name == fn })
		dst.PutNodes = slices.DeleteFunc(dst.PutNodes, func(n store.Node) bool { return n.Function == fn })
	}
	for _, k := range b.DeleteNodes {
		dst.PutNodes = slices.DeleteFunc(dst.PutNodes, func(n store.Node) bool { return n.Key() == k })
	}
	for _, s := range b.DeleteCerts {
		dst.PutCerts = slices.DeleteFunc(dst.PutCerts, func(c store.Cert) bool { return c.Serial == s })
	}
	dst.DeleteVMs = append(dst.DeleteVMs, b.DeleteVMs...)
	dst.DeleteFunctions = append(dst.DeleteFunctions, b.DeleteFunctions...)
	dst.DeleteNodes = append(dst.DeleteNodes, b.DeleteNodes...)
	dst.DeleteCerts = append(dst.DeleteCerts, b.DeleteCerts...)
	dst.PutVMs = append(dst.PutVMs, b.PutVMs...)
	dst.PutFunctions = append(dst.PutFunctions, b.PutFunctions...)
	dst.PutNodes = append(dst.PutNodes, b.PutNodes...)
	dst.PutTokens = append(dst.PutTokens, b.PutTokens...)
	dst.PutCerts = append(dst.PutCerts, b.PutCerts...)
	if b.Revision != 0 {
		dst.Revision = b.Revision
	}
}
