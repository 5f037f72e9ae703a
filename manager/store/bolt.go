package store

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Bucket names of the bbolt layout, also used in error messages.
//
//	meta       "schema" -> SchemaVersion in decimal
//	           "revision" -> State.Revision in decimal; absent in files
//	           written before there was one (Load returns 0)
//	vms        VM name -> VM as JSON
//	functions  function name -> Function as JSON
//	nodes      function name -> bucket: VM name -> Node as JSON
//	tokens     token id -> token.Record as JSON (hashes, never secrets)
//	certs      serial (hex) -> Cert as JSON
//
// tokens and certs came after schema 1 without changing it: a file without
// them gets them, empty, when it is opened.
const (
	bucketMeta      = "meta"
	bucketVMs       = "vms"
	bucketFunctions = "functions"
	bucketNodes     = "nodes"
	bucketTokens    = "tokens"
	bucketCerts     = "certs"
	keySchema       = "schema"
	keyRevision     = "revision"
)

// SchemaVersion is the layout this package writes. OpenBolt refuses a file
// with a newer one rather than misread it.
const SchemaVersion = 1

// LockTimeout is how long OpenBolt waits for the file lock that another
// process (normally a manager still running, or not yet dead) holds.
const LockTimeout = time.Second

// Bolt is a Store in an embedded bbolt file. Every Apply is one bbolt write
// transaction, synced to disk before Apply returns.
type Bolt struct {
	db     *bolt.DB
	path   string
	closed atomic.Bool
}

var _ Store = (*Bolt)(nil)

// OpenBolt opens the store file at path, creating the file and its buckets
// if needed; the directory must exist. Only one process may have the file
// open: if another holds it for LockTimeout, OpenBolt fails with an error
// that says so.
func OpenBolt(path string) (*Bolt, error) {
	// NoSync stays off: a batch reported as applied must survive a crash.
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: LockTimeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("store: another manager holds %s (file lock not acquired within %v): %w", path, LockTimeout, err)
	}
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	if err := initialize(db); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	return &Bolt{db: db, path: path}, nil
}

// initialize checks the schema of an existing file, or lays out a new one,
// and adds the buckets a file written before them lacks.
func initialize(db *bolt.DB) error {
	fresh, complete := false, true
	err := db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket([]byte(bucketMeta))
		if meta == nil {
			fresh = true
			return nil
		}
		complete = tx.Bucket([]byte(bucketTokens)) != nil && tx.Bucket([]byte(bucketCerts)) != nil
		return checkSchema(meta.Get([]byte(keySchema)))
	})
	if err != nil || !fresh && complete {
		return err
	}
	return db.Update(func(tx *bolt.Tx) error {
		names := []string{bucketTokens, bucketCerts}
		if fresh {
			names = append(names, bucketMeta, bucketVMs, bucketFunctions, bucketNodes)
		}
		for _, name := range names {
			if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
				return fmt.Errorf("create bucket %q: %w", name, err)
			}
		}
		if !fresh {
			return nil
		}
		v := strconv.Itoa(SchemaVersion)
		return tx.Bucket([]byte(bucketMeta)).Put([]byte(keySchema), []byte(v))
	})
}

func checkSchema(raw []byte) error {
	v, err := strconv.ParseUint(string(raw), 10, 64)
	if err != nil || v == 0 {
		return fmt.Errorf("bucket %q key %q: schema version %q: %w", bucketMeta, keySchema, raw, ErrCorrupt)
	}
	if v > SchemaVersion {
		return fmt.Errorf("schema version %d is newer than %d, the newest this build reads: %w", v, SchemaVersion, ErrUnsupportedSchema)
	}
	return nil
}

// Path returns the file the store is kept in.
func (b *Bolt) Path() string { return b.path }

// Load implements Store. It reads one consistent snapshot.
func (b *Bolt) Load(ctx context.Context) (State, error) {
	if b.closed.Load() {
		return State{}, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return State{}, fmt.Errorf("store: load: %w", err)
	}
	var st State
	err := b.db.View(func(tx *bolt.Tx) error {
		var err error
		st, err = load(tx)
		return err
	})
	if err != nil {
		return State{}, b.wrap(fmt.Errorf("store: load %s: %w", b.path, err))
	}
	return st, nil
}

