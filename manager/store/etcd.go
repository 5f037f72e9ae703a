package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/faasnet/faasnet/token"
)

// The etcd layout, under the store's prefix P:
//
//	P state/schema           SchemaVersion in decimal
//	P state/revision         State.Revision in decimal; absent until set
//	P state/batch            id of the last batch applied (see Apply)
//	P state/vms/NAME         VM as JSON
//	P state/functions/NAME   the function and its whole tree (etcdTree)
//	P state/tokens/ID        token.Record as JSON
//	P state/certs/SERIAL     Cert as JSON
//
// NAME, ID and SERIAL are path-escaped (url.PathEscape), so a name with "/"
// cannot reach into another key. Everything Load reads is under P state/,
// which leaves the rest of P to other users of the prefix (leader election).
//
// A function and its nodes share one value because etcd bounds the
// operations of one transaction (--max-txn-ops, 128 by default): with a key
// per node, one scale-out of a hundred VMs or the removal of a function with
// a large tree would not fit one transaction, and a batch must be one. With
// a value per tree, a batch costs one operation per VM, function, token and
// certificate it names, whatever the size of the trees; the manager's
// batches name one or two VMs and the few functions a change touches. The
// price is that a change to a tree rewrites the whole tree (about 90 bytes a
// node), which is what a scale operation costs in bbolt's page writes too.
const (
	etcdState     = "state/"
	etcdSchema    = etcdState + "schema"
	etcdRevision  = etcdState + "revision"
	etcdBatch     = etcdState + "batch"
	etcdVMs       = etcdState + bucketVMs + "/"
	etcdFunctions = etcdState + bucketFunctions + "/"
	etcdTokens    = etcdState + bucketTokens + "/"
	etcdCerts     = etcdState + bucketCerts + "/"
)

// DefaultEtcdPrefix is where the manager keeps its keys unless told otherwise.
const DefaultEtcdPrefix = "/faasnet/"

// DefaultMaxTxnOps is etcd's default --max-txn-ops. Etcd refuses a batch
// that needs more operations, with ErrTooLarge, before sending it.
const DefaultMaxTxnOps = 128

// ErrTooLarge marks a batch that needs more operations than one etcd
// transaction may hold. Memory and Bolt never return it.
var ErrTooLarge = errors.New("batch needs more operations than one etcd transaction allows")

// ErrOutcomeUnknown marks an Apply whose transaction was sent but whose
// result could not be learnt, because etcd could not be reached afterwards.
// It is the one error after which the batch may have been applied.
var ErrOutcomeUnknown = errors.New("outcome of the etcd transaction unknown")

// resolveTimeout bounds the transaction that settles an Apply interrupted
// after sending (see Apply).
const resolveTimeout = 5 * time.Second

// maxConflicts bounds the retries of an Apply that another writer of the
// same prefix keeps overtaking.
const maxConflicts = 16

// etcdTree is the value of a function's key: the function's record and its
// nodes by VM, each encoded exactly as Bolt stores them.
type etcdTree struct {
	Function json.RawMessage            `json:"function"`
	Nodes    map[string]json.RawMessage `json:"nodes,omitempty"`
}

// cachedTree is a function's tree as this process last read or wrote it,
// with its key's mod revision; tree nil and rev 0: the function does not
// exist.
type cachedTree struct {
	tree *etcdTree
	rev  int64
}

func (t *etcdTree) clone() *etcdTree {
	return &etcdTree{Function: t.Function, Nodes: maps.Clone(t.Nodes)}
}

// Etcd is a Store in etcd. Every Apply is one etcd transaction, which etcd
// has committed to a quorum of its members before Apply returns.
type Etcd struct {
	cli    *clientv3.Client
	own    bool // Close closes cli
	prefix string
	maxOps int
	mu     sync.Mutex // serialises Apply: two of this process's would only conflict
	closed atomic.Bool

	// The trees Apply read or wrote, valid while the batch key's mod
	// revision is still batchRev: every Apply writes the batch key, so
	// then no other writer changed anything. Each Apply's transaction
	// checks it; a failed check drops the cache. Guarded by mu.
	cache    map[string]cachedTree // nil: dropped
	batchRev int64
}

var _ Store = (*Etcd)(nil)

// EtcdOptions configures OpenEtcd.
type EtcdOptions struct {
	Endpoints   []string      // client URLs, e.g. http://127.0.0.1:2379
	Prefix      string        // key prefix; DefaultEtcdPrefix if empty
	DialTimeout time.Duration // first connection; 5s if 0
	MaxTxnOps   int           // the cluster's --max-txn-ops; DefaultMaxTxnOps if 0
}

