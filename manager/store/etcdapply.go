package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"net/url"
	"slices"
	"strconv"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// nodeShards is how many values a function's nodes are spread over. It is
// part of the layout: changing it needs a new SchemaVersion.
const nodeShards = 16

// shardOf returns the shard of a function's nodes that holds vm's, as the
// last element of its key.
func shardOf(vm string) string {
	h := fnv.New32a()
	h.Write([]byte(vm))
	return fmt.Sprintf("%02x", h.Sum32()%nodeShards)
}

// Apply implements Store.
//
// It reads the function and node keys the batch touches (unless cached
// from an earlier Apply), computes their new values and writes everything
// in one transaction that holds only if no other batch came in between (the
// batch key's mod revision is the one last seen); otherwise it starts
// again. Each transaction also writes a fresh id to the batch key, which
// settles a transaction whose answer was lost (canceled context, connection
// lost): a second transaction either finds the id, and the batch was
// applied, or moves the batch key on, so that the lost one can never apply.
// Only if that second transaction fails too, or an Exclusive store finds it
// lost its lock meanwhile, does Apply return ErrOutcomeUnknown.
func (s *Etcd) Apply(ctx context.Context, b Batch) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store: apply: %w", err)
	}
	p, err := prepare(&b)
	if err != nil || b.Empty() {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for range maxConflicts {
		done, err := s.try(ctx, p)
		if done || err != nil {
			return err
		}
	}
	return fmt.Errorf("store: apply to etcd prefix %q: overtaken by other writers, or etcd members lost, %d times", s.prefix, maxConflicts)
}

// change is what a batch does to the function and node keys.
type change struct {
	s      *Etcd
	funcs  map[string][]byte                     // function key -> record; nil: absent
	shards map[string]map[string]json.RawMessage // node key -> VM -> node
}

// try makes one attempt at applying p; done is false if another writer came
// in between, or the cache was stale, and the caller should try again.
func (s *Etcd) try(ctx context.Context, p *plan) (done bool, err error) {
	fresh, err := s.fill(ctx, s.keysOf(p))
	if err != nil {
		return false, err
	}
	c := &change{s: s, funcs: map[string][]byte{}, shards: map[string]map[string]json.RawMessage{}}
	if err := c.apply(p); err != nil {
		if !fresh && errors.Is(err, ErrUnknownFunction) {
			// The refusal rests on what this process saw last; another
			// writer may have defined the function since.
			s.cache = nil
			return false, nil
		}
		return false, err
	}
	id, err := batchID()
	if err != nil {
		return false, err
	}
	final, err := c.final(p, id)
	if err != nil {
		return false, err
	}
	ops := make([]clientv3.Op, 0, len(final))
	for _, k := range slices.Sorted(maps.Keys(final)) {
		if final[k] == nil {
			ops = append(ops, clientv3.OpDelete(k))
		} else {
			ops = append(ops, clientv3.OpPut(k, string(final[k])))
		}
	}
	fence, err := s.fence()
	if err != nil {
		return false, err
	}
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(s.prefix+etcdBatch), "=", s.batchRev)}
	var orElse []clientv3.Op
	if fence != nil {
		cmps = append(cmps, fence.cmp)
		orElse = append(orElse, clientv3.OpGet(fence.key))
	}
	resp, err := timed(s, "txn", func() (*clientv3.TxnResponse, error) {
		return s.cli.Txn(s.fast(ctx)).If(cmps...).Then(ops...).Else(orElse...).Commit()
	})
	if err != nil {
		s.cache = nil
		return s.settle(ctx, fence, id, err)
	}
	if !resp.Succeeded {
		s.cache = nil
		if fence != nil && !fence.holds(resp.Responses[0].GetResponseRange().Kvs) {
			return false, s.refused(fence)
		}
		return false, nil
	}
	for k, v := range final {
		if k != s.prefix+etcdBatch && k != s.prefix+etcdRevision {
			s.cache[k] = v // only function and node keys are kept
		}
	}
	for k, sh := range c.shards {
		s.decoded[k] = sh
	}
	s.batchRev = resp.Header.Revision
	return true, nil
}

