package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/blobcache"
	"github.com/faasnet/faasnet/digest"
	"github.com/google/go-containerregistry/pkg/name"
)

// function is one assignment being provisioned. Its fields are guarded by
// Worker.mu.
type function struct {
	name          string
	image         string          // a.Image, fixed for f's lifetime (a new image or digest restarts)
	spec          json.RawMessage // a.Spec, fixed likewise
	started       time.Time
	a             api.Assignment
	cancel        context.CancelFunc
	done          chan struct{}
	parentChanged chan struct{} // closed and replaced when a parent in any stripe changes

	state      string
	err        string
	phases     map[string]time.Time
	blobs      []string // the image's digests: manifest, config, layers
	imageBytes int64

	bytesBeforeReady int64
	address          string // where its container answers, once ready
}

// heartbeatLoop registers, heartbeats and reconciles until ctx is done.
func (w *Worker) heartbeatLoop(ctx context.Context) {
	t := time.NewTicker(w.cfg.Heartbeat)
	defer t.Stop()
	registered := false
	beats := 0
	for {
		if !registered {
			registered = w.register(ctx)
		}
		if registered {
			doc, err := w.mgr.Heartbeat(ctx, w.cfg.ID)
			switch {
			case api.IsNotFound(err):
				w.log.Warn("the manager does not know this VM (timed out or restarted clean): registering again")
				registered = false
				continue
			case err != nil && ctx.Err() == nil:
				w.log.Warn("heartbeat failed", "err", err)
			case err == nil:
				w.reconcile(doc)
			}
			if beats++; beats%10 == 0 {
				w.markReport() // refresh the manager's view, e.g. after its restart
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-w.kick:
		}
	}
}

func (w *Worker) register(ctx context.Context) bool {
	var capacity *api.Capacity
	if w.cfg.Capacity > 0 {
		capacity = &api.Capacity{Functions: w.cfg.Capacity}
	}
	if _, err := w.mgr.RegisterVM(ctx, w.cfg.ID, w.cfg.Advertise, capacity); err != nil {
		if ctx.Err() == nil {
			w.log.Warn("registering with the manager failed", "err", err)
		}
		return false
	}
	w.markReport()
	return true
}

// kickHeartbeat asks for a heartbeat now, e.g. to learn a new parent.
func (w *Worker) kickHeartbeat() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// handlePush applies assignments the manager pushed. On a secure worker
// only the manager may push: anyone else is refused before the body is
// read, and the worker's assignments (and revision) stay as they were, so
// the manager's next document still applies.
func (w *Worker) handlePush(rw http.ResponseWriter, r *http.Request) {
	if id := identity(r.Context()); w.cfg.Security != nil && !id.Manager {
		w.refuse(rw, r, "not_manager", fmt.Errorf("assignments pushed by %s, not by the manager", id))
		return
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	var doc api.Assignments
	if err == nil {
		doc, err = decodeAssignments(data)
	}
	if err != nil {
		rw.Header().Set("Content-Type", "application/json")
		rw.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(rw).Encode(api.Error{Message: err.Error()})
		return
	}
	w.reconcile(doc)
	rw.Header().Set("Content-Type", "application/json")
	rw.Write([]byte("{}\n"))
}

// decodeAssignments parses and checks a pushed assignments document.
func decodeAssignments(data []byte) (api.Assignments, error) {
	var doc api.Assignments
	if err := json.Unmarshal(data, &doc); err != nil {
		return doc, fmt.Errorf("malformed assignments document: %w", err)
	}
	seen := map[string]bool{}
	for _, a := range doc.Assignments {
		if err := api.ValidName("function", a.Function); err != nil {
			return doc, err
		}
		if seen[a.Function] {
			return doc, fmt.Errorf("function %s is assigned twice", a.Function)
		}
		seen[a.Function] = true
		if _, err := name.ParseReference(a.Image, name.WeakValidation); err != nil {
			return doc, fmt.Errorf("function %s: image %q: %w", a.Function, a.Image, err)
		}
		if a.Digest != "" {
			if _, err := digest.Parse(a.Digest); err != nil {
				return doc, fmt.Errorf("function %s: pinned digest: %w", a.Function, err)
			}
		}
		if a.Parent != nil {
			if err := api.ValidAddr(a.Parent.Addr); err != nil {
				return doc, fmt.Errorf("function %s: parent: %w", a.Function, err)
			}
		}
	}
	return doc, nil
}

// reconcile moves the worker to the desired state in doc: start new
// functions, restart those whose image changed, switch parents, drop the
// rest. Documents older than one already applied are ignored.
func (w *Worker) reconcile(doc api.Assignments) {
	// Revocations only add refusals: safe from any document, even a late one.
	w.learnRevoked(doc.Revoked)
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ctx == nil || w.ctx.Err() != nil {
		return
	}
	if doc.Revision != 0 && doc.Revision < w.revision {
		return
	}
	w.revision = max(w.revision, doc.Revision)
	want := map[string]bool{}
	for _, a := range doc.Assignments {
		want[a.Function] = true
		f := w.fns[a.Function]
		switch {
		case f == nil:
			if gen, ok := w.removed[a.Function]; ok && a.Generation <= gen {
				continue // a late copy of what we already dropped
			}
			w.startFunction(a)
		case a.Generation < f.a.Generation:
		case a.Generation == f.a.Generation:
			// Grants are short-lived: the manager sends fresh ones for
			// the same assignment.
			if a.Grant != "" {
				f.a.Grant = a.Grant
			}
		case a.Image != f.a.Image || a.Digest != f.a.Digest || string(a.Spec) != string(f.a.Spec):
			w.stopFunction(f)
			w.startFunction(a)
		default:
			if !sameParents(a.StripeParents(), f.a.StripeParents()) {
				w.metrics.parentSwitches.Inc()
				w.log.Info("new parent", "function", a.Function, "parent", peerName(a.Parent), "stripes", len(a.StripeParents()), "generation", a.Generation)
				close(f.parentChanged)
				f.parentChanged = make(chan struct{})
			}
			f.a = a
		}
	}
	for name, f := range w.fns {
		if !want[name] {
			w.stopFunction(f)
		}
	}
}

func samePeer(a, b *api.Peer) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// sameParents reports whether a and b name the same parent in each stripe.
func sameParents(a, b []*api.Peer) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !samePeer(a[i], b[i]) {
			return false
		}
	}
	return true
}

