// Package manager is faasnet's control plane: the pool of VMs, the function
// trees of each function (one per stripe), placement, failure detection and
// the HTTP API of DESIGN.md section 3.
//
// A function of k >= 2 stripes has k stripe trees over the same VMs
// (ftree.Striped): every VM has a parent in each stripe and children in at
// most one. Its assignments carry every stripe's parent, and Parent, which
// workers that know one tree follow, is stripe 0's: stripe 0's tree alone is
// a balanced tree over all the VMs, so such a worker still fetches the whole
// image once, down one tree.
//
// All state lives in memory behind one mutex and every change is written to a
// store.Store, in an atomic batch with the changes made meanwhile (see
// groupcommit.go), before it is acknowledged. If the store refuses a batch,
// the in-memory state is rebuilt from the store; no worker is told of a
// change before it is stored.
package manager

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/forest"
	"github.com/faasnet/faasnet/ftree"
	"github.com/faasnet/faasnet/internal/logthrottle"
	"github.com/faasnet/faasnet/liveview"
	"github.com/faasnet/faasnet/manager/store"
	"github.com/faasnet/faasnet/placement"
	"github.com/faasnet/faasnet/stripe"
	"github.com/faasnet/faasnet/upstream"
	"github.com/google/go-containerregistry/pkg/name"
)

// Options configure a Manager.
type Options struct {
	// VMTimeout is how long a VM may stay silent before it leaves every
	// tree and the pool. Default 10 s.
	VMTimeout time.Duration
	// Push sends changed assignments to workers at once instead of waiting
	// for their next heartbeat.
	Push bool
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Now is the clock; tests replace it. Default time.Now.
	Now func() time.Time
	// AllowVMNets are ranges VMs may register addresses in although they
	// are link-local or metadata ranges, refused by default (see
	// forbiddenNets).
	AllowVMNets []netip.Prefix
	// Pinner pins function images to manifest digests. Default: a
	// RegistryPinner with the Registry options.
	Pinner Pinner
	// Registry configures the default Pinner's registry access
	// (credentials, plain-HTTP registries, platform).
	Registry []upstream.Option
	// Stripes is the number of stripe trees of a function whose definition
	// names none (see api.FunctionRequest.Stripes), 0 to api.MaxStripes.
	// 0 means 1, the paper's single tree, for callers that predate
	// stripes; the faasnet manager command defaults to api.DefaultStripes.
	Stripes int
	// BlockSize, if positive, is the block every function's VMs are
	// assigned. 0 picks one per function when it is defined, with
	// stripe.BlockFor from the image's size and layers (if the Pinner is
	// an ImageSizer and the reference is a tag) and the pool's size, else
	// stripe.DefaultBlock.
	BlockSize int64
	// Security makes the manager the cluster's CA and has it authorize
	// every call, push over mutual TLS and sign grants. nil: plain HTTP
	// and no authorization, for plaintext benchmarks and old tests only.
	Security *Security
	// Election makes the manager one of several on an etcd prefix: it
	// leads only while it holds the election (see Run), and follows
	// otherwise (see ha.go). nil: always the leader.
	Election *store.Elector
	// SaveClusterFiles, if set, is called after the manager replaced a
	// cluster file in Security.Dir (a rotated join token), to copy it
	// where the other managers get it (etcd).
	SaveClusterFiles func(ctx context.Context) error
}

// Manager holds the control-plane state.
type Manager struct {
	opts    Options
	addrs   addrPolicy
	log     *slog.Logger
	store   store.Store
	metrics *metrics
	pusher  *pusher
	trust   *trust // nil without Options.Security
	live    *liveview.Feed
	// refusalLog keeps one line per refusal reason a second: anyone can
	// cause refusals, and the metric counts them all.
	refusalLog logthrottle.Throttle

	mu       sync.Mutex
	revision uint64 // grows with every change; stored with it, so restarts keep growing
	vms      map[string]*vmState
	fns      map[string]*fnState
	// forest holds the VMs' memberships, fan-outs and the trees; every
	// change to a tree goes through it.
	forest *forest.Forest
	// assigned holds, by VM, every image the manager assigned it in this
	// manager's life: the only images placement believes a VM caches.
	assigned map[string]map[string]bool

	writes writes // the changes being stored (groupcommit.go)
	follow follow // a follower's record of the stored nodes (follow.go)

	ha haState // the manager's place in the election (ha.go)
}

type vmState struct {
	rec      store.VM
	lastSeen time.Time
}

type fnState struct {
	rec     store.Function
	tree    *ftree.Striped    // the forest's trees of this function, to read
	gen     map[string]uint64 // each member VM's assignment generation
	reports map[string]api.FunctionReport
	// stored holds, for a function of several stripes, each member's node
	// as the store has it: a change writes the nodes that differ (see
	// txn.flushStripes). nil for one tree, whose nodes are written as they
	// move.
	stored map[string]store.Node
}

