package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/faasnet/faasnet/token"
)

// MaxNameLen is the longest name, in bytes, the store accepts. It is far
// above what the manager allows and far below bbolt's key limit.
const MaxNameLen = 1024

// entry is an encoded record under its key.
type entry struct {
	key string
	val []byte
}

// nodeEntry is an encoded Node under its function and VM.
type nodeEntry struct {
	fn, vm string
	val    []byte
}

// plan is a validated and encoded Batch: what a backend writes, in order.
// Its values are fresh copies, so the caller may reuse the Batch.
type plan struct {
	delVMs    []string
	delFuncs  []string
	delNodes  []NodeKey
	putVMs    []entry
	putFuncs  []entry
	putNodes  []nodeEntry
	delCerts  []string
	putTokens []entry
	putCerts  []entry
	revision  uint64 // 0: unchanged
}

// prepare validates and encodes b. It checks everything that does not depend
// on the stored state; the function of each put node is checked by the
// backend, after the batch's deletes and function puts.
func prepare(b *Batch) (*plan, error) {
	p := &plan{delVMs: b.DeleteVMs, delFuncs: b.DeleteFunctions, delNodes: b.DeleteNodes, delCerts: b.DeleteCerts, revision: b.Revision}
	for _, name := range b.DeleteVMs {
		if err := checkName("delete vm", name); err != nil {
			return nil, err
		}
	}
	for _, name := range b.DeleteFunctions {
		if err := checkName("delete function", name); err != nil {
			return nil, err
		}
	}
	for _, k := range b.DeleteNodes {
		if err := checkNodeKey("delete node", k); err != nil {
			return nil, err
		}
	}
	for i := range b.PutVMs {
		e, err := encodeVM(&b.PutVMs[i])
		if err != nil {
			return nil, err
		}
		p.putVMs = append(p.putVMs, e)
	}
	for i := range b.PutFunctions {
		e, err := encodeFunction(&b.PutFunctions[i])
		if err != nil {
			return nil, err
		}
		p.putFuncs = append(p.putFuncs, e)
	}
	for i := range b.PutNodes {
		e, err := encodeNode(&b.PutNodes[i])
		if err != nil {
			return nil, err
		}
		p.putNodes = append(p.putNodes, e)
	}
	return p, prepareTrust(b, p)
}

// prepareTrust validates and encodes the batch's tokens and certificates.
func prepareTrust(b *Batch, p *plan) error {
	for _, s := range b.DeleteCerts {
		if err := checkName("delete cert", s); err != nil {
			return err
		}
	}
	for i := range b.PutTokens {
		e, err := encodeToken(&b.PutTokens[i])
		if err != nil {
			return err
		}
		p.putTokens = append(p.putTokens, e)
	}
	for i := range b.PutCerts {
		e, err := encodeCert(&b.PutCerts[i])
		if err != nil {
			return err
		}
		p.putCerts = append(p.putCerts, e)
	}
	return nil
}

func encodeToken(r *token.Record) (entry, error) {
	const what = "put token"
	if err := checkName(what, r.ID); err != nil {
		return entry{}, err
	}
	if err := checkText(what, r.ID, "role", string(r.Role)); err != nil {
		return entry{}, err
	}
	if err := checkText(what, r.ID, "hash", r.Hash); err != nil {
		return entry{}, err
	}
	val, err := encode(r)
	if err != nil {
		return entry{}, fmt.Errorf("store: %s %q: %w: %w", what, r.ID, ErrInvalid, err)
	}
	return entry{key: r.ID, val: val}, nil
}

func encodeCert(c *Cert) (entry, error) {
	const what = "put cert"
	if err := checkName(what, c.Serial); err != nil {
		return entry{}, err
	}
	if err := checkName(what+" "+c.Serial+": vm", c.VM); err != nil {
		return entry{}, err
	}
	if err := checkText(what, c.Serial, "key", c.Key); err != nil {
		return entry{}, err
	}
	val, err := encode(c)
	if err != nil {
		return entry{}, fmt.Errorf("store: %s %q: %w: %w", what, c.Serial, ErrInvalid, err)
	}
	return entry{key: c.Serial, val: val}, nil
}

func encodeVM(vm *VM) (entry, error) {
	const what = "put vm"
	if err := checkName(what, vm.Name); err != nil {
		return entry{}, err
	}
	if err := checkText(what, vm.Name, "addr", vm.Addr); err != nil {
		return entry{}, err
	}
	for _, img := range vm.Images {
		if err := checkText(what, vm.Name, "image", img); err != nil {
			return entry{}, err
		}
	}
	val, err := encode(vm)
	if err != nil {
		return entry{}, fmt.Errorf("store: %s %q: %w: %w", what, vm.Name, ErrInvalid, err)
	}
	return entry{key: vm.Name, val: val}, nil
}