func peerName(p *api.Peer) string {
	if p == nil {
		return "(registry)"
	}
	return p.VM + "@" + p.Addr
}

// startFunction begins provisioning a. Called with w.mu held.
func (w *Worker) startFunction(a api.Assignment) {
	ctx, cancel := context.WithCancel(w.ctx)
	f := &function{
		name: a.Function, image: a.Image, spec: a.Spec, started: time.Now(),
		a: a, cancel: cancel, done: make(chan struct{}),
		parentChanged: make(chan struct{}),
		state:         api.StateAssigned,
		phases:        map[string]time.Time{"assigned": time.Now()},
	}
	w.fns[a.Function] = f
	delete(w.removed, a.Function)
	close(w.changed) // a child may be waiting for this image
	w.changed = make(chan struct{})
	w.log.Info("assigned", "function", a.Function, "image", a.Image, "parent", peerName(a.Parent), "generation", a.Generation)
	// Tracked by w.bg: a function released before the worker stops may
	// still be stopping its container, holding cache references, and
	// stopAll must wait for it too.
	w.bg.Go(func() { w.provision(ctx, f) })
	w.markReport()
}

// stopFunction drops f. Called with w.mu held.
func (w *Worker) stopFunction(f *function) {
	f.cancel()
	delete(w.fns, f.name)
	w.removed[f.name] = f.a.Generation
	// Every blob f learnt, not just f.blobs: f may be dropped before it
	// read its manifest.
	for d, info := range w.known {
		delete(info.fns, f.name)
		w.stopUnneeded(d)
	}
	w.log.Info("released", "function", f.name)
	w.markReport()
}