// New loads the state from st and returns a Manager serving it. Every VM's
// heartbeat clock starts now: a restart never drops a VM before its timeout
// has passed again.
func New(ctx context.Context, st store.Store, opts Options) (*Manager, error) {
	if opts.VMTimeout <= 0 {
		opts.VMTimeout = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Stripes < 0 || opts.Stripes > api.MaxStripes {
		return nil, fmt.Errorf("manager: %d stripes, want 1 to %d (0: 1)", opts.Stripes, api.MaxStripes)
	}
	if opts.BlockSize < 0 {
		return nil, fmt.Errorf("manager: negative block size %d", opts.BlockSize)
	}
	if opts.Pinner == nil {
		opts.Pinner = RegistryPinner{upstream.New(opts.Registry...)}
	}
	m := &Manager{opts: opts, addrs: addrPolicy{allow: opts.AllowVMNets}, log: opts.Logger, store: st, metrics: newMetrics(),
		assigned: map[string]map[string]bool{}}
	m.pusher = newPusher(m)
	m.live = &liveview.Feed{Build: func() any { return m.Snapshot() }}
	s, err := m.load(ctx)
	if err != nil {
		return nil, err
	}
	if opts.Security != nil {
		if err := m.initTrust(ctx, s); err != nil {
			return nil, err
		}
	}
	if m.revision == 0 {
		// A new store, or one written before revisions were stored. The
		// manager that wrote the latter started its revisions at the
		// wall clock in nanoseconds and counted up by one per change, so
		// the clock now is above anything it handed out (unless the clock
		// stepped back across this very upgrade). From here on only the
		// stored counter counts, whatever the clock does; it is stored now
		// because heartbeats hand it out before any change.
		m.revision = uint64(max(opts.Now().UnixNano(), 1))
		if err := st.Apply(ctx, store.Batch{Revision: m.revision}); err != nil {
			return nil, fmt.Errorf("storing the first assignments revision: %w", err)
		}
	}
	m.metrics.collectFrom(m)
	m.initHA()
	return m, nil
}

// load replaces the in-memory state of the pool and the trees with the
// store's, and returns what it loaded. The security state is not reloaded:
// it changes only after the store took the change (txn.onCommit).
func (m *Manager) load(ctx context.Context) (store.State, error) {
	s, err := m.store.Load(ctx)
	if err != nil {
		return s, fmt.Errorf("loading manager state: %w", err)
	}
	return s, m.loadState(s)
}

// loadState replaces the in-memory state of the pool and the trees with s.
func (m *Manager) loadState(s store.State) error {
	now := m.opts.Now()
	// After a failed write the counter may be ahead of the store; it
	// never goes back.
	m.revision = max(m.revision, s.Revision)
	m.vms = make(map[string]*vmState, len(s.VMs))
	m.fns = make(map[string]*fnState, len(s.Functions))
	m.forest = forest.New()
	for _, v := range s.VMs {
		m.vms[v.Name] = &vmState{rec: v, lastSeen: now}
		m.forest.SetVM(v.Name, v.Capacity)
	}
	links := map[string][]ftree.Link{}
	striped := map[string][]store.Node{}
	for _, f := range s.Functions {
		if f.BlockSize == 0 {
			// Stored before block sizes were: what the workers use.
			f.BlockSize = stripe.DefaultBlock
		}
		m.fns[f.Name] = &fnState{rec: f, gen: map[string]uint64{}, reports: map[string]api.FunctionReport{}}
	}
	m.follow.nodes = nil
	if m.opts.Election != nil {
		m.follow.nodes = map[string]map[string]store.Node{}
	}
	for _, n := range s.Nodes {
		m.follow.node(n)
		f, ok := m.fns[n.Function]
		_, vok := m.vms[n.VM]
		if !ok || !vok {
			return fmt.Errorf("loading manager state: node %s/%s names an unknown function or VM", n.Function, n.VM)
		}
		if f.rec.Stripes >= 2 {
			striped[n.Function] = append(striped[n.Function], n)
		} else {
			links[n.Function] = append(links[n.Function], ftree.Link{VM: n.VM, Parent: n.Parent, Slot: n.Slot})
		}
		f.gen[n.VM] = n.Generation
		m.recordAssigned(n.VM, f.rec.Image)
	}
	for name, f := range m.fns {
		if err := m.restoreTrees(f, links[name], striped[name]); err != nil {
			return err
		}
		f.tree = m.forest.Striped(name)
	}
	return nil
}

// restoreTrees gives f's function its trees in the forest: from links for
// one tree, from the nodes' stripe positions for several.
func (m *Manager) restoreTrees(f *fnState, links []ftree.Link, nodes []store.Node) error {
	name, k := f.rec.Name, f.rec.Stripes
	if k < 2 {
		if err := m.forest.RestoreFunction(name, links); err != nil {
			return fmt.Errorf("loading the tree of function %s: %w", name, err)
		}
		return nil
	}
	l, err := store.Layout(k, nodes)
	if err != nil {
		return fmt.Errorf("loading the %d stripe trees of function %s: %w", k, name, err)
	}
	if err := m.forest.RestoreStripedFunction(name, l); err != nil {
		return fmt.Errorf("loading the %d stripe trees of function %s: %w", k, name, err)
	}
	f.stored = make(map[string]store.Node, len(nodes))
	for _, n := range nodes {
		f.stored[n.VM] = n
	}
	return nil
}

// recordAssigned notes that vm was assigned image.
func (m *Manager) recordAssigned(vm, image string) {
	if m.assigned[vm] == nil {
		m.assigned[vm] = map[string]bool{}
	}
	m.assigned[vm][image] = true
}

// Close stops background work. It does not close the store.
func (m *Manager) Close() { m.pusher.stop() }

// maintainEvery is how often Run renews the manager's certificate when due
// and forgets expired VM certificates and grants.
const maintainEvery = time.Minute

// runLoops detects failed VMs, pushes assignments and keeps the security
// state until ctx is done.
func (m *Manager) runLoops(ctx context.Context) {
	go m.pusher.run(ctx)
	period := m.opts.VMTimeout / 4
	if period > time.Second {
		period = time.Second
	}
	t := time.NewTicker(period)
	defer t.Stop()
	maint := time.NewTicker(maintainEvery)
	defer maint.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := m.Sweep(ctx); err != nil {
				m.log.Error("removing silent VMs", "err", err)
			}
		case <-maint.C:
			if err := m.maintainTrust(ctx); err != nil {
				m.log.Error("maintaining certificates", "err", err)
			}
		}
	}
}