func encodeFunction(fn *Function) (entry, error) {
	const what = "put function"
	if err := checkName(what, fn.Name); err != nil {
		return entry{}, err
	}
	if err := checkText(what, fn.Name, "image", fn.Image); err != nil {
		return entry{}, err
	}
	if err := checkText(what, fn.Name, "digest", fn.Digest); err != nil {
		return entry{}, err
	}
	if fn.Stripes < 0 || fn.Stripes > MaxStripes {
		return entry{}, fmt.Errorf("store: %s %q: %d stripes, want 0 to %d: %w", what, fn.Name, fn.Stripes, MaxStripes, ErrInvalid)
	}
	if fn.BlockSize < 0 {
		return entry{}, fmt.Errorf("store: %s %q: negative block size %d: %w", what, fn.Name, fn.BlockSize, ErrInvalid)
	}
	// Checked here rather than left to the encoder so that the error says
	// which field is wrong.
	if len(fn.Spec) > 0 && !json.Valid(fn.Spec) {
		return entry{}, fmt.Errorf("store: %s %q: spec is not valid JSON: %w", what, fn.Name, ErrInvalid)
	}
	val, err := encode(fn)
	if err != nil {
		return entry{}, fmt.Errorf("store: %s %q: %w: %w", what, fn.Name, ErrInvalid, err)
	}
	return entry{key: fn.Name, val: val}, nil
}

func encodeNode(n *Node) (nodeEntry, error) {
	const what = "put node"
	if err := checkNodeKey(what, n.Key()); err != nil {
		return nodeEntry{}, err
	}
	if err := checkText(what, n.Function+"/"+n.VM, "parent", n.Parent); err != nil {
		return nodeEntry{}, err
	}
	if err := checkPositions(n); err != nil {
		return nodeEntry{}, fmt.Errorf("store: %s %q/%q: %w: %w", what, n.Function, n.VM, err, ErrInvalid)
	}
	val, err := encode(n)
	if err != nil {
		return nodeEntry{}, fmt.Errorf("store: %s %q/%q: %w: %w", what, n.Function, n.VM, ErrInvalid, err)
	}
	return nodeEntry{fn: n.Function, vm: n.VM, val: val}, nil
}

// checkPositions checks a node's stripe fields one by one; whether the
// nodes of a function make a layout is for the manager's load to tell
// (ftree.RestoreStriped), since a batch changes only some of them.
func checkPositions(n *Node) error {
	if len(n.Positions) > MaxStripes {
		return fmt.Errorf("%d positions, at most %d stripes", len(n.Positions), MaxStripes)
	}
	for s, p := range n.Positions {
		if p < 0 {
			return fmt.Errorf("negative position %d in stripe %d", p, s)
		}
	}
	if n.Home < 0 || n.Home > 0 && n.Home >= len(n.Positions) {
		return fmt.Errorf("home stripe %d of %d", n.Home, len(n.Positions))
	}
	return nil
}

// encode is json.Marshal without HTML escaping, so that Spec keeps its bytes
// (bar white space) across a round trip.
func encode(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// checkName refuses names that cannot be keys: empty, too long, or not
// UTF-8 (JSON would silently rewrite them, so the key and the stored record
// would disagree).
func checkName(what, name string) error {
	switch {
	case name == "":
		return fmt.Errorf("store: %s: empty name: %w", what, ErrInvalid)
	case len(name) > MaxNameLen:
		return fmt.Errorf("store: %s %.32q...: name is %d bytes long, the limit is %d: %w", what, name, len(name), MaxNameLen, ErrInvalid)
	case !utf8.ValidString(name):
		return fmt.Errorf("store: %s %q: name is not valid UTF-8: %w", what, name, ErrInvalid)
	}
	return nil
}

func checkNodeKey(what string, k NodeKey) error {
	if err := checkName(what+" function", k.Function); err != nil {
		return err
	}
	return checkName(fmt.Sprintf("%s in function %q: vm", what, k.Function), k.VM)
}

// checkText refuses strings JSON would not store as they are.
func checkText(what, name, field, s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("store: %s %q: %s %q is not valid UTF-8: %w", what, name, field, s, ErrInvalid)
	}
	return nil
}

// decode decodes a record stored at where/key and checks that it names its
// key, which is what ties a record to the place it is stored.
func decode[T any](where string, key, val []byte, name func(*T) string) (T, error) {
	var v T
	if val == nil {
		return v, corrupt(where, key, errors.New("a bucket where a record belongs"))
	}
	if err := json.Unmarshal(val, &v); err != nil {
		return v, corrupt(where, key, err)
	}
	if got := name(&v); got != string(key) {
		return v, corrupt(where, key, fmt.Errorf("record is named %q", got))
	}
	return v, nil
}

func vmName(v *VM) string             { return v.Name }
func functionName(f *Function) string { return f.Name }
func nodeVM(n *Node) string           { return n.VM }
func tokenID(r *token.Record) string  { return r.ID }
func certSerial(c *Cert) string       { return c.Serial }

// decodeNode decodes a node stored under function fn.
func decodeNode(fn string, key, val []byte) (Node, error) {
	where := bucketNodes + "/" + fn
	n, err := decode(where, key, val, nodeVM)
	if err == nil && n.Function != fn {
		err = corrupt(where, key, fmt.Errorf("record is of function %q", n.Function))
	}
	return n, err
}

func corrupt(where string, key []byte, err error) error {
	return fmt.Errorf("bucket %q key %q: %w: %w", where, key, ErrCorrupt, err)
}