// OpenEtcd connects to etcd and opens the store under opts.Prefix, laying it
// out if it is empty. Close closes the connection.
func OpenEtcd(ctx context.Context, opts EtcdOptions) (*Etcd, error) {
	if opts.DialTimeout == 0 {
		opts.DialTimeout = 5 * time.Second
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   opts.Endpoints,
		DialTimeout: opts.DialTimeout,
		Context:     context.WithoutCancel(ctx),
		// The client's own logger would print every retry to stderr; the
		// errors reach the caller.
		Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("store: connect to etcd %v: %w", opts.Endpoints, err)
	}
	s, err := NewEtcd(ctx, cli, opts.Prefix, opts.MaxTxnOps)
	if err != nil {
		cli.Close()
		return nil, err
	}
	s.own = true
	return s, nil
}

// NewEtcd opens the store under prefix with a client the caller keeps and
// closes (after the store). maxOps is the cluster's --max-txn-ops, or 0 for
// DefaultMaxTxnOps.
func NewEtcd(ctx context.Context, cli *clientv3.Client, prefix string, maxOps int) (*Etcd, error) {
	if prefix == "" {
		prefix = DefaultEtcdPrefix
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	if maxOps <= 0 {
		maxOps = DefaultMaxTxnOps
	}
	s := &Etcd{cli: cli, prefix: prefix, maxOps: maxOps}
	if err := s.initialize(ctx); err != nil {
		return nil, fmt.Errorf("store: open etcd prefix %q: %w", prefix, err)
	}
	return s, nil
}

// initialize writes the schema of a new store, or checks an existing one's.
func (s *Etcd) initialize(ctx context.Context) error {
	key := s.prefix + etcdSchema
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, strconv.Itoa(SchemaVersion))).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return fmt.Errorf("write schema: %w", err)
	}
	if resp.Succeeded {
		return nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) != 1 {
		return fmt.Errorf("key %q vanished while read: %w", key, ErrCorrupt)
	}
	return checkSchema(kvs[0].Value)
}

// Prefix returns the key prefix the store lives under.
func (s *Etcd) Prefix() string { return s.prefix }

// Load implements Store. It reads one consistent revision of the prefix.
func (s *Etcd) Load(ctx context.Context) (State, error) {
	if s.closed.Load() {
		return State{}, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return State{}, fmt.Errorf("store: load: %w", err)
	}
	resp, err := s.cli.Get(ctx, s.prefix+etcdState, clientv3.WithPrefix())
	if err != nil {
		return State{}, s.wrap(fmt.Errorf("store: load etcd prefix %q: %w", s.prefix, err))
	}
	var st State
	schema := false
	for _, kv := range resp.Kvs {
		key := strings.TrimPrefix(string(kv.Key), s.prefix)
		switch key {
		case etcdSchema:
			schema = true
			err = checkSchema(kv.Value)
		case etcdRevision:
			if st.Revision, err = strconv.ParseUint(string(kv.Value), 10, 64); err != nil {
				err = corrupt(s.prefix, kv.Key, err)
			}
		case etcdBatch:
		default:
			err = s.loadRecord(&st, key, kv.Value)
		}
		if err != nil {
			return State{}, fmt.Errorf("store: load etcd prefix %q: %w", s.prefix, err)
		}
	}
	if !schema {
		return State{}, fmt.Errorf("store: load etcd prefix %q: key %q missing: %w", s.prefix, s.prefix+etcdSchema, ErrCorrupt)
	}
	sortState(&st)
	return st, nil
}

// loadRecord decodes the record at key (relative to the prefix) into st.
func (s *Etcd) loadRecord(st *State, key string, val []byte) error {
	kind, esc, ok := strings.Cut(strings.TrimPrefix(key, etcdState), "/")
	name, err := url.PathUnescape(esc)
	if !ok || err != nil || name == "" {
		return corrupt(s.prefix, []byte(key), errors.New("not a key of this store"))
	}
	switch kind {
	case bucketVMs:
		return appendDecoded(&st.VMs, kind, name, val, vmName)
	case bucketTokens:
		return appendDecoded(&st.Tokens, kind, name, val, tokenID)
	case bucketCerts:
		return appendDecoded(&st.Certs, kind, name, val, certSerial)
	case bucketFunctions:
		return loadTree(st, name, val)
	}
	return corrupt(s.prefix, []byte(key), errors.New("not a key of this store"))
}

func appendDecoded[T any](list *[]T, where, key string, val []byte, name func(*T) string) error {
	v, err := decode(where, []byte(key), val, name)
	*list = append(*list, v)
	return err
}