// txn gathers one operation's changes: the batch to store and the VMs whose
// assignments changed (to push to).
type txn struct {
	m       *Manager
	batch   store.Batch
	touched map[string]bool
	fnDirty map[string]bool
	// relayout names the functions of several stripes whose layout the
	// operation changed, with the VMs whose nodes may differ (nil: any of
	// them); their nodes are written at the end.
	relayout map[string]map[string]bool
	after    []func() // run under the lock once the batch is stored
}

// onCommit runs f once the batch is stored, still under the lock: state
// that is not reloaded from the store after a failed write (tokens,
// certificates) changes only then.
func (tx *txn) onCommit(f func()) { tx.after = append(tx.after, f) }

// commit runs op under the lock and stores what it changed, with the
// changes of other operations made meanwhile (see groupcommit.go); it
// returns once the change is stored. op must validate everything before
// changing anything; if storing fails, the state is reloaded.
func (m *Manager) commit(ctx context.Context, op string, fn func(tx *txn) error) error {
	m.mu.Lock()
	tx := &txn{m: m, touched: map[string]bool{}, fnDirty: map[string]bool{}, relayout: map[string]map[string]bool{}}
	err := fn(tx)
	var g *group
	if err == nil {
		tx.flushStripes()
		for name := range tx.fnDirty {
			if f, ok := m.fns[name]; ok {
				tx.batch.PutFunctions = append(tx.batch.PutFunctions, f.rec)
			}
		}
		if !tx.batch.Empty() || len(tx.touched) > 0 {
			m.revision++
			tx.batch.Revision = m.revision
		}
		tx.recordAssigned()
		if tx.batch.Empty() {
			tx.runAfter()
		} else {
			g = m.join(tx.batch, tx.after)
		}
	}
	m.mu.Unlock()
	if g != nil {
		<-g.done
		if g.err != nil {
			err = &Error{503, fmt.Sprintf("storing the change (%s): %v", op, g.err)}
		}
	}
	m.metrics.op(op, err)
	if err == nil && m.opts.Push {
		for vm := range tx.touched {
			m.pusher.enqueue(vm)
		}
	}
	return err
}

// runAfter runs the onCommit functions.
func (tx *txn) runAfter() {
	for _, f := range tx.after {
		f()
	}
}

// recordAssigned notes the images the touched VMs are now assigned. (A
// failed write reloads the state, but not this record: placement only
// prefers the VMs it names.)
func (tx *txn) recordAssigned() {
	for vm := range tx.touched {
		for _, fn := range tx.m.functionsOf(vm) {
			tx.m.recordAssigned(vm, tx.m.fns[fn].rec.Image)
		}
	}
}

// bump gives vm a new generation in f and records its node (for several
// stripes, at the end: see flushStripes).
func (tx *txn) bump(f *fnState, vm string) {
	f.rec.Generation++
	f.gen[vm] = f.rec.Generation
	tx.fnDirty[f.rec.Name] = true
	tx.touched[vm] = true
	if f.tree.Stripes() > 1 {
		tx.placed(f.rec.Name, vm)
		return
	}
	n, _ := f.tree.Node(vm, 0)
	tx.batch.PutNodes = append(tx.batch.PutNodes, store.Node{
		Function: f.rec.Name, VM: vm, Parent: n.Parent, Slot: n.Slot, Generation: f.gen[vm],
	})
}

// apply records a tree change: one new generation for each VM that moved in
// any stripe. (The forest has brought fan-outs and tree weights up to
// date.)
func (tx *txn) apply(f *fnState, ch ftree.StripedChange) {
	seen := make(map[string]bool, len(ch.Moved))
	for _, mv := range ch.Moved {
		if !seen[mv.VM] {
			seen[mv.VM] = true
			tx.bump(f, mv.VM)
		}
	}
	if f.tree.Stripes() > 1 {
		tx.placed(f.rec.Name, ch.Placed...)
	}
	tx.m.metrics.parentChanges.Add(float64(len(ch.Moved)))
}

// placed notes that the nodes of vms in fn's trees of several stripes may
// have changed, unless the whole function's are to be written anyway.
func (tx *txn) placed(fn string, vms ...string) {
	set, ok := tx.relayout[fn]
	if ok && set == nil {
		return
	}
	if set == nil {
		set = map[string]bool{}
		tx.relayout[fn] = set
	}
	for _, vm := range vms {
		set[vm] = true
	}
}