// stopAll ends every function and fetch and waits for them. Called once
// the worker's context is done and no request is being served.
func (w *Worker) stopAll() {
	w.mu.Lock()
	var waits []chan struct{}
	for _, f := range w.fns {
		f.cancel()
		waits = append(waits, f.done)
	}
	w.mu.Unlock()
	for _, c := range waits {
		<-c
	}
	w.bg.Wait()
}

// setState records a state change of f and schedules a report.
func (w *Worker) setState(f *function, state, errMsg string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fns[f.name] != f {
		return // dropped meanwhile
	}
	if f.state == state && f.err == errMsg {
		return
	}
	f.state, f.err = state, errMsg
	close(w.stateCh)
	w.stateCh = make(chan struct{})
	if errMsg != "" {
		w.log.Warn("function problem", "function", f.name, "state", state, "err", errMsg)
	}
	w.markReport()
}

func (w *Worker) phase(f *function, name string) {
	w.mu.Lock()
	f.phases[name] = time.Now()
	w.mu.Unlock()
	w.markReport()
}

func (w *Worker) markReport() {
	select {
	case w.report <- struct{}{}:
	default:
	}
}

// reportLoop sends status reports when something changed.
func (w *Worker) reportLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.report:
		}
		r := w.statusReport()
		if err := w.mgr.ReportStatus(ctx, w.cfg.ID, r); err != nil && ctx.Err() == nil {
			if api.IsNotFound(err) {
				w.kickHeartbeat()
			}
			w.log.Debug("status report failed", "err", err)
		}
	}
}

// statusReport describes every function for the manager.
func (w *Worker) statusReport() api.StatusReport {
	w.mu.Lock()
	defer w.mu.Unlock()
	r := api.StatusReport{Functions: []api.FunctionReport{}, Images: []string{}}
	for _, f := range w.fns {
		fr := api.FunctionReport{
			Function: f.name, Image: f.a.Image, Generation: f.a.Generation,
			State: f.state, Error: f.err, ImageBytes: f.imageBytes, BytesBeforeReady: f.bytesBeforeReady,
			Address: f.address, Phases: make(map[string]time.Time, len(f.phases)),
		}
		for k, v := range f.phases {
			fr.Phases[k] = v
		}
		for _, d := range f.blobs {
			if info := w.known[d]; info != nil {
				p, g := info.fromParent.Load(), info.fromReg.Load()
				fr.BytesFromParent += p
				fr.BytesFromRegistry += g
				fr.BytesFetched += p + g
			}
		}
		r.Functions = append(r.Functions, fr)
		if f.state == api.StateReady && !slices.Contains(r.Images, f.a.Image) {
			r.Images = append(r.Images, f.a.Image)
		}
	}
	sort.Slice(r.Functions, func(i, j int) bool { return r.Functions[i].Function < r.Functions[j].Function })
	sort.Strings(r.Images)
	return r
}

// WaitState waits until function fn is in state (or failed, which is
// returned as an error), or ctx is done.
func (w *Worker) WaitState(ctx context.Context, fn, state string) error {
	for {
		w.mu.Lock()
		f, ch := w.fns[fn], w.stateCh
		var cur, msg string
		if f != nil {
			cur, msg = f.state, f.err
		}
		w.mu.Unlock()
		switch {
		case cur == state:
			return nil
		case cur == api.StateFailed:
			return fmt.Errorf("function %s failed on %s: %s", fn, w.cfg.ID, msg)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("function %s on %s is %q (%s): %w", fn, w.cfg.ID, cur, msg, ctx.Err())
		case <-ch:
		}
	}
}

// Functions returns the worker's view of its functions (for tests and the
// in-process cluster).
func (w *Worker) Functions() []api.FunctionReport { return w.statusReport().Functions }

// errString is err's text, "" for nil, without wrapping noise for the
// common cache errors.
func errString(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, blobcache.ErrNoSpace):
		return "cache disk full: " + err.Error()
	}
	return err.Error()
}
