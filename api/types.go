// Package api holds the wire types of the manager's HTTP API (DESIGN.md
// section 3) and a Go client for it. Workers, the command-line verbs and the
// tests all speak through these types, so the JSON field names here are the
// contract.
package api

import (
	"encoding/json"
	"time"
)

// Prefix is the path prefix of every API route except /healthz and /metrics.
const Prefix = "/api/v1"

// WorkerAssignmentsPath is where a worker accepts pushed assignments (the
// same document as a heartbeat answer). Pushes are an optimization: the
// heartbeat answer is the truth.
const WorkerAssignmentsPath = "/worker/v1/assignments"

// DefaultStripes is the number of stripe trees a function gets from a
// manager started without --stripes, when its definition gives none: the
// least that lets every VM upload about what it downloads (issue 12).
const DefaultStripes = 2

// MaxStripes bounds a function's stripes (ftree.MaxStripes): each stripe
// tree has fan-out k, and every level delays a block by k block times.
const MaxStripes = 16

// DefaultCapacity is how many functions a VM hosts when it does not say (the
// paper caps a VM at 20 functions).
const DefaultCapacity = 20

// Capacity limits what one VM hosts.
type Capacity struct {
	Functions int `json:"functions"`
}

// RegisterRequest is the body of PUT /vms/{vm}.
type RegisterRequest struct {
	Addr     string    `json:"addr"`
	Capacity *Capacity `json:"capacity,omitempty"`
}

// VM describes a registered VM.
type VM struct {
	VM        string   `json:"vm"`
	Addr      string   `json:"addr"`
	Capacity  Capacity `json:"capacity"`
	Functions []string `json:"functions"`
	Fanout    int      `json:"fanout"` // children across all the VM's trees
}

// Peer names a VM and where it serves.
type Peer struct {
	VM   string `json:"vm"`
	Addr string `json:"addr"`
}

// Assignment is one function a VM must host.
type Assignment struct {
	Function string `json:"function"`
	Image    string `json:"image"`
	// Digest is the manifest digest the manager pinned Image to when the
	// function was defined. The VM runs exactly that manifest: the root
	// fetches it by digest, and a child refuses a parent that resolves the
	// image to anything else. Empty only from a manager that does not pin.
	Digest string `json:"digest,omitempty"`
	// Parent is the VM to fetch from; nil at the root, which fetches from the
	// registry. With stripes it is Parents[0], so that a worker that knows
	// only one tree fetches everything down stripe 0's tree.
	Parent *Peer `json:"parent"`
	// Parents holds the VM's parent in each of the function's stripe trees,
	// in stripe order (len(Parents) is the function's number of stripes);
	// nil where the VM is that stripe's root and fetches the stripe from
	// the registry. Block i of every blob travels down stripe i mod
	// len(Parents) (see package stripe). Absent from a manager without
	// stripes; see StripeParents.
	Parents []*Peer `json:"parents,omitempty"`
	// BlockSize is the block, in bytes, that the function's VMs cut every
	// blob into: the unit that travels down one stripe. Every VM of a
	// function gets the same value for the same Digest. 0 from a manager
	// that does not say: the worker's own block size.
	BlockSize int64 `json:"block_size,omitempty"`
	// Generation increases whenever this VM's assignment for the function
	// changes (new parent, new image).
	Generation uint64          `json:"generation"`
	Spec       json.RawMessage `json:"spec,omitempty"`
	// Grant is the manager's signed proof (package grant) that this VM
	// may fetch the blobs of Digest's image for Function. The VM sends it
	// to its parent with every peer request; the parent checks it offline
	// against the cluster CA. Empty from a manager without a CA.
	Grant string `json:"grant,omitempty"`
}

// StripeParents returns the VM's parent in each stripe: Parents, or
// [Parent] from a manager that sends no Parents.
func (a Assignment) StripeParents() []*Peer {
	if len(a.Parents) > 0 {
		return a.Parents
	}
	return []*Peer{a.Parent}
}

// Assignments is a VM's whole desired state: the heartbeat answer.
type Assignments struct {
	Assignments []Assignment `json:"assignments"`
	// Revision orders the documents of one manager: a worker ignores a
	// document older than one it applied (a late heartbeat answer after a
	// push). It only grows, across restarts too.
	Revision uint64 `json:"revision,omitempty"`
	// Revoked lists the serial numbers (hex) of revoked VM certificates
	// that have not expired yet, so that every worker refuses them on its
	// peer listener too, not only the manager.
	Revoked []string `json:"revoked,omitempty"`
}