// insert adds vm to f's trees.
func (tx *txn) insert(f *fnState, vm string) error {
	ch, err := tx.m.forest.InsertStriped(f.rec.Name, vm)
	if err != nil {
		return err
	}
	tx.apply(f, ch)
	return nil
}

// remove takes vm out of f's trees.
func (tx *txn) remove(f *fnState, vm string) error {
	ch, err := tx.m.forest.RemoveStriped(f.rec.Name, vm)
	if err != nil {
		return err
	}
	if len(ch.Moved) > 0 { // a VM was moved into vm's place
		tx.m.metrics.promotions.Inc()
	}
	delete(f.gen, vm)
	delete(f.reports, vm)
	delete(f.stored, vm)
	tx.touched[vm] = true
	tx.batch.DeleteNodes = append(tx.batch.DeleteNodes, store.NodeKey{Function: f.rec.Name, VM: vm})
	tx.apply(f, ch)
	return nil
}

// RegisterVM registers vm or refreshes it. A nil capacity keeps the old
// value (default api.DefaultCapacity).
func (m *Manager) RegisterVM(ctx context.Context, vm string, req api.RegisterRequest) (api.VM, error) {
	var out api.VM
	err := m.commit(ctx, "register", func(tx *txn) error {
		if err := api.ValidName("VM", vm); err != nil {
			return badRequest("%v", err)
		}
		if err := m.addrs.checkVMAddr(req.Addr); err != nil {
			return badRequest("%v", err)
		}
		if req.Capacity != nil && (req.Capacity.Functions < 1 || req.Capacity.Functions > 10000) {
			return badRequest("capacity.functions must be between 1 and 10000, not %d", req.Capacity.Functions)
		}
		v, ok := m.vms[vm]
		if !ok {
			v = &vmState{rec: store.VM{Name: vm, Capacity: api.DefaultCapacity}}
		}
		if hosted := m.forest.Load(vm); req.Capacity != nil && req.Capacity.Functions < hosted {
			return conflict("VM %s hosts %d functions, more than the capacity %d it asks for", vm, hosted, req.Capacity.Functions)
		}
		rec := v.rec
		rec.Addr = req.Addr
		if req.Capacity != nil {
			rec.Capacity = req.Capacity.Functions
		}
		if ok && rec.Addr != v.rec.Addr {
			// The VM's children, in every stripe, must dial the new address.
			for _, fn := range m.functionsOf(vm) {
				f := m.fns[fn]
				for _, c := range childrenOf(f.tree, vm) {
					tx.bump(f, c)
				}
			}
		}
		if !ok || !equalVM(rec, v.rec) {
			tx.batch.PutVMs = append(tx.batch.PutVMs, rec)
		}
		m.forest.SetVM(vm, rec.Capacity)
		v.rec = rec
		v.lastSeen = m.opts.Now()
		m.vms[vm] = v
		out = m.vmInfo(v)
		return nil
	})
	return out, err
}

func equalVM(a, b store.VM) bool {
	return a.Name == b.Name && a.Addr == b.Addr && a.Capacity == b.Capacity && slices.Equal(a.Images, b.Images)
}

func (m *Manager) vmInfo(v *vmState) api.VM {
	fns := m.functionsOf(v.rec.Name)
	if fns == nil {
		fns = []string{}
	}
	return api.VM{VM: v.rec.Name, Addr: v.rec.Addr, Capacity: api.Capacity{Functions: v.rec.Capacity}, Functions: fns, Fanout: m.forest.Fanout(v.rec.Name)}
}

// functionsOf returns the functions whose tree holds vm, sorted.
func (m *Manager) functionsOf(vm string) []string {
	v, _ := m.forest.VM(vm)
	return v.Functions
}

// Heartbeat records that vm is alive and returns its desired state, once
// the changes it reflects are stored. It writes nothing: liveness is kept
// in memory only.
func (m *Manager) Heartbeat(vm string) (api.Assignments, error) {
	m.metrics.heartbeats.Inc()
	m.mu.Lock()
	v, ok := m.vms[vm]
	if !ok {
		m.mu.Unlock()
		return api.Assignments{}, notFound("VM %q is not registered (register with PUT %s/vms/%s)", vm, api.Prefix, vm)
	}
	v.lastSeen = m.opts.Now()
	out, g := m.assignments(v), m.writes.pending()
	m.mu.Unlock()
	if err := durable(g); err != nil {
		return api.Assignments{}, err
	}
	return out, nil
}

// Assignments returns vm's desired state without touching its clock, once
// the changes it reflects are stored.
func (m *Manager) Assignments(vm string) (api.Assignments, string, error) {
	m.mu.Lock()
	v, ok := m.vms[vm]
	if !ok {
		m.mu.Unlock()
		return api.Assignments{}, "", notFound("VM %q is not registered", vm)
	}
	out, addr, g := m.assignments(v), v.rec.Addr, m.writes.pending()
	m.mu.Unlock()
	if err := durable(g); err != nil {
		return api.Assignments{}, "", err
	}
	return out, addr, nil
}