func load(tx *bolt.Tx) (State, error) {
	var st State
	vms, funcs, nodes, err := buckets(tx)
	if err != nil {
		return st, err
	}
	meta := tx.Bucket([]byte(bucketMeta))
	if meta == nil {
		return st, fmt.Errorf("bucket %q missing: %w", bucketMeta, ErrCorrupt)
	}
	if raw := meta.Get([]byte(keyRevision)); raw != nil {
		if st.Revision, err = strconv.ParseUint(string(raw), 10, 64); err != nil {
			return st, corrupt(bucketMeta, []byte(keyRevision), err)
		}
	}
	err = vms.ForEach(func(k, v []byte) error {
		vm, err := decode(bucketVMs, k, v, vmName)
		st.VMs = append(st.VMs, vm)
		return err
	})
	if err != nil {
		return st, err
	}
	err = funcs.ForEach(func(k, v []byte) error {
		fn, err := decode(bucketFunctions, k, v, functionName)
		st.Functions = append(st.Functions, fn)
		return err
	})
	if err != nil {
		return st, err
	}
	err = nodes.ForEach(func(fn, v []byte) error {
		tree := nodes.Bucket(fn)
		if tree == nil {
			return corrupt(bucketNodes, fn, errors.New("a value where a bucket belongs"))
		}
		if funcs.Get(fn) == nil {
			return corrupt(bucketNodes, fn, errors.New("nodes of a function that does not exist"))
		}
		return tree.ForEach(func(k, v []byte) error {
			n, err := decodeNode(string(fn), k, v)
			st.Nodes = append(st.Nodes, n)
			return err
		})
	})
	if err != nil {
		return st, err
	}
	return st, loadTrust(tx, &st)
}

func loadTrust(tx *bolt.Tx, st *State) error {
	tokens, certs, err := trustBuckets(tx)
	if err != nil {
		return err
	}
	err = tokens.ForEach(func(k, v []byte) error {
		r, err := decode(bucketTokens, k, v, tokenID)
		st.Tokens = append(st.Tokens, r)
		return err
	})
	if err != nil {
		return err
	}
	return certs.ForEach(func(k, v []byte) error {
		c, err := decode(bucketCerts, k, v, certSerial)
		st.Certs = append(st.Certs, c)
		return err
	})
}

func trustBuckets(tx *bolt.Tx) (tokens, certs *bolt.Bucket, err error) {
	tokens, certs = tx.Bucket([]byte(bucketTokens)), tx.Bucket([]byte(bucketCerts))
	if tokens == nil || certs == nil {
		return nil, nil, fmt.Errorf("buckets %q or %q missing: %w", bucketTokens, bucketCerts, ErrCorrupt)
	}
	return tokens, certs, nil
}

// buckets returns the data buckets, which a file past initialize must have.
func buckets(tx *bolt.Tx) (vms, funcs, nodes *bolt.Bucket, err error) {
	vms = tx.Bucket([]byte(bucketVMs))
	funcs = tx.Bucket([]byte(bucketFunctions))
	nodes = tx.Bucket([]byte(bucketNodes))
	if vms == nil || funcs == nil || nodes == nil {
		return nil, nil, nil, fmt.Errorf("buckets %q, %q or %q missing: %w", bucketVMs, bucketFunctions, bucketNodes, ErrCorrupt)
	}
	return vms, funcs, nodes, nil
}

// Apply implements Store.
//
// It uses db.Update, not db.Batch: the manager applies one batch at a time
// under its own lock, so Batch would find nothing to coalesce and only add
// its MaxBatchDelay to every call.
func (b *Bolt) Apply(ctx context.Context, batch Batch) error {
	if b.closed.Load() {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store: apply: %w", err)
	}
	p, err := prepare(&batch)
	if err != nil || batch.Empty() {
		return err
	}
	var refused error
	err = b.db.Update(func(tx *bolt.Tx) error {
		// Waiting for the writer lock may have outlasted the caller; a
		// caller that gave up must not find its batch applied after all.
		if err := ctx.Err(); err != nil {
			refused = fmt.Errorf("store: apply: %w", err)
		} else {
			refused = write(tx, p)
		}
		return refused
	})
	if err != nil && err != refused {
		err = b.wrap(fmt.Errorf("store: apply to %s: %w", b.path, err))
	}
	return err
}