// FunctionRequest is the body of PUT /functions/{fn}.
type FunctionRequest struct {
	// Image is a reference by tag or by digest. The manager pins a tag to
	// the digest of its manifest (for the manager's platform, when the tag
	// names an index) through its own registry access; a reference by
	// digest is pinned to that digest without asking the registry.
	Image string `json:"image"`
	// Spec is the rest of the definition (command, environment, readiness),
	// passed to the VMs unchanged.
	Spec json.RawMessage `json:"spec,omitempty"`
	// Stripes is the number of stripe trees, 1 to MaxStripes; 1 is the
	// paper's single tree. 0 (or absent) means: the manager's default
	// (--stripes) for a new function, the function's current number for
	// one already defined. Another number for a defined function rebuilds
	// its trees: every member gets new parents and a new generation.
	Stripes int `json:"stripes,omitempty"`
}

// Function describes a defined function.
type Function struct {
	Function string          `json:"function"`
	Image    string          `json:"image"`
	Digest   string          `json:"digest"` // the pinned manifest digest
	Spec     json.RawMessage `json:"spec,omitempty"`
	VMs      int             `json:"vms"`
	Stripes  int             `json:"stripes"`
	// BlockSize is what the assignments carry (Assignment.BlockSize).
	BlockSize int64 `json:"block_size"`
}

// ScaleRequest is the body of POST /functions/{fn}/scale: either explicit VMs
// or a count the manager picks from the pool.
type ScaleRequest struct {
	VMs   []string `json:"vms,omitempty"`
	Count int      `json:"count,omitempty"`
}

// Placement says where a VM was put in a tree: Parent and Depth in stripe
// 0, Parents in each stripe (nil where the VM is that stripe's root).
type Placement struct {
	VM      string    `json:"vm"`
	Addr    string    `json:"addr"`
	Parent  *string   `json:"parent"`
	Depth   int       `json:"depth"`
	Parents []*string `json:"parents,omitempty"`
}

// ScaleResponse answers a scale request.
type ScaleResponse struct {
	Function string      `json:"function"`
	Added    []Placement `json:"added"`
}

// Tree is the answer of GET /functions/{fn}/tree. Root, Height and Nodes
// describe stripe 0's tree (the only one without stripes); Stripes holds
// every stripe's, stripe 0's included, in stripe order.
type Tree struct {
	Function string       `json:"function"`
	Root     *string      `json:"root"`
	Height   int          `json:"height"`
	Nodes    []TreeNode   `json:"nodes"`
	Stripes  []StripeTree `json:"stripes,omitempty"`
}

// StripeTree is one stripe's tree of a function, over the same VMs as
// every other stripe's. A VM has children in at most one stripe (for more
// than k VMs), and is a leaf in the others.
type StripeTree struct {
	Stripe int        `json:"stripe"`
	Root   *string    `json:"root"`
	Height int        `json:"height"`
	Nodes  []TreeNode `json:"nodes"`
}

// StripeTrees returns t's stripe trees: Stripes, or stripe 0 alone made of
// the top-level fields when a manager without stripes sent none.
func (t Tree) StripeTrees() []StripeTree {
	if len(t.Stripes) > 0 {
		return t.Stripes
	}
	return []StripeTree{{Root: t.Root, Height: t.Height, Nodes: t.Nodes}}
}

// TreeNode is one VM of a tree.
type TreeNode struct {
	VM       string   `json:"vm"`
	Addr     string   `json:"addr"`
	Parent   *string  `json:"parent"`
	Children []string `json:"children"`
	Depth    int      `json:"depth"`
	// Fanout is the VM's number of children across all its trees and
	// stripes.
	Fanout int `json:"fanout"`
}

// VM states in a function's status.
const (
	StateAssigned = "assigned"
	StateFetching = "fetching"
	StateReady    = "ready"
	StateFailed   = "failed"
)

// FunctionReport is what a VM reports about one function.
type FunctionReport struct {
	Function          string `json:"function"`
	Image             string `json:"image,omitempty"`
	Generation        uint64 `json:"generation"`
	State             string `json:"state"`
	BytesFetched      int64  `json:"bytes_fetched"`
	BytesFromParent   int64  `json:"bytes_from_parent"`
	BytesFromRegistry int64  `json:"bytes_from_registry"`
	ImageBytes        int64  `json:"image_bytes,omitempty"`
	// BytesBeforeReady is what was fetched until the VM was ready: all of
	// the image for a whole fetch, what the container read for a lazy one.
	BytesBeforeReady int64                `json:"bytes_before_ready,omitempty"`
	Phases           map[string]time.Time `json:"phases,omitempty"`
	Error            string               `json:"error,omitempty"`
	// Address is where the function's container answers, ADDR:PORT: its
	// own address on the VM when the worker sandboxes containers.
	Address string `json:"address,omitempty"`
}

// StatusReport is the body of POST /vms/{vm}/status.
type StatusReport struct {
	Functions []FunctionReport `json:"functions"`
	// Images lists image references the VM holds complete in its cache;
	// placement prefers such VMs.
	Images []string `json:"images,omitempty"`
}

// VMStatus is one VM's line in a function's status.
type VMStatus struct {
	VM     string  `json:"vm"`
	Parent *string `json:"parent"`
	Depth  int     `json:"depth"`
	FunctionReport
}