// loadTree decodes the function fn and its nodes into st.
func loadTree(st *State, fn string, val []byte) error {
	var t etcdTree
	if err := json.Unmarshal(val, &t); err != nil {
		return corrupt(bucketFunctions, []byte(fn), err)
	}
	f, err := decode(bucketFunctions, []byte(fn), t.Function, functionName)
	if err != nil {
		return err
	}
	st.Functions = append(st.Functions, f)
	for _, vm := range slices.Sorted(maps.Keys(t.Nodes)) {
		n, err := decodeNode(fn, []byte(vm), t.Nodes[vm])
		if err != nil {
			return err
		}
		st.Nodes = append(st.Nodes, n)
	}
	return nil
}

// sortState puts st in State's order: etcd returns keys in the order of
// their escaped names, which is not the names' order.
func sortState(st *State) {
	slices.SortFunc(st.VMs, func(a, b VM) int { return strings.Compare(a.Name, b.Name) })
	slices.SortStableFunc(st.Nodes, func(a, b Node) int { return strings.Compare(a.Function, b.Function) })
	slices.SortFunc(st.Functions, func(a, b Function) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(st.Tokens, func(a, b token.Record) int { return strings.Compare(a.ID, b.ID) })
	slices.SortFunc(st.Certs, func(a, b Cert) int { return strings.Compare(a.Serial, b.Serial) })
}

// Apply implements Store.
//
// It reads the trees the batch touches (unless cached from its last
// Apply), computes them anew and writes everything in one transaction that
// holds only if nothing it read has changed and no other batch came in
// between (the batch key's revision); otherwise it starts again. Each transaction also writes a fresh id to the
// batch key, which settles a transaction whose answer was lost (canceled
// context, connection lost): a second transaction either finds the id,
// and the batch was applied, or moves the batch key on, so that the lost
// one can never apply. Only if that second transaction fails too does Apply
// return ErrOutcomeUnknown.
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
	return fmt.Errorf("store: apply to etcd prefix %q: overtaken by other writers %d times", s.prefix, maxConflicts)
}

// try makes one attempt at applying p; done is false if another writer came
// in between, or the cache was stale, and the caller should try again.
func (s *Etcd) try(ctx context.Context, p *plan) (done bool, err error) {
	names := touchedFunctions(p)
	fresh, err := s.fill(ctx, names)
	if err != nil {
		return false, err
	}
	trees := make(map[string]*etcdTree, len(names))
	for _, fn := range names {
		if c := s.cache[fn]; c.tree != nil {
			trees[fn] = c.tree.clone()
		}
	}
	if err := applyTrees(trees, p); err != nil {
		if !fresh {
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
	ops, err := s.ops(p, names, trees, id)
	if err != nil {
		return false, err
	}
	cmps := []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(s.prefix+etcdBatch), "=", s.batchRev)}
	for _, fn := range names {
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(s.key(etcdFunctions, fn)), "=", s.cache[fn].rev))
	}
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil || !resp.Succeeded {
		s.cache = nil
	}
	if err != nil {
		return s.settle(ctx, id, err)
	}
	if !resp.Succeeded {
		return false, nil
	}
	// Every key the transaction wrote has its revision now.
	rev := resp.Header.Revision
	for _, fn := range names {
		if trees[fn] == nil {
			s.cache[fn] = cachedTree{}
		} else {
			s.cache[fn] = cachedTree{tree: trees[fn], rev: rev}
		}
	}
	s.batchRev = rev
	return true, nil
}

// settle learns whether the transaction that wrote batch id and failed
// with sendErr was applied, and makes sure it never will be if it was not.
func (s *Etcd) settle(ctx context.Context, id string, sendErr error) (bool, error) {
	sendErr = s.wrap(fmt.Errorf("store: apply to etcd prefix %q: %w", s.prefix, sendErr))
	if errors.Is(sendErr, ErrClosed) {
		return false, sendErr
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), resolveTimeout)
	defer cancel()
	key := s.prefix + etcdBatch
	other, err := batchID()
	if err != nil {
		return false, err
	}
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.Value(key), "=", id)).
		Else(clientv3.OpPut(key, other)).
		Commit()
	switch {
	case err != nil:
		return false, fmt.Errorf("%w (%w: %w)", sendErr, ErrOutcomeUnknown, err)
	case resp.Succeeded:
		return true, nil // applied after all: the error was only the answer's
	}
	return false, sendErr
}

// touchedFunctions returns the sorted names of the functions whose trees p
// changes.
func touchedFunctions(p *plan) []string {
	set := map[string]bool{}
	for _, k := range p.delFuncs {
		set[k] = true
	}
	for _, k := range p.delNodes {
		set[k.Function] = true
	}
	for _, e := range p.putFuncs {
		set[e.key] = true
	}
	for _, e := range p.putNodes {
		set[e.fn] = true
	}
	return slices.Sorted(maps.Keys(set))
}