// write applies p in tx; on error the caller rolls tx back.
func write(tx *bolt.Tx, p *plan) error {
	vms, funcs, nodes, err := buckets(tx)
	if err != nil {
		return fmt.Errorf("store: apply: %w", err)
	}
	for _, k := range p.delVMs {
		if err := vms.Delete([]byte(k)); err != nil {
			return fmt.Errorf("store: delete vm %q: %w", k, err)
		}
	}
	for _, k := range p.delFuncs {
		if err := funcs.Delete([]byte(k)); err != nil {
			return fmt.Errorf("store: delete function %q: %w", k, err)
		}
		err := nodes.DeleteBucket([]byte(k))
		if err != nil && !errors.Is(err, bolterrors.ErrBucketNotFound) {
			return fmt.Errorf("store: delete nodes of function %q: %w", k, err)
		}
	}
	for _, k := range p.delNodes {
		tree := nodes.Bucket([]byte(k.Function))
		if tree == nil {
			continue
		}
		if err := tree.Delete([]byte(k.VM)); err != nil {
			return fmt.Errorf("store: delete node %q/%q: %w", k.Function, k.VM, err)
		}
	}
	for _, e := range p.putVMs {
		if err := vms.Put([]byte(e.key), e.val); err != nil {
			return fmt.Errorf("store: put vm %q: %w", e.key, err)
		}
	}
	for _, e := range p.putFuncs {
		if err := funcs.Put([]byte(e.key), e.val); err != nil {
			return fmt.Errorf("store: put function %q: %w", e.key, err)
		}
	}
	if p.revision != 0 {
		v := strconv.FormatUint(p.revision, 10)
		meta := tx.Bucket([]byte(bucketMeta))
		if meta == nil {
			return fmt.Errorf("store: put revision: bucket %q missing: %w", bucketMeta, ErrCorrupt)
		}
		if err := meta.Put([]byte(keyRevision), []byte(v)); err != nil {
			return fmt.Errorf("store: put revision %s: %w", v, err)
		}
	}
	for _, e := range p.putNodes {
		if funcs.Get([]byte(e.fn)) == nil {
			return unknownFunction(e)
		}
		tree, err := nodes.CreateBucketIfNotExists([]byte(e.fn))
		if err == nil {
			err = tree.Put([]byte(e.vm), e.val)
		}
		if err != nil {
			return fmt.Errorf("store: put node %q/%q: %w", e.fn, e.vm, err)
		}
	}
	return writeTrust(tx, p)
}

func writeTrust(tx *bolt.Tx, p *plan) error {
	tokens, certs, err := trustBuckets(tx)
	if err != nil {
		return fmt.Errorf("store: apply: %w", err)
	}
	for _, k := range p.delCerts {
		if err := certs.Delete([]byte(k)); err != nil {
			return fmt.Errorf("store: delete cert %q: %w", k, err)
		}
	}
	for _, e := range p.putTokens {
		if err := tokens.Put([]byte(e.key), e.val); err != nil {
			return fmt.Errorf("store: put token %q: %w", e.key, err)
		}
	}
	for _, e := range p.putCerts {
		if err := certs.Put([]byte(e.key), e.val); err != nil {
			return fmt.Errorf("store: put cert %q: %w", e.key, err)
		}
	}
	return nil
}

// wrap maps bbolt's "not open" to ErrClosed: Close may win a race with a
// call that passed the closed check.
func (b *Bolt) wrap(err error) error {
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// Close implements Store. It waits for transactions in flight.
func (b *Bolt) Close() error {
	if b.closed.Swap(true) {
		return nil
	}
	if err := b.db.Close(); err != nil {
		return fmt.Errorf("store: close %s: %w", b.path, err)
	}
	return nil
}
