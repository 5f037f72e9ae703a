package store

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
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
//	P state/schema              SchemaVersion in decimal
//	P state/revision            State.Revision in decimal; absent until set
//	P state/batch               id of the last batch applied (see Apply)
//	P state/vms/NAME            VM as JSON
//	P state/functions/NAME      Function as JSON
//	P state/nodes/NAME/SHARD    JSON object: VM name -> Node as JSON, for the
//	                            function's VMs whose shardOf is SHARD
//	P state/tokens/ID           token.Record as JSON
//	P state/certs/SERIAL        Cert as JSON
//
// NAME, ID and SERIAL are path-escaped (url.PathEscape), so a name with "/"
// cannot reach into another key. Everything Load reads is under P state/,
// which leaves the rest of P to other users of the prefix (leader election).
//
// A function's nodes are spread over nodeShards values because etcd bounds
// both the operations of one transaction (--max-txn-ops, 128 by default)
// and its size (--max-request-bytes, 1.5 MiB), and a batch must be one
// transaction. A key per node would let one scale-out of a hundred VMs
// overflow the first; one value per tree would let a tree of some 15,000 VMs
// (about 90 bytes a node) overflow the second, and would rewrite the whole
// tree on every scale step. With shards a batch costs one operation per VM,
// token and certificate it names, and per function at most 1+nodeShards,
// whatever the size of the tree; the manager's batches name one or two VMs
// and, per function, the two or three nodes a change moves.
const (
	etcdState     = "state/"
	etcdSchema    = etcdState + "schema"
	etcdRevision  = etcdState + "revision"
	etcdBatch     = etcdState + "batch"
	etcdVMs       = etcdState + bucketVMs + "/"
	etcdFunctions = etcdState + bucketFunctions + "/"
	etcdNodes     = etcdState + bucketNodes + "/"
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
// result could not be learnt: etcd could not be reached afterwards, or the
// store lost its lock meanwhile (then the error is ErrFenced too). It is the
// one error after which the batch may have been applied.
var ErrOutcomeUnknown = errors.New("outcome of the etcd transaction unknown")

// resolveTimeout bounds the transaction that settles an Apply interrupted
// after sending (see Apply).
const resolveTimeout = 5 * time.Second

// maxConflicts bounds the retries of an Apply that another writer of the
// same prefix keeps overtaking.
const maxConflicts = 16

// Etcd is a Store in etcd. Every Apply is one etcd transaction, which etcd
// has committed to a quorum of its members before Apply returns.
type Etcd struct {
	cli    *clientv3.Client
	own    bool // Close closes cli
	prefix string
	maxOps int
	mu     sync.Mutex // serialises Apply: two of this process's would only conflict
	closed atomic.Bool

	// The values of the function and node keys Apply read or wrote (nil:
	// absent), valid while the batch key's mod revision is still
	// batchRev: every Apply writes the batch key, so then no other writer
	// changed anything. Each Apply's transaction checks that; a failed
	// check drops the cache. Guarded by mu.
	cache    map[string][]byte // nil: dropped
	batchRev int64
	// decoded holds node keys of cache decoded, so that a step does not
	// decode a shard of a large tree again each time. Dropped with cache.
	decoded map[string]map[string]json.RawMessage

	lock *etcdLock // nil unless EtcdOptions.Exclusive

	elect bool                       // EtcdOptions.Elect
	term  atomic.Pointer[writeFence] // the current term's fence; nil: not leading
	obs   atomic.Pointer[EtcdObserver]
}

var _ Store = (*Etcd)(nil)

// EtcdOptions configures OpenEtcd.
type EtcdOptions struct {
	Endpoints   []string      // client URLs, e.g. http://127.0.0.1:2379
	Prefix      string        // key prefix; DefaultEtcdPrefix if empty
	DialTimeout time.Duration // first connection; 5s if 0
	MaxTxnOps   int           // the cluster's --max-txn-ops; DefaultMaxTxnOps if 0

	// TLS, if set, is the client side of TLS to etcd (https:// endpoints):
	// the CA that signed the members' certificates, and the client
	// certificate they may ask for (see EtcdClientTLS).
	TLS *tls.Config
	// Username and Password, if Username is set, authenticate to etcd
	// with auth enabled (see ParseEtcdUser).
	Username, Password string

	// Exclusive makes the prefix this store's alone, as a bbolt file is
	// its process's: opening waits (until ctx ends) for the prefix's lock,
	// held through a lease of SessionTTL that the client keeps alive.
	// Every Apply is fenced by the lock: once the lease is gone (the
	// process paused or cut off from etcd for SessionTTL), Apply fails
	// with ErrFenced and Lost is closed.
	Exclusive  bool
	SessionTTL time.Duration // DefaultSessionTTL if 0

	// Elect makes writes depend on leadership instead: the store
	// writes only while this process leads the prefix (see Elector),
	// and every write is fenced by the leader key. Several processes
	// may open the prefix with Elect; at most one writes at a time.
	Elect bool
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
		TLS:         opts.TLS,
		Username:    opts.Username,
		Password:    opts.Password,
		Context:     context.WithoutCancel(ctx),
		// The client's own logger would print every retry to stderr; the
		// errors reach the caller.
		Logger: zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("store: connect to etcd %v: %w", opts.Endpoints, err)
	}
	s, err := NewEtcd(ctx, cli, opts)
	if err != nil {
		cli.Close()
		return nil, err
	}
	s.own = true
	return s, nil
}