// fill reads into the cache the trees of names it lacks, and the batch
// key's revision if the cache was dropped. fresh reports whether every tree
// of names was read now.
func (s *Etcd) fill(ctx context.Context, names []string) (fresh bool, err error) {
	var keys []string
	if s.cache == nil {
		s.cache = map[string]cachedTree{}
		keys = append(keys, s.prefix+etcdBatch)
		s.batchRev = 0 // never written, unless read below
	}
	fresh = true
	for _, fn := range names {
		if _, ok := s.cache[fn]; ok {
			fresh = false
		} else {
			keys = append(keys, s.key(etcdFunctions, fn))
		}
	}
	// Each read is its own small transaction of at most maxOps gets; the
	// commit's comparisons make them one consistent view after the fact.
	for chunk := range slices.Chunk(keys, s.maxOps) {
		if err := s.read(ctx, chunk); err != nil {
			s.cache = nil
			return false, s.wrap(fmt.Errorf("store: apply to etcd prefix %q: read: %w", s.prefix, err))
		}
	}
	return fresh, nil
}

// read reads keys (the batch key, function keys) into the cache; a function
// key that does not exist is cached as absent.
func (s *Etcd) read(ctx context.Context, keys []string) error {
	var ops []clientv3.Op
	for _, k := range keys {
		ops = append(ops, clientv3.OpGet(k))
	}
	resp, err := s.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return err
	}
	for i, r := range resp.Responses {
		fn, isTree := strings.CutPrefix(keys[i], s.prefix+etcdFunctions)
		if isTree {
			fn, _ = url.PathUnescape(fn) // s.key escaped it
			s.cache[fn] = cachedTree{}
		}
		for _, kv := range r.GetResponseRange().Kvs {
			if !isTree {
				s.batchRev = kv.ModRevision
				continue
			}
			t := new(etcdTree)
			if err := json.Unmarshal(kv.Value, t); err != nil {
				return corrupt(bucketFunctions, []byte(fn), err)
			}
			s.cache[fn] = cachedTree{tree: t, rev: kv.ModRevision}
		}
	}
	return nil
}

// applyTrees changes trees as p says, in Batch's order.
func applyTrees(trees map[string]*etcdTree, p *plan) error {
	for _, k := range p.delFuncs {
		trees[k] = nil
	}
	for _, k := range p.delNodes {
		if t := trees[k.Function]; t != nil {
			delete(t.Nodes, k.VM)
		}
	}
	for _, e := range p.putFuncs {
		t := trees[e.key]
		if t == nil {
			t = &etcdTree{}
			trees[e.key] = t
		}
		t.Function = e.val
	}
	for _, e := range p.putNodes {
		t := trees[e.fn]
		if t == nil {
			return unknownFunction(e)
		}
		if t.Nodes == nil {
			t.Nodes = map[string]json.RawMessage{}
		}
		t.Nodes[e.vm] = e.val
	}
	return nil
}

// ops returns the transaction's writes: one per key, since etcd refuses a
// transaction that names a key twice, with the last word on each key
// winning as Batch says.
func (s *Etcd) ops(p *plan, names []string, trees map[string]*etcdTree, id string) ([]clientv3.Op, error) {
	final := map[string][]byte{} // key -> value; nil: delete
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
	for _, fn := range names {
		if trees[fn] == nil {
			final[s.key(etcdFunctions, fn)] = nil
			continue
		}
		val, err := encode(trees[fn])
		if err != nil {
			return nil, fmt.Errorf("store: encode tree of function %q: %w", fn, err)
		}
		final[s.key(etcdFunctions, fn)] = val
	}
	if p.revision != 0 {
		final[s.prefix+etcdRevision] = []byte(strconv.FormatUint(p.revision, 10))
	}
	final[s.prefix+etcdBatch] = []byte(id)
	if len(final) > s.maxOps {
		return nil, fmt.Errorf("store: apply to etcd prefix %q: %d keys to write, the limit is %d: %w", s.prefix, len(final), s.maxOps, ErrTooLarge)
	}
	ops := make([]clientv3.Op, 0, len(final))
	for _, k := range slices.Sorted(maps.Keys(final)) {
		if final[k] == nil {
			ops = append(ops, clientv3.OpDelete(k))
		} else {
			ops = append(ops, clientv3.OpPut(k, string(final[k])))
		}
	}
	return ops, nil
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

// wrap maps the errors of a closed client to ErrClosed: Close may win a race
// with a call that passed the closed check.
func (s *Etcd) wrap(err error) error {
	if s.closed.Load() {
		return fmt.Errorf("%w (%w)", ErrClosed, err)
	}
	return err
}

// Close implements Store. It closes the client if OpenEtcd made it.
func (s *Etcd) Close() error {
	if s.closed.Swap(true) || !s.own {
		return nil
	}
	if err := s.cli.Close(); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("store: close etcd client: %w", err)
	}
	return nil
}