// assignments returns v's desired state: the only answer that carries
// function specs unredacted, and grants. m.mu is held.
func (m *Manager) assignments(v *vmState) api.Assignments {
	out := api.Assignments{Assignments: []api.Assignment{}, Revision: m.revision}
	now := m.opts.Now()
	for _, fn := range m.functionsOf(v.rec.Name) {
		f := m.fns[fn]
		a := api.Assignment{Function: fn, Image: f.rec.Image, Digest: f.rec.Digest, Generation: f.gen[v.rec.Name], Spec: f.rec.Spec,
			BlockSize: f.rec.BlockSize}
		ps, _ := f.tree.Parents(v.rec.Name)
		a.Parents = make([]*api.Peer, len(ps))
		for s, p := range ps {
			if p != "" {
				a.Parents[s] = &api.Peer{VM: p, Addr: m.vms[p].rec.Addr}
			}
		}
		if len(a.Parents) > 0 {
			a.Parent = a.Parents[0]
		}
		if m.trust != nil && f.rec.Digest != "" {
			a.Grant = m.grantFor(v.rec.Name, fn, f.rec.Digest, now)
		}
		out.Assignments = append(out.Assignments, a)
	}
	if m.trust != nil {
		out.Revoked = m.trust.revokedList
	}
	sort.Slice(out.Assignments, func(i, j int) bool { return out.Assignments[i].Function < out.Assignments[j].Function })
	return out
}

// LeaveVM removes vm from every tree and the pool. With Security it also
// revokes every certificate issued to vm (whether or not vm is registered):
// a VM that leaves, or is removed by an operator, must enroll again.
func (m *Manager) LeaveVM(ctx context.Context, vm string) error {
	return m.commit(ctx, "leave", func(tx *txn) error {
		_, registered := m.vms[vm]
		revoked := 0
		if m.trust != nil {
			revoked = tx.revokeVM(vm)
		}
		if !registered {
			if revoked > 0 {
				return nil
			}
			return notFound("VM %q is not registered and holds no certificate to revoke", vm)
		}
		return tx.leave(vm)
	})
}

func (tx *txn) leave(vm string) error {
	for _, fn := range tx.m.functionsOf(vm) {
		if err := tx.remove(tx.m.fns[fn], vm); err != nil {
			return err
		}
	}
	if err := tx.m.forest.RemoveVM(vm); err != nil {
		return err
	}
	delete(tx.m.vms, vm)
	delete(tx.touched, vm)
	tx.batch.DeleteVMs = append(tx.batch.DeleteVMs, vm)
	return nil
}

// Sweep removes every VM silent for longer than the timeout.
func (m *Manager) Sweep(ctx context.Context) error {
	return m.commit(ctx, "sweep", func(tx *txn) error {
		now := m.opts.Now()
		var dead []string
		for name, v := range m.vms {
			if now.Sub(v.lastSeen) > m.opts.VMTimeout {
				dead = append(dead, name)
			}
		}
		sort.Strings(dead)
		for _, vm := range dead {
			m.log.Warn("VM missed its heartbeats: removing it", "vm", vm, "silent", now.Sub(m.vms[vm].lastSeen).Round(time.Millisecond))
			m.metrics.missed.Inc()
			if err := tx.leave(vm); err != nil {
				return err
			}
		}
		return nil
	})
}

// maxImageRef bounds an image reference.
const maxImageRef = 1024

func validImage(image string) error {
	if image == "" {
		return badRequest("image is empty")
	}
	if len(image) > maxImageRef {
		return badRequest("image reference is %d bytes long, the limit is %d", len(image), maxImageRef)
	}
	if _, err := name.ParseReference(image, name.WeakValidation); err != nil {
		return badRequest("image %q: %v", image, err)
	}
	return nil
}

// PutFunction defines fn or changes its image, spec or stripes, and pins the
// image to the digest of its manifest (see pin). A change of image or
// digest gives every member a new generation so that the workers refetch:
// defining a function again with the same tag takes up where the tag
// moved. A change of stripes rebuilds the function's trees (see rebuild).
func (m *Manager) PutFunction(ctx context.Context, fn string, req api.FunctionRequest) (api.Function, error) {
	var out api.Function
	pinned, err := m.checkFunction(ctx, fn, req)
	if err != nil {
		m.metrics.op("function", err)
		return out, err
	}
	dg := pinned.Digest
	err = m.commit(ctx, "function", func(tx *txn) error {
		f, ok := m.fns[fn]
		k := req.Stripes
		if !ok {
			if k == 0 {
				k = max(m.opts.Stripes, 1)
			}
			if err := m.forest.AddStripedFunction(fn, k); err != nil {
				return err
			}
			f = &fnState{rec: store.Function{Name: fn, Stripes: k}, tree: m.forest.Striped(fn), gen: map[string]uint64{}, reports: map[string]api.FunctionReport{}}
			if k > 1 {
				f.stored = map[string]store.Node{}
			}
			m.fns[fn] = f
		}
		rebuilt := ok && k != 0 && k != f.tree.Stripes()
		if rebuilt {
			if err := tx.rebuild(ctx, f, k); err != nil {
				return err
			}
		}
		changed := !ok || rebuilt || f.rec.Image != req.Image || f.rec.Digest != dg || string(f.rec.Spec) != string(req.Spec)
		if !ok || rebuilt || f.rec.Digest != dg {
			// Only with new content or new trees: the VMs of one
			// digest must keep cutting its blobs alike.
			f.rec.BlockSize = m.blockSize(pinned, f.tree.Stripes())
		}
		f.rec.Image, f.rec.Digest, f.rec.Spec = req.Image, dg, req.Spec
		if changed {
			tx.fnDirty[fn] = true
			if ok && !rebuilt {
				for _, n := range f.tree.Nodes(0) {
					tx.bump(f, n.VM)
				}
			}
		}
		out = m.function(f)
		return nil
	})
	return out, err
}