// NewEtcd opens the store as OpenEtcd does, with a client the caller keeps
// and closes (after the store); opts.Endpoints and DialTimeout are not used.
func NewEtcd(ctx context.Context, cli *clientv3.Client, opts EtcdOptions) (*Etcd, error) {
	prefix, maxOps := opts.Prefix, opts.MaxTxnOps
	if prefix == "" {
		prefix = DefaultEtcdPrefix
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	if maxOps <= 0 {
		maxOps = DefaultMaxTxnOps
	}
	if opts.Exclusive && opts.Elect {
		return nil, fmt.Errorf("store: open etcd prefix %q: Exclusive and Elect exclude each other", prefix)
	}
	s := &Etcd{cli: cli, prefix: prefix, maxOps: maxOps, elect: opts.Elect}
	if opts.Exclusive {
		l, err := acquire(ctx, cli, prefix+etcdLockPrefix, opts.SessionTTL)
		if err != nil {
			return nil, fmt.Errorf("store: open etcd prefix %q: %w", prefix, err)
		}
		s.lock = l
	}
	if err := s.initialize(ctx); err != nil {
		s.lock.release()
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
func (s *Etcd) Load(ctx context.Context) (State, error) { return s.loadAt(ctx, nil) }

// loadAt is Load; it sets *rev, unless nil, to the etcd revision read.
func (s *Etcd) loadAt(ctx context.Context, rev *int64) (State, error) {
	if s.closed.Load() {
		return State{}, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return State{}, fmt.Errorf("store: load: %w", err)
	}
	resp, err := timed(s, "get", func() (*clientv3.GetResponse, error) {
		return s.cli.Get(s.fast(ctx), s.prefix+etcdState, clientv3.WithPrefix())
	})
	if err != nil {
		return State{}, s.wrap(fmt.Errorf("store: load etcd prefix %q: %w", s.prefix, err))
	}
	if rev != nil {
		*rev = resp.Header.Revision
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
	if err := checkNodes(&st); err != nil {
		return State{}, fmt.Errorf("store: load etcd prefix %q: %w", s.prefix, err)
	}
	sortState(&st)
	return st, nil
}

// loadRecord decodes the record at key (relative to the prefix) into st.
func (s *Etcd) loadRecord(st *State, key string, val []byte) error {
	kind, esc, ok := strings.Cut(strings.TrimPrefix(key, etcdState), "/")
	if kind == bucketNodes {
		esc, _, ok = strings.Cut(esc, "/")
	}
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
		return appendDecoded(&st.Functions, kind, name, val, functionName)
	case bucketNodes:
		return loadShard(st, name, strings.TrimPrefix(key, etcdNodes+esc+"/"), val)
	}
	return corrupt(s.prefix, []byte(key), errors.New("not a key of this store"))
}

func appendDecoded[T any](list *[]T, where, key string, val []byte, name func(*T) string) error {
	v, err := decode(where, []byte(key), val, name)
	*list = append(*list, v)
	return err
}

// loadShard decodes shard of function fn's nodes into st.
func loadShard(st *State, fn, shard string, val []byte) error {
	where := bucketNodes + "/" + fn
	var nodes map[string]json.RawMessage
	if err := json.Unmarshal(val, &nodes); err != nil {
		return corrupt(where, []byte(shard), err)
	}
	for vm, raw := range nodes {
		if got := shardOf(vm); got != shard {
			return corrupt(where, []byte(vm), fmt.Errorf("node in shard %q, belongs in %q", shard, got))
		}
		n, err := decodeNode(fn, []byte(vm), raw)
		if err != nil {
			return err
		}
		st.Nodes = append(st.Nodes, n)
	}
	return nil
}

// checkNodes refuses nodes of functions that do not exist.
func checkNodes(st *State) error {
	fns := map[string]bool{}
	for _, f := range st.Functions {
		fns[f.Name] = true
	}
	for _, n := range st.Nodes {
		if !fns[n.Function] {
			return corrupt(bucketNodes, []byte(n.Function), errors.New("nodes of a function that does not exist"))
		}
	}
	return nil
}

// sortState puts st in State's order: etcd returns keys in the order of
// their escaped names, which is not the names' order.
func sortState(st *State) {
	slices.SortFunc(st.VMs, func(a, b VM) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(st.Nodes, func(a, b Node) int {
		if c := strings.Compare(a.Function, b.Function); c != 0 {
			return c
		}
		return strings.Compare(a.VM, b.VM)
	})
	slices.SortFunc(st.Functions, func(a, b Function) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(st.Tokens, func(a, b token.Record) int { return strings.Compare(a.ID, b.ID) })
	slices.SortFunc(st.Certs, func(a, b Cert) int { return strings.Compare(a.Serial, b.Serial) })
}

// wrap maps the errors of a closed client to ErrClosed: Close may win a race
// with a call that passed the closed check.
func (s *Etcd) wrap(err error) error {
	if s.closed.Load() {
		return fmt.Errorf("%w (%w)", ErrClosed, err)
	}
	return err
}

// Close implements Store. It releases the lock, if Exclusive, and closes
// the client if OpenEtcd made it.
func (s *Etcd) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	s.lock.release()
	if !s.own {
		return nil
	}
	if err := s.cli.Close(); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("store: close etcd client: %w", err)
	}
	return nil
}