// Status is the answer of GET /functions/{fn}/status.
type Status struct {
	Function string     `json:"function"`
	Image    string     `json:"image"`
	VMs      []VMStatus `json:"vms"`
}

// Error is the body of every error answer.
type Error struct {
	Message string `json:"error"`
}

// FunctionSpec is the rest of a function's definition (FunctionRequest.Spec),
// read by the workers. Without Readiness a worker only provisions the image
// (it is ready when the image is in its cache); with it, the worker runs the
// function's container and is ready when the container answers.
type FunctionSpec struct {
	// Command overrides the image's entrypoint and cmd.
	Command []string `json:"command,omitempty"`
	// Env adds KEY=VALUE pairs to the image's environment.
	Env []string `json:"env,omitempty"`
	// Memory limits the container's memory, swap included, e.g. "256MiB";
	// empty is DefaultMemory (512MiB). "0" and "unlimited" are refused. See
	// Limits for every limit's bounds.
	Memory string `json:"memory,omitempty"`
	// CPU is the container's CPU time in cores, a number or a string
	// ("0.5", 2) or millicores ("500m"); empty is one core.
	CPU CPU `json:"cpu,omitempty"`
	// Pids caps the container's processes and threads; absent is 1024.
	Pids *int64 `json:"pids,omitempty"`
	// Tmp and Run size the tmpfs at /tmp and /run ("64MiB"); empty is
	// 64MiB and 16MiB, or the memory limit when that is smaller. They may
	// not exceed the memory limit, which their pages count against.
	Tmp string `json:"tmp,omitempty"`
	Run string `json:"run,omitempty"`
	// NoFile caps the open files of each process (RLIMIT_NOFILE); absent
	// is 1024.
	NoFile *int64 `json:"nofile,omitempty"`
	// Readiness is how the platform probes the function.
	Readiness *Readiness `json:"readiness,omitempty"`
	// NoStream turns off background streaming of a lazy image's remaining
	// blocks after the container started: only what it reads is fetched.
	NoStream bool `json:"no_stream,omitempty"`
}

// Readiness is an HTTP readiness check. The worker gives the container a
// port in the environment variable PORT and polls
// http://127.0.0.1:PORT{Path} until it answers 2xx.
type Readiness struct {
	Path string `json:"path"`
}

// EnrollPath is where a VM enrolls (POST, no certificate: the join token
// is in the body). It is under Prefix.
const EnrollPath = "/enroll"

// EnrollRequest is the body of POST /enroll: the VM's id, a certificate
// request for a key that never leaves the VM (PEM), and the join token.
type EnrollRequest struct {
	VM        string `json:"vm"`
	CSR       string `json:"csr"`
	JoinToken string `json:"join_token"`
}

// EnrollResponse answers an enrollment or a renewal: the VM's certificate
// and the CA certificate (both PEM), and when the VM certificate expires.
type EnrollResponse struct {
	Certificate string    `json:"certificate"`
	CA          string    `json:"ca"`
	Expires     time.Time `json:"expires"`
}

// RenewRequest is the body of POST /vms/{vm}/certificate, made with the
// VM's current certificate: a certificate request for the VM's key.
type RenewRequest struct {
	CSR string `json:"csr"`
}

// TokenRequest is the body of POST /tokens: a role ("read" or "admin")
// and an optional lifetime (a Go duration such as "24h"; empty: no expiry).
type TokenRequest struct {
	Role string `json:"role"`
	TTL  string `json:"ttl,omitempty"`
}

// TokenInfo describes a token without its secret.
type TokenInfo struct {
	ID      string     `json:"id"`
	Role    string     `json:"role"`
	Created time.Time  `json:"created"`
	Expires *time.Time `json:"expires,omitempty"`
	Revoked *time.Time `json:"revoked,omitempty"`
}

// NewToken answers POST /tokens and POST /join-token: the token's
// secret, shown this once (the manager keeps only its hash).
type NewToken struct {
	TokenInfo
	Token string `json:"token"`
}

// EventsPath is the live view's Server-Sent Events stream (GET, under
// Prefix): one "snapshot" event per change, at most a few a second.
const EventsPath = "/events"

// Snapshot is one event of the live view's stream: every function's tree
// and VM states, and what the registry sent against what the VMs received.
// It carries no time: an unchanged cluster sends nothing, and the page
// times what it receives.
type Snapshot struct {
	Functions []LiveFunction `json:"functions"`
	// RegistryBytes is what the VMs report having fetched from the
	// registry; ReceivedBytes what they fetched in all.
	RegistryBytes int64 `json:"registry_bytes"`
	ReceivedBytes int64 `json:"received_bytes"`
}

// LiveFunction is one function in a Snapshot.
type LiveFunction struct {
	Function string     `json:"function"`
	Image    string     `json:"image"`
	Tree     Tree       `json:"tree"`
	VMs      []VMStatus `json:"vms"`
}