// function describes f, its env values redacted (see redactEnv).
func (m *Manager) function(f *fnState) api.Function {
	return api.Function{Function: f.rec.Name, Image: f.rec.Image, Digest: f.rec.Digest, Spec: redactEnv(f.rec.Spec), VMs: f.tree.Len(),
		Stripes: f.tree.Stripes(), BlockSize: f.rec.BlockSize}
}

// blockSize returns the block for a function of k stripes of the image p
// describes (see Options.BlockSize). The pool's size stands for the
// function's: the block is chosen once per digest, and no tree of the
// function grows beyond the pool.
func (m *Manager) blockSize(p Pinned, k int) int64 {
	switch {
	case m.opts.BlockSize > 0:
		return m.opts.BlockSize
	case p.Size <= 0:
		return stripe.DefaultBlock
	}
	return stripe.BlockFor(p.Size, p.Layers, max(len(m.vms), 2), k)
}

// rebuild gives f's function new trees of k stripes over the same VMs,
// stripe 0's root first and the rest breadth first, so that the VMs near
// the old root, likeliest to hold the image, stay near the new roots.
// Every member gets a new generation and has its node written anew. Once
// the forest has changed, a failure (which validation makes impossible)
// reloads the state from the store.
func (tx *txn) rebuild(ctx context.Context, f *fnState, k int) error {
	m, name := tx.m, f.rec.Name
	old := f.tree.Nodes(0)
	if _, err := m.forest.RemoveFunction(name); err != nil {
		return err
	}
	fail := func(err error) error {
		if _, lerr := m.load(context.WithoutCancel(ctx)); lerr != nil {
			m.log.Error("reloading state after a failed rebuild", "function", name, "err", lerr)
		}
		return &Error{503, fmt.Sprintf("rebuilding the trees of %s with %d stripes: %v", name, k, err)}
	}
	if err := m.forest.AddStripedFunction(name, k); err != nil {
		return fail(err)
	}
	f.tree = m.forest.Striped(name)
	f.rec.Stripes = k
	f.stored = nil
	if k > 1 {
		f.stored = map[string]store.Node{}
		tx.relayout[name] = nil // every node anew
	}
	for _, n := range old {
		if _, err := m.forest.InsertStriped(name, n.VM); err != nil {
			return fail(err)
		}
	}
	for _, n := range old {
		tx.bump(f, n.VM)
	}
	return nil
}

// flushStripes writes, for every function of several stripes that the
// operation changed, the nodes that differ from what the store has: the
// VMs that moved, and those whose positions changed under a parent that
// did not (ftree.StripedChange.Placed). Only those are looked at, so that a
// step costs the same in a tree of 10,000 VMs as in one of 10; a rebuilt
// function has every node looked at.
func (tx *txn) flushStripes() {
	for _, name := range slices.Sorted(maps.Keys(tx.relayout)) {
		f, ok := tx.m.fns[name]
		if !ok || f.tree.Stripes() < 2 {
			continue
		}
		vms := slices.Sorted(maps.Keys(tx.relayout[name]))
		if tx.relayout[name] == nil {
			vms = vms[:0]
			for _, n := range f.tree.Nodes(0) {
				vms = append(vms, n.VM)
			}
			slices.Sort(vms)
		}
		for _, vm := range vms {
			pos, home, ok := f.tree.Placement(vm)
			if !ok {
				continue // removed by the operation
			}
			n0, _ := f.tree.Node(vm, 0)
			rec := store.Node{Function: name, VM: vm, Parent: n0.Parent, Slot: n0.Slot, Generation: f.gen[vm], Positions: pos, Home: home}
			if old, ok := f.stored[vm]; ok && sameNode(old, rec) {
				continue
			}
			f.stored[vm] = rec
			tx.batch.PutNodes = append(tx.batch.PutNodes, rec)
		}
	}
}

func sameNode(a, b store.Node) bool {
	return a.Function == b.Function && a.VM == b.VM && a.Parent == b.Parent && a.Slot == b.Slot &&
		a.Generation == b.Generation && slices.Equal(a.Positions, b.Positions) && a.Home == b.Home
}

// childrenOf returns vm's children in every stripe of t, each once.
func childrenOf(t *ftree.Striped, vm string) []string {
	var out []string
	for s := range t.Stripes() {
		for _, c := range t.Children(vm, s) {
			if !slices.Contains(out, c) {
				out = append(out, c)
			}
		}
	}
	return out
}

// checkFunction validates a definition and pins its image, outside the lock:
// pinning may wait for the registry.
func (m *Manager) checkFunction(ctx context.Context, fn string, req api.FunctionRequest) (Pinned, error) {
	if err := api.ValidName("function", fn); err != nil {
		return Pinned{}, badRequest("%v", err)
	}
	if req.Stripes < 0 || req.Stripes > api.MaxStripes {
		return Pinned{}, badRequest("stripes must be between 1 and %d (0 or absent: the manager's default for a new function, the current number for a defined one), not %d", api.MaxStripes, req.Stripes)
	}
	if err := validImage(req.Image); err != nil {
		return Pinned{}, err
	}
	if err := validSpec(req.Spec); err != nil {
		return Pinned{}, err
	}
	return m.pinSized(ctx, req.Image)
}