// settle learns whether the transaction that wrote batch id and failed
// with sendErr was applied, and makes sure it never will be if it was not.
func (s *Etcd) settle(ctx context.Context, fence *writeFence, id string, sendErr error) (bool, error) {
	sendErr = s.wrap(fmt.Errorf("store: apply to etcd prefix %q: %w", s.prefix, sendErr))
	if errors.Is(sendErr, ErrClosed) {
		return false, sendErr
	}
	caller := ctx
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), resolveTimeout)
	defer cancel()
	key := s.prefix + etcdBatch
	other, err := batchID()
	if err != nil {
		return false, err
	}
	moveOn := clientv3.OpPut(key, other)
	if fence != nil {
		// A store fenced off must not touch the batch key of the
		// process that holds the lock now; its lost transaction cannot
		// apply any more anyway.
		moveOn = clientv3.OpTxn([]clientv3.Cmp{fence.cmp}, []clientv3.Op{moveOn}, nil)
	}
	resp, err := s.cli.Txn(s.fast(ctx)).
		If(clientv3.Compare(clientv3.Value(key), "=", id)).
		Else(moveOn).
		Commit()
	switch {
	case err != nil:
		return false, fmt.Errorf("%w (%w: %w)", sendErr, ErrOutcomeUnknown, err)
	case resp.Succeeded:
		return true, nil // applied after all: only the answer was lost
	case fence != nil && !resp.Responses[0].GetResponseTxn().Succeeded:
		// It may have been applied before the lock was lost, and the
		// batch key written since by the new holder.
		return false, fmt.Errorf("%w (%w, %w)", sendErr, ErrOutcomeUnknown, s.refused(fence))
	case unavailable(sendErr) && caller.Err() == nil:
		// The member that had the transaction went away (or lost its
		// leader); it can no longer apply, and another member answers:
		// try again.
		return false, nil
	}
	return false, sendErr
}

// unavailable reports whether err says the member that had a request went
// away or lost its leader: a gRPC Unavailable, as the transport or etcd
// (no leader, leader changed, timed out after a leader failure) give it.
func unavailable(err error) bool {
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		return ee.Code() == codes.Unavailable
	}
	return status.Code(err) == codes.Unavailable
}

func (s *Etcd) funcKey(fn string) string { return s.key(etcdFunctions, fn) }

func (s *Etcd) shardKey(fn, vm string) string {
	return s.key(etcdNodes, fn) + "/" + shardOf(vm)
}

// allShards returns the keys of every shard of fn's nodes.
func (s *Etcd) allShards(fn string) []string {
	keys := make([]string, nodeShards)
	for i := range keys {
		keys[i] = fmt.Sprintf("%s/%02x", s.key(etcdNodes, fn), i)
	}
	return keys
}

// keysOf returns the function and node keys p reads.
func (s *Etcd) keysOf(p *plan) []string {
	set := map[string]bool{}
	for _, fn := range p.delFuncs {
		set[s.funcKey(fn)] = true
		for _, k := range s.allShards(fn) {
			set[k] = true
		}
	}
	for _, k := range p.delNodes {
		set[s.shardKey(k.Function, k.VM)] = true
	}
	for _, e := range p.putFuncs {
		set[s.funcKey(e.key)] = true
	}
	for _, e := range p.putNodes {
		set[s.funcKey(e.fn)] = true
		set[s.shardKey(e.fn, e.vm)] = true
	}
	return slices.Sorted(maps.Keys(set))
}

// fill reads into the cache the keys it lacks, and the batch key's revision
// if the cache was dropped. fresh reports whether every key was read now.
func (s *Etcd) fill(ctx context.Context, keys []string) (fresh bool, err error) {
	var missing []string
	if s.cache == nil {
		s.cache = map[string][]byte{}
		s.decoded = map[string]map[string]json.RawMessage{}
		missing = append(missing, s.prefix+etcdBatch)
		s.batchRev = 0 // never written, unless read below
	}
	fresh = true
	for _, k := range keys {
		if _, ok := s.cache[k]; ok {
			fresh = false
		} else {
			missing = append(missing, k)
		}
	}
	// Each read is its own small transaction of at most maxOps gets; the
	// commit's comparison makes them one consistent view after the fact.
	for chunk := range slices.Chunk(missing, s.maxOps) {
		if err := s.read(ctx, chunk); err != nil {
			s.cache = nil
			return false, s.wrap(fmt.Errorf("store: apply to etcd prefix %q: read: %w", s.prefix, err))
		}
	}
	return fresh, nil
}

// read reads keys into the cache (the batch key into batchRev); a key that
// does not exist is cached as nil.
func (s *Etcd) read(ctx context.Context, keys []string) error {
	var ops []clientv3.Op
	for _, k := range keys {
		ops = append(ops, clientv3.OpGet(k))
	}
	resp, err := s.cli.Txn(s.fast(ctx)).Then(ops...).Commit()
	if err != nil {
		return err
	}
	for i, r := range resp.Responses {
		var val []byte
		rev := int64(0)
		if kvs := r.GetResponseRange().Kvs; len(kvs) == 1 {
			val, rev = kvs[0].Value, kvs[0].ModRevision
		}
		if keys[i] == s.prefix+etcdBatch {
			s.batchRev = rev
		} else {
			s.cache[keys[i]] = val
		}
	}
	return nil
}

