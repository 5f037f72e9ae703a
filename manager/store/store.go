// Package store persists the manager's state: registered VMs, function
// definitions and every VM's place in every function tree.
//
// The manager keeps its state in memory and writes each change through a
// Store as one Batch, so that after a crash (even kill -9) and a restart,
// Load returns exactly the last batch that Apply reported as applied, and
// nothing of a batch that failed. Two implementations live here: Bolt, an
// embedded bbolt file (the default), and Memory, for tests. Both share the
// validation and encoding of this package, so they accept and refuse the same
// batches and load the same state.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/faasnet/faasnet/token"
)

// VM is a registered VM.
type VM struct {
	Name     string   `json:"name"`
	Addr     string   `json:"addr"`
	Capacity int      `json:"capacity"`         // max functions hosted
	Images   []string `json:"images,omitempty"` // images the VM reported fully cached (placement prefers them)
}

// Function is a function definition.
type Function struct {
	Name       string          `json:"name"`
	Image      string          `json:"image"`
	Digest     string          `json:"digest,omitempty"` // the manifest digest Image was pinned to
	Generation uint64          `json:"generation"`       // last generation handed out for this function's nodes
	Spec       json.RawMessage `json:"spec,omitempty"`   // rest of the definition, opaque here
	// Stripes is the number of stripe trees; 0 (stores written before
	// stripes) and 1 mean one tree, described by its nodes' Parent and
	// Slot. With 2 or more the nodes' Positions and Home describe the
	// trees (ftree.Layout).
	Stripes int `json:"stripes,omitempty"`
	// BlockSize is the block the function's VMs were assigned; 0: none.
	BlockSize int64 `json:"block_size,omitempty"`
}

// MaxStripes bounds Function.Stripes and the length of Node.Positions.
const MaxStripes = 64

// Node is one VM's place in one function's tree.
type Node struct {
	Function   string `json:"function"`
	VM         string `json:"vm"`
	Parent     string `json:"parent"` // "" at the root
	Slot       int    `json:"slot"`   // 0 left, 1 right (ignored at the root)
	Generation uint64 `json:"generation"`
	// Positions is the VM's position in each stripe of a function of
	// several stripes (ftree.Layout's Order[s] lists the VMs by it), nil
	// in a one-tree function; Parent and Slot then name stripe 0's, for
	// people reading the store, and a load ignores them.
	Positions []int `json:"positions,omitempty"`
	// Home is the stripe in which the VM is a home member (one of the
	// first Layout.Members[Home] positions); 0 without Positions.
	Home int `json:"home,omitempty"`
}

// Cert is a VM certificate the manager issued. It is kept until it expires,
// so that revoking a VM revokes every certificate it holds; Revoked marks it
// revoked.
type Cert struct {
	Serial   string    `json:"serial"` // hex, as pki.Revocations names it
	VM       string    `json:"vm"`
	Key      string    `json:"key"` // hex SHA-256 of the certificate's public key (SPKI)
	NotAfter time.Time `json:"not_after"`
	Revoked  time.Time `json:"revoked,omitzero"` // zero: live
}

// NodeKey names a Node: the function's tree and the VM in it.
type NodeKey struct{ Function, VM string }

// Key returns the key of n.
func (n Node) Key() NodeKey { return NodeKey{Function: n.Function, VM: n.VM} }

// State is everything a Store holds. VMs and Functions are sorted by name,
// Nodes by function and then by VM (byte-wise order). A list with no entries
// is nil.
//
// Loaded records equal the stored ones with two exceptions that JSON imposes:
// an empty Images list loads as nil, and Spec loads compacted (insignificant
// white space removed).
type State struct {
	VMs       []VM       `json:"vms"`
	Functions []Function `json:"functions"`
	Nodes     []Node     `json:"nodes"`
	// Tokens are the manager's bearer tokens (hashed), sorted by id.
	Tokens []token.Record `json:"tokens,omitempty"`
	// Certs are the VM certificates issued and not yet pruned, sorted by
	// serial.
	Certs []Cert `json:"certs,omitempty"`
	// Revision is the last assignments revision the manager stored; 0 in
	// a store that never had one.
	Revision uint64 `json:"revision,omitempty"`
}

// Batch is one atomic change. A Store applies all of it or none of it.
//
// Within a batch the deletes come first (VMs, functions, nodes, certs), then
// the puts (VMs, functions, nodes, tokens, certs), each list in its order, so a later put of a
// key wins over an earlier one and a put wins over a delete of the same key.
// Deleting a key that does not exist is not an error. Deleting a function
// deletes all its nodes too. Deleting a VM does not touch the nodes naming
// it: the manager removes a VM from its trees in the same batch.
//
// Names (VM, function, NodeKey and Node.Function/VM, token ids, cert
// serials and VMs) must be 1 to MaxNameLen bytes of valid UTF-8, and every
// other string valid UTF-8;
// Spec, if not empty, must be valid JSON. A put node's function must exist
// once the batch's deletes and function puts are done. Otherwise Apply
// fails with ErrInvalid or ErrUnknownFunction and changes nothing.
type Batch struct {
	PutVMs    []VM
	DeleteVMs []string

	PutFunctions    []Function
	DeleteFunctions []string // deleting a function deletes all its nodes too

	PutNodes    []Node
	DeleteNodes []NodeKey

	// Tokens are never deleted: a revoked token's record stays so that
	// its secret is recognised as revoked.
	PutTokens []token.Record

	PutCerts    []Cert
	DeleteCerts []string // serials

	// Revision, if not 0, replaces the stored revision.
	Revision uint64
}

// Empty reports whether b changes nothing.
func (b *Batch) Empty() bool {
	return len(b.PutVMs) == 0 && len(b.DeleteVMs) == 0 &&
		len(b.PutFunctions) == 0 && len(b.DeleteFunctions) == 0 &&
		len(b.PutNodes) == 0 && len(b.DeleteNodes) == 0 && b.Revision == 0 &&
		len(b.PutTokens) == 0 && len(b.PutCerts) == 0 && len(b.DeleteCerts) == 0
}

// Store persists the manager's state. It is safe for concurrent use.
type Store interface {
	// Load returns the whole state as of the last applied batch.
	Load(ctx context.Context) (State, error)
	// Apply applies b atomically (see Batch for the rules). When Apply
	// returns nil the change is durable; when it returns an error nothing
	// of b was applied.
	Apply(ctx context.Context, b Batch) error
	// Close releases the store. Later calls of Load and Apply fail with
	// ErrClosed; closing again is a no-op.
	Close() error
}

var (
	// ErrInvalid marks a batch refused because an entry is malformed.
	ErrInvalid = errors.New("invalid batch entry")
	// ErrUnknownFunction marks a batch refused because it puts a node of
	// a function that does not exist.
	ErrUnknownFunction = errors.New("function does not exist")
	// ErrCorrupt marks stored data that cannot be decoded or is
	// inconsistent.
	ErrCorrupt = errors.New("corrupt store")
	// ErrUnsupportedSchema marks a store file written by a newer version.
	ErrUnsupportedSchema = errors.New("unsupported schema version")
	// ErrClosed is returned by a Store used after Close.
	ErrClosed = errors.New("store: closed")
)