// validSpec checks a function spec as the workers will read it.
func validSpec(raw json.RawMessage) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var s api.FunctionSpec
	if err := dec.Decode(&s); err != nil {
		return badRequest("spec: %v", err)
	}
	if _, err := s.Limits(); err != nil {
		return badRequest("%v", err)
	}
	if s.Readiness != nil && !strings.HasPrefix(s.Readiness.Path, "/") {
		return badRequest("spec.readiness.path %q must start with /", s.Readiness.Path)
	}
	for i, a := range s.Command {
		if i == 0 && a == "" {
			return badRequest("spec.command: the program name is empty")
		}
	}
	return nil
}

// DeleteFunction removes fn and its tree.
func (m *Manager) DeleteFunction(ctx context.Context, fn string) error {
	return m.commit(ctx, "delete-function", func(tx *txn) error {
		if _, ok := m.fns[fn]; !ok {
			return notFound("function %q is not defined", fn)
		}
		members, err := m.forest.RemoveFunction(fn)
		if err != nil {
			return err
		}
		for _, vm := range members {
			tx.touched[vm] = true
		}
		delete(m.fns, fn)
		tx.batch.DeleteFunctions = append(tx.batch.DeleteFunctions, fn)
		return nil
	})
}

// maxScale bounds one scale request.
const maxScale = 100000

// Scale adds VMs to fn's tree: the named ones, or count VMs the manager
// picks. All or nothing.
func (m *Manager) Scale(ctx context.Context, fn string, req api.ScaleRequest) (api.ScaleResponse, error) {
	out := api.ScaleResponse{Function: fn, Added: []api.Placement{}}
	err := m.commit(ctx, "scale", func(tx *txn) error {
		f, ok := m.fns[fn]
		if !ok {
			return notFound("function %q is not defined (define it with PUT %s/functions/%s)", fn, api.Prefix, fn)
		}
		vms, err := m.pick(f, req)
		if err != nil {
			return err
		}
		for _, vm := range vms {
			if err := tx.insert(f, vm); err != nil {
				return err
			}
		}
		for _, vm := range vms {
			out.Added = append(out.Added, m.placement(f, vm))
		}
		return nil
	})
	return out, err
}

func (m *Manager) placement(f *fnState, vm string) api.Placement {
	n, _ := f.tree.Node(vm, 0)
	p := api.Placement{VM: vm, Addr: m.vms[vm].rec.Addr, Depth: n.Depth}
	if n.Parent != "" {
		p.Parent = &n.Parent
	}
	ps, _ := f.tree.Parents(vm)
	p.Parents = make([]*string, len(ps))
	for s := range ps {
		if ps[s] != "" {
			p.Parents[s] = &ps[s]
		}
	}
	return p
}

// pick validates a scale request and returns the VMs to add, in order.
func (m *Manager) pick(f *fnState, req api.ScaleRequest) ([]string, error) {
	switch {
	case len(req.VMs) > 0 && req.Count != 0:
		return nil, badRequest("give either vms or count, not both")
	case len(req.VMs) == 0 && req.Count == 0:
		return nil, badRequest("give vms (a list of VM names) or count (a positive number)")
	case req.Count < 0 || req.Count > maxScale:
		return nil, badRequest("count must be between 1 and %d, not %d", maxScale, req.Count)
	case len(req.VMs) > maxScale:
		return nil, badRequest("at most %d VMs in one request, not %d", maxScale, len(req.VMs))
	}
	if req.Count > 0 {
		return m.choose(f, req.Count)
	}
	seen := make(map[string]bool, len(req.VMs))
	for _, vm := range req.VMs {
		if err := api.ValidName("VM", vm); err != nil {
			return nil, badRequest("%v", err)
		}
		if seen[vm] {
			return nil, badRequest("VM %s is named twice", vm)
		}
		seen[vm] = true
		v, ok := m.vms[vm]
		if !ok {
			return nil, notFound("VM %q is not registered", vm)
		}
		if m.forest.Hosts(vm, f.rec.Name) {
			return nil, conflict("VM %s is already in the tree of %s", vm, f.rec.Name)
		}
		if hosted := m.forest.Load(vm); hosted >= v.rec.Capacity {
			return nil, conflict("VM %s already hosts %d functions, its capacity", vm, hosted)
		}
	}
	return req.VMs, nil
}

// choose picks count free VMs for f (see package placement).
func (m *Manager) choose(f *fnState, count int) ([]string, error) {
	cs := m.forest.AppendCandidates(nil, f.rec.Name, func(vm string) bool {
		return slices.Contains(m.vms[vm].rec.Images, f.rec.Image)
	})
	out := placement.Choose(cs, count)
	if out == nil {
		return nil, conflict("only %d VMs in the pool can take function %s, asked for %d", len(cs), f.rec.Name, count)
	}
	return out, nil
}

// Release removes vm from fn's tree (scale in).
func (m *Manager) Release(ctx context.Context, fn, vm string) error {
	return m.commit(ctx, "release", func(tx *txn) error {
		f, ok := m.fns[fn]
		if !ok {
			return notFound("function %q is not defined", fn)
		}
		if !f.tree.Contains(vm) {
			return notFound("VM %q is not in the tree of %s", vm, fn)
		}
		return tx.remove(f, vm)
	})
}