// shard returns the working copy of the node key k, decoded from the
// cache on first use.
func (c *change) shard(k string) (map[string]json.RawMessage, error) {
	if sh, ok := c.shards[k]; ok {
		return sh, nil
	}
	if sh, ok := c.s.decoded[k]; ok {
		// A working copy: the cached one stays as stored until the
		// transaction succeeds.
		sh = maps.Clone(sh)
		c.shards[k] = sh
		return sh, nil
	}
	sh := map[string]json.RawMessage{}
	if raw := c.s.cache[k]; raw != nil {
		if err := json.Unmarshal(raw, &sh); err != nil {
			return nil, fmt.Errorf("store: apply: %w", corrupt(c.s.prefix, []byte(k), err))
		}
	}
	c.shards[k] = sh
	return sh, nil
}

// function returns the working record of function fn: nil if it does not
// exist.
func (c *change) function(fn string) []byte {
	k := c.s.funcKey(fn)
	if v, ok := c.funcs[k]; ok {
		return v
	}
	return c.s.cache[k]
}

// apply changes the function and node keys as p says, in Batch's order.
func (c *change) apply(p *plan) error {
	for _, fn := range p.delFuncs {
		c.funcs[c.s.funcKey(fn)] = nil
		for _, k := range c.s.allShards(fn) {
			c.shards[k] = map[string]json.RawMessage{}
		}
	}
	for _, k := range p.delNodes {
		sh, err := c.shard(c.s.shardKey(k.Function, k.VM))
		if err != nil {
			return err
		}
		delete(sh, k.VM)
	}
	for _, e := range p.putFuncs {
		c.funcs[c.s.funcKey(e.key)] = e.val
	}
	for _, e := range p.putNodes {
		if c.function(e.fn) == nil {
			return unknownFunction(e)
		}
		sh, err := c.shard(c.s.shardKey(e.fn, e.vm))
		if err != nil {
			return err
		}
		sh[e.vm] = e.val
	}
	return nil
}

// final returns the transaction's writes, key -> value (nil: delete): one
// per key, since etcd refuses a transaction that names a key twice, with
// the last word on each key winning as Batch says. A key that is absent and
// stays absent is left out.
func (c *change) final(p *plan, id string) (map[string][]byte, error) {
	s := c.s
	final := map[string][]byte{}
	for _, k := range p.delVMs {
		final[s.key(etcdVMs, k)] = nil
	}
	for _, k := range p.delCerts {
		final[s.key(etcdCerts, k)] = nil
	}
	for _, list := range []struct {
		dir     string
		entries []entry
	}{{etcdVMs, p.putVMs}, {etcdTokens, p.putTokens}, {etcdCerts, p.putCerts}} {
		for _, e := range list.entries {
			final[s.key(list.dir, e.key)] = e.val
		}
	}
	for k, v := range c.funcs {
		if v != nil || s.cache[k] != nil {
			final[k] = v
		}
	}
	for k, sh := range c.shards {
		switch {
		case len(sh) > 0:
			val, err := encodeShard(sh)
			if err != nil {
				return nil, fmt.Errorf("store: encode %s: %w", k, err)
			}
			final[k] = val
		case s.cache[k] != nil:
			final[k] = nil
		}
	}
	if p.revision != 0 {
		final[s.prefix+etcdRevision] = []byte(strconv.FormatUint(p.revision, 10))
	}
	final[s.prefix+etcdBatch] = []byte(id)
	if len(final) > s.maxOps {
		return nil, fmt.Errorf("store: apply to etcd prefix %q: %d keys to write, the limit is %d: %w", s.prefix, len(final), s.maxOps, ErrTooLarge)
	}
	return final, nil
}

func (s *Etcd) key(dir, name string) string { return s.prefix + dir + url.PathEscape(name) }

// batchID returns a fresh random id for the batch key.
func batchID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("store: batch id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// encodeShard encodes a shard of nodes as a JSON object, keys in order. The
// values are stored verbatim: they were encoded by this package (prepare)
// or decoded from a stored shard, which checked them, so encoding them
// again would spend most of a step's time on a large tree re-checking
// them.
func encodeShard(sh map[string]json.RawMessage) ([]byte, error) {
	keys := slices.Sorted(maps.Keys(sh))
	size := 2
	for _, k := range keys {
		size += len(k) + len(sh[k]) + 4
	}
	buf := make([]byte, 0, size+size/8)
	buf = append(buf, '{')
	for i, k := range keys {
		if i > 0 {
			buf = append(buf, ',')
		}
		q, err := encode(k)
		if err != nil {
			return nil, err
		}
		buf = append(buf, q...)
		buf = append(buf, ':')
		buf = append(buf, sh[k]...)
	}
	return append(buf, '}'), nil
}
