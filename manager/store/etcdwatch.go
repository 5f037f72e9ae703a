package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// StateChange is what WatchChanges reports: the whole state (at the start,
// and whenever the watch had to start again), or one etcd revision's
// change as a Batch, which applied to the state before gives the state
// after.
type StateChange struct {
	Full  *State // nil for a change
	Batch Batch
}

// WatchChanges calls f with the state under the prefix and then with every
// change to it, in order, until ctx ends. It starts again with the whole
// state after an error (etcd unreachable, or without quorum, meanwhile;
// history compacted) or when f asks for it by returning true. Calls do not
// overlap.
//
// A change costs what it changed, not the state's size: a follower keeps
// its copy of 10,000 VMs with the few keys each step writes.
func (e *Elector) WatchChanges(ctx context.Context, f func(StateChange) (resync bool)) {
	s := e.s
	for ctx.Err() == nil {
		err := s.watchChanges(ctx, f)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			t := time.NewTimer(500 * time.Millisecond)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
		}
	}
}

// errResync ends a watch at f's request.
var errResync = errors.New("store: resync asked for")

func (s *Etcd) watchChanges(ctx context.Context, f func(StateChange) bool) error {
	st, rev, err := s.load(ctx)
	if err != nil {
		return err
	}
	if f(StateChange{Full: &st}) {
		return errResync
	}
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for wr := range s.cli.Watch(wctx, s.prefix+etcdState, clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithRev(rev+1)) {
		if err := wr.Err(); err != nil {
			return err
		}
		// One transaction's events share a revision; each is one batch,
		// so that a later revision's put never meets an earlier one's
		// delete in the same batch.
		for evs := range byRevision(wr.Events) {
			b, err := s.decodeEvents(evs)
			if err != nil {
				return err
			}
			if f(StateChange{Batch: b}) {
				return errResync
			}
		}
	}
	return errors.New("store: watch of the state ended")
}

// byRevision yields runs of events of one revision.
func byRevision(evs []*clientv3.Event) func(func([]*clientv3.Event) bool) {
	return func(yield func([]*clientv3.Event) bool) {
		for len(evs) > 0 {
			n := 1
			for n < len(evs) && evs[n].Kv.ModRevision == evs[0].Kv.ModRevision {
				n++
			}
			if !yield(evs[:n]) {
				return
			}
			evs = evs[n:]
		}
	}
}

// decodeEvents turns one revision's events into the batch that did them.
func (s *Etcd) decodeEvents(evs []*clientv3.Event) (Batch, error) {
	var b Batch
	for _, ev := range evs {
		key := strings.TrimPrefix(string(ev.Kv.Key), s.prefix)
		put := ev.Type == mvccpb.PUT
		if err := s.decodeEvent(&b, key, put, ev); err != nil {
			return Batch{}, fmt.Errorf("store: watch etcd prefix %q: %w", s.prefix, err)
		}
	}
	return b, nil
}

func (s *Etcd) decodeEvent(b *Batch, key string, put bool, ev *clientv3.Event) error {
	switch key {
	case etcdSchema, etcdBatch:
		return nil
	case etcdRevision:
		if put {
			r, err := strconv.ParseUint(string(ev.Kv.Value), 10, 64)
			if err != nil {
				return corrupt(s.prefix, ev.Kv.Key, err)
			}
			b.Revision = r
		}
		return nil
	}
	kind, esc, ok := strings.Cut(strings.TrimPrefix(key, etcdState), "/")
	if kind == bucketNodes {
		esc, _, ok = strings.Cut(esc, "/")
	}
	name, err := url.PathUnescape(esc)
	if !ok || err != nil || name == "" {
		return corrupt(s.prefix, ev.Kv.Key, errors.New("not a key of this store"))
	}
	val := ev.Kv.Value
	switch kind {
	case bucketVMs:
		if !put {
			b.DeleteVMs = append(b.DeleteVMs, name)
			return nil
		}
		return appendDecoded(&b.PutVMs, kind, name, val, vmName)
	case bucketFunctions:
		if !put {
			b.DeleteFunctions = append(b.DeleteFunctions, name)
			return nil
		}
		return appendDecoded(&b.PutFunctions, kind, name, val, functionName)
	case bucketTokens:
		if put {
			return appendDecoded(&b.PutTokens, kind, name, val, tokenID)
		}
		return nil // tokens are never deleted
	case bucketCerts:
		if !put {
			b.DeleteCerts = append(b.DeleteCerts, name)
			return nil
		}
		return appendDecoded(&b.PutCerts, kind, name, val, certSerial)
	case bucketNodes:
		return diffShard(b, name, ev.PrevKv, ev.Kv, put)
	}
	return corrupt(s.prefix, ev.Kv.Key, errors.New("not a key of this store"))
}

// diffShard adds to b the nodes of function fn that a shard's change put or
// deleted: those whose record differs from the shard's value before.
func diffShard(b *Batch, fn string, prev, now *mvccpb.KeyValue, put bool) error {
	shard := func(kv *mvccpb.KeyValue) (map[string]json.RawMessage, error) {
		sh := map[string]json.RawMessage{}
		if kv == nil || len(kv.Value) == 0 {
			return sh, nil
		}
		if err := json.Unmarshal(kv.Value, &sh); err != nil {
			return nil, corrupt(bucketNodes+"/"+fn, kv.Key, err)
		}
		return sh, nil
	}
	before, err := shard(prev)
	if err != nil {
		return err
	}
	after := map[string]json.RawMessage{}
	if put {
		if after, err = shard(now); err != nil {
			return err
		}
	}
	for _, vm := range slices.Sorted(maps.Keys(before)) {
		if _, ok := after[vm]; !ok {
			b.DeleteNodes = append(b.DeleteNodes, NodeKey{Function: fn, VM: vm})
		}
	}
	for _, vm := range slices.Sorted(maps.Keys(after)) {
		if old, ok := before[vm]; ok && string(old) == string(after[vm]) {
			continue
		}
		n, err := decodeNode(fn, []byte(vm), after[vm])
		if err != nil {
			return err
		}
		b.PutNodes = append(b.PutNodes, n)
	}
	return nil
}

// load is Load, with the etcd revision it read at.
func (s *Etcd) load(ctx context.Context) (State, int64, error) {
	var rev int64
	st, err := s.loadAt(ctx, &rev)
	return st, rev, err
}