// Tree returns fn's trees: every stripe's, and stripe 0's at the top.
func (m *Manager) Tree(fn string) (api.Tree, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f, ok := m.fns[fn]
	if !ok {
		return api.Tree{}, notFound("function %q is not defined", fn)
	}
	out := api.Tree{Function: fn}
	for s := range f.tree.Stripes() {
		out.Stripes = append(out.Stripes, m.stripeTree(f, s))
	}
	out.Root, out.Height, out.Nodes = out.Stripes[0].Root, out.Stripes[0].Height, out.Stripes[0].Nodes
	return out, nil
}

// stripeTree returns stripe s of f's trees.
func (m *Manager) stripeTree(f *fnState, s int) api.StripeTree {
	out := api.StripeTree{Stripe: s, Height: f.tree.Height(s), Nodes: []api.TreeNode{}}
	if r := f.tree.Root(s); r != "" {
		out.Root = &r
	}
	for _, n := range f.tree.Nodes(s) {
		tn := api.TreeNode{VM: n.VM, Addr: m.vms[n.VM].rec.Addr, Children: n.Children, Depth: n.Depth, Fanout: m.forest.Fanout(n.VM)}
		if tn.Children == nil {
			tn.Children = []string{}
		}
		if n.Parent != "" {
			p := n.Parent
			tn.Parent = &p
		}
		out.Nodes = append(out.Nodes, tn)
	}
	return out
}

// Status returns what every VM of fn last reported.
func (m *Manager) Status(fn string) (api.Status, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f, ok := m.fns[fn]
	if !ok {
		return api.Status{}, notFound("function %q is not defined", fn)
	}
	out := api.Status{Function: fn, Image: f.rec.Image, VMs: []api.VMStatus{}}
	for _, n := range f.tree.Nodes(0) {
		s := api.VMStatus{VM: n.VM, Depth: n.Depth}
		if n.Parent != "" {
			p := n.Parent
			s.Parent = &p
		}
		r, ok := f.reports[n.VM]
		if !ok || r.Generation < f.gen[n.VM] && r.State != api.StateReady {
			// Nothing reported for this assignment yet.
			r = api.FunctionReport{Function: fn, Image: f.rec.Image, Generation: f.gen[n.VM], State: api.StateAssigned}
		}
		s.FunctionReport = r
		out.VMs = append(out.VMs, s)
	}
	return out, nil
}

// maxReportedImages bounds the image list of a status report.
const maxReportedImages = 256

// ReportStatus records vm's report. Reports for functions the VM no longer
// hosts are stale and ignored.
func (m *Manager) ReportStatus(ctx context.Context, vm string, r api.StatusReport) error {
	if len(r.Images) > maxReportedImages {
		return badRequest("at most %d images in a report, not %d", maxReportedImages, len(r.Images))
	}
	for _, fr := range r.Functions {
		switch fr.State {
		case api.StateAssigned, api.StateFetching, api.StateReady, api.StateFailed:
		default:
			return badRequest("function %q: state %q is not one of assigned, fetching, ready, failed", fr.Function, fr.State)
		}
	}
	for _, img := range r.Images {
		if len(img) > maxImageRef || img == "" {
			return badRequest("image reference %q is empty or too long", img)
		}
	}
	return m.commit(ctx, "status", func(tx *txn) error {
		v, ok := m.vms[vm]
		if !ok {
			return notFound("VM %q is not registered", vm)
		}
		v.lastSeen = m.opts.Now()
		for _, fr := range r.Functions {
			if f, ok := m.fns[fr.Function]; ok && m.forest.Hosts(vm, fr.Function) {
				f.reports[vm] = fr
			}
		}
		images := m.trustedImages(vm, r.Images)
		if r.Images != nil && !slices.Equal(images, v.rec.Images) {
			v.rec.Images = images
			tx.batch.PutVMs = append(tx.batch.PutVMs, v.rec)
		}
		return nil
	})
}

// trustedImages returns, sorted and without duplicates, the images of a
// VM's report that the manager assigned to it: a VM may not make itself the
// preferred root of an image it was never given (a rogue VM would then serve
// the next scale-out). The rest are counted and logged. m.mu is held.
func (m *Manager) trustedImages(vm string, claimed []string) []string {
	if claimed == nil {
		return nil
	}
	out := []string{}
	var ignored []string
	for _, img := range claimed {
		if m.assigned[vm][img] {
			out = append(out, img)
		} else {
			ignored = append(ignored, img)
		}
	}
	if len(ignored) > 0 {
		m.metrics.claimsIgnored.Add(float64(len(ignored)))
		m.log.Warn("ignored images a VM claims to cache but was never assigned", "vm", vm, "count", len(ignored), "first", ignored[0])
	}
	sort.Strings(out)
	return slices.Compact(out)
}

// VMs lists the registered VMs.
func (m *Manager) VMs() []api.VM {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]api.VM, 0, len(m.vms))
	for _, v := range m.vms {
		out = append(out, m.vmInfo(v))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].VM < out[j].VM })
	return out
}

// Functions lists the defined functions, their env values redacted (see
// redactEnv).
func (m *Manager) Functions() []api.Function {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]api.Function, 0, len(m.fns))
	for _, f := range m.fns {
		out = append(out, m.function(f))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Function < out[j].Function })
	return out
}
