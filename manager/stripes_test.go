package manager

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/internal/testenv"
	"github.com/faasnet/faasnet/manager/store"
	"github.com/faasnet/faasnet/stripe"
)

// standIn is a worker's push endpoint and nothing else: it keeps the
// newest assignments document pushed to it.
type standIn struct {
	srv     *httptest.Server
	mu      sync.Mutex
	last    api.Assignments
	changed chan struct{} // closed and replaced at every push
}

func startStandIns(t *testing.T, n int) []*standIn {
	out := make([]*standIn, n)
	for i := range out {
		s := &standIn{changed: make(chan struct{})}
		s.srv = httptest.NewServer(s)
		t.Cleanup(s.srv.Close)
		out[i] = s
	}
	return out
}

func (s *standIn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var doc api.Assignments
	if r.URL.Path != api.WorkerAssignmentsPath || json.NewDecoder(r.Body).Decode(&doc) != nil {
		http.Error(w, "bad push", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	if doc.Revision >= s.last.Revision {
		s.last = doc
	}
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

func (s *standIn) addr() string { return strings.TrimPrefix(s.srv.URL, "http://") }

// await waits until ok holds for the newest pushed document.
func (s *standIn) await(t *testing.T, what string, ok func(api.Assignments) bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		s.mu.Lock()
		doc, changed := s.last, s.changed
		s.mu.Unlock()
		if ok(doc) {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("%s: the newest push %s, after 10 s", what, js(doc.Assignments))
		}
	}
}

// stripedManager starts a manager that pushes, defaults to two stripes and
// pins without a registry.
func stripedManager(t *testing.T, st store.Store, c *clock) *Manager {
	t.Helper()
	m, err := New(t.Context(), st, Options{VMTimeout: 10 * time.Second, Now: c.Now, Pinner: fakePins, Push: true, Stripes: 2})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.pusher.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; m.Close() })
	return m
}

// checkStripes checks every invariant of fn's trees that clients see:
// the forest's own Check; the tree answer has k stripes over the same VMs,
// stripe 0's at the top, each stripe's links matching the forest; every
// member's assignment has k parents, those of the forest with their
// addresses, Parent = Parents[0], and nil exactly at each stripe's root;
// and with more than k VMs no VM has children in two stripes. It returns
// each member's parents.
func checkStripes(t *testing.T, m *Manager, fn string, k int) map[string][]string {
	t.Helper()
	m.mu.Lock()
	f := m.fns[fn]
	if err := f.tree.Check(); err != nil {
		m.mu.Unlock()
		t.Fatalf("%s: %v", fn, err)
	}
	if f.tree.Stripes() != k {
		m.mu.Unlock()
		t.Fatalf("%s has %d stripes, want %d", fn, f.tree.Stripes(), k)
	}
	want := map[string][]string{}
	for _, n := range f.tree.Nodes(0) {
		want[n.VM], _ = f.tree.Parents(n.VM)
	}
	m.mu.Unlock()

	tree, err := m.Tree(fn)
	if err != nil {
		t.Fatal(err)
	}
	if len(tree.Stripes) != k {
		t.Fatalf("%s: tree answer has %d stripes, want %d", fn, len(tree.Stripes), k)
	}
	if js(tree.Root) != js(tree.Stripes[0].Root) || tree.Height != tree.Stripes[0].Height || js(tree.Nodes) != js(tree.Stripes[0].Nodes) {
		t.Errorf("%s: top-level tree is not stripe 0's", fn)
	}
	homes := map[string][]int{}
	for s, st := range tree.Stripes {
		if st.Stripe != s || len(st.Nodes) != len(want) {
			t.Fatalf("%s: stripe %d answered as %d with %d VMs, want %d", fn, s, st.Stripe, len(st.Nodes), len(want))
		}
		for _, n := range st.Nodes {
			ps, ok := want[n.VM]
			switch {
			case !ok:
				t.Fatalf("%s: stripe %d has %s, not a member", fn, s, n.VM)
			case (n.Parent == nil) != (ps[s] == "") || n.Parent != nil && *n.Parent != ps[s]:
				t.Errorf("%s: stripe %d answers %s's parent %v, the forest %q", fn, s, n.VM, n.Parent, ps[s])
			case (n.Parent == nil) != (st.Root != nil && *st.Root == n.VM):
				t.Errorf("%s: stripe %d: %s has no parent but is not the root %v", fn, s, n.VM, st.Root)
			}
			if len(n.Children) > 0 {
				homes[n.VM] = append(homes[n.VM], s)
			}
		}
	}
	if len(want) > k {
		for vm, ss := range homes {
			if len(ss) > 1 {
				t.Errorf("%s: %s of %d VMs has children in stripes %v", fn, vm, len(want), ss)
			}
		}
	}
	addr := map[string]string{}
	for _, v := range m.VMs() {
		addr[v.VM] = v.Addr
	}
	for vm, ps := range want {
		a := assignmentOf(t, m, vm, fn)
		if len(a.Parents) != k {
			t.Fatalf("%s: %s has %d parents, want %d", fn, vm, len(a.Parents), k)
		}
		for s, p := range a.Parents {
			if (p == nil) != (ps[s] == "") || p != nil && (p.VM != ps[s] || p.Addr != addr[p.VM]) {
				t.Errorf("%s: %s's stripe %d parent is %+v, the forest's %q at %s", fn, vm, s, p, ps[s], addr[ps[s]])
			}
		}
		if js(a.Parent) != js(a.Parents[0]) {
			t.Errorf("%s: %s's parent %+v is not stripe 0's %+v", fn, vm, a.Parent, a.Parents[0])
		}
		if a.BlockSize <= 0 {
			t.Errorf("%s: %s assigned block size %d", fn, vm, a.BlockSize)
		}
	}
	return want
}

func assignmentOf(t *testing.T, m *Manager, vm, fn string) api.Assignment {
	t.Helper()
	as, _, err := m.Assignments(vm)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range as.Assignments {
		if a.Function == fn {
			return a
		}
	}
	t.Fatalf("%s has no assignment for %s", vm, fn)
	return api.Assignment{}
}

// checkPushes waits until every registered VM's stand-in holds the
// assignments a heartbeat would answer.
func checkPushes(t *testing.T, m *Manager, byAddr map[string]*standIn) {
	t.Helper()
	for _, v := range m.VMs() {
		want, _, err := m.Assignments(v.VM)
		if err != nil {
			t.Fatal(err)
		}
		byAddr[v.Addr].await(t, "push to "+v.VM, func(got api.Assignments) bool {
			// A VM never assigned anything was never pushed to.
			return len(got.Assignments) == 0 && len(want.Assignments) == 0 || js(got.Assignments) == js(want.Assignments)
		})
	}
}

// stripedStore opens, and reopens for a restart, one store of a backend.
type stripedStore struct {
	name string
	open func(t *testing.T) store.Store // the same state at every call
}

func stripedStores(t *testing.T) []stripedStore {
	path := filepath.Join(t.TempDir(), "state.db")
	return []stripedStore{
		{"memory", func() func(*testing.T) store.Store {
			mem := store.NewMemory()
			return func(*testing.T) store.Store { return keepOpen{mem} }
		}()},
		{"bolt", func(t *testing.T) store.Store {
			s, err := store.OpenBolt(path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}},
		{"etcd", func(t *testing.T) store.Store {
			s, err := store.OpenEtcd(t.Context(), store.EtcdOptions{Endpoints: startEtcdOnce(t), Prefix: "/striped/"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}},
	}
}

// keepOpen is a store whose Close leaves it open, so that a restarted
// manager finds the state of a Memory.
type keepOpen struct{ store.Store }

func (keepOpen) Close() error { return nil }

var etcdOnce struct {
	sync.Mutex
	endpoints []string
}

// startEtcdOnce starts one etcd member for the test that first asks and
// returns its endpoints to every later call of that test.
func startEtcdOnce(t *testing.T) []string {
	etcdOnce.Lock()
	defer etcdOnce.Unlock()
	if etcdOnce.endpoints == nil {
		e := testenv.StartEtcd(t, 1)
		etcdOnce.endpoints = e.Endpoints()
		t.Cleanup(func() {
			etcdOnce.Lock()
			etcdOnce.endpoints = nil
			etcdOnce.Unlock()
		})
	}
	return etcdOnce.endpoints
}

// TestStripedFunctionLifecycle drives functions of the default two stripes
// and of three through scale-out, release, leave, a missed heartbeat and a
// change of stripes, checking after each step the trees, the assignments
// (k parents each, the forest's), that a VM whose parents changed has a new
// generation, that the pushes converge on the assignments, and that a
// restart on the same store restores the very same trees and assignments.
func TestStripedFunctionLifecycle(t *testing.T) {
	for _, backend := range stripedStores(t) {
		t.Run(backend.name, func(t *testing.T) {
			ctx := t.Context()
			c := &clock{now: time.Unix(1000, 0)}
			st := backend.open(t)
			m := stripedManager(t, st, c)
			stands := startStandIns(t, 14)
			byAddr := map[string]*standIn{}
			names := vmNames(len(stands))
			for i, s := range stands {
				byAddr[s.addr()] = s
				if _, err := m.RegisterVM(ctx, names[i], api.RegisterRequest{Addr: s.addr()}); err != nil {
					t.Fatal(err)
				}
			}
			f, err := m.PutFunction(ctx, "f", api.FunctionRequest{Image: "reg/f:1"})
			if err != nil {
				t.Fatal(err)
			}
			if f.Stripes != 2 || f.BlockSize != stripe.DefaultBlock {
				t.Fatalf("f defined with %d stripes and block %d, want the default 2 and %d", f.Stripes, f.BlockSize, stripe.DefaultBlock)
			}
			if g, err := m.PutFunction(ctx, "g", api.FunctionRequest{Image: "reg/g:1", Stripes: 3}); err != nil || g.Stripes != 3 {
				t.Fatalf("g defined with %d stripes (%v), want 3", g.Stripes, err)
			}
			ks := map[string]int{"f": 2, "g": 3}
			parents := map[string]map[string][]string{}
			gens := map[string]map[string]uint64{}
			step := func(what string) {
				t.Helper()
				for fn, k := range ks {
					now := checkStripes(t, m, fn, k)
					nowGens := map[string]uint64{}
					for vm, ps := range now {
						gen := assignmentOf(t, m, vm, fn).Generation
						if old, ok := parents[fn][vm]; ok && !slices.Equal(old, ps) && gen <= gens[fn][vm] {
							t.Errorf("%s: %s/%s moved from %q to %q, generation stayed %d", what, fn, vm, old, ps, gen)
						}
						nowGens[vm] = gen
					}
					parents[fn], gens[fn] = now, nowGens
				}
				checkPushes(t, m, byAddr)
			}
			if _, err := m.Scale(ctx, "f", api.ScaleRequest{Count: 9}); err != nil {
				t.Fatal(err)
			}
			step("scale f")
			out, err := m.Scale(ctx, "g", api.ScaleRequest{VMs: names[:7]})
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range out.Added {
				if len(p.Parents) != 3 || js(p.Parent) != js(p.Parents[0]) {
					t.Errorf("g: %s placed with parents %s and parent %s", p.VM, js(p.Parents), js(p.Parent))
				}
			}
			step("scale g")
			// Release stripe 1's root of f, then an interior VM of
			// stripe 0.
			vm := *mustTree(t, m, "f").Stripes[1].Root
			if err := m.Release(ctx, "f", vm); err != nil {
				t.Fatal(err)
			}
			step("release " + vm)
			for _, n := range mustTree(t, m, "f").Stripes[0].Nodes {
				if n.Parent != nil && len(n.Children) > 0 {
					vm = n.VM
					break
				}
			}
			if err := m.Release(ctx, "f", vm); err != nil {
				t.Fatal(err)
			}
			step("release " + vm)
			root := *mustTree(t, m, "g").Stripes[1].Root
			if err := m.LeaveVM(ctx, root); err != nil {
				t.Fatal(err)
			}
			step("leave " + root)
			// Every VM but one keeps heartbeating; that one misses its
			// heartbeats and is swept out of every tree.
			silent := *mustTree(t, m, "f").Stripes[0].Root
			c.Add(6 * time.Second)
			for _, v := range m.VMs() {
				if v.VM != silent {
					m.Heartbeat(v.VM)
				}
			}
			c.Add(6 * time.Second)
			if err := m.Sweep(ctx); err != nil {
				t.Fatal(err)
			}
			if _, _, err := m.Assignments(silent); err == nil {
				t.Fatalf("%s was not swept", silent)
			}
			step("sweep " + silent)
			if _, err := m.Scale(ctx, "g", api.ScaleRequest{Count: 3}); err != nil {
				t.Fatal(err)
			}
			step("scale g again")

			// A VM with children in some stripe moves to a new address:
			// each of its children, in every stripe, gets a new
			// generation (checkStripes checks the addresses).
			var moved string
			var children []string
			gst := mustTree(t, m, "g").Stripes
			for _, n := range gst[len(gst)-1].Nodes { // not stripe 0's
				if n.Parent != nil && len(n.Children) > 0 {
					moved, children = n.VM, n.Children
					break
				}
			}
			if moved == "" {
				t.Fatal("g's last stripe has no interior VM but its root")
			}
			before := gens["g"]
			// The VM keeps its stand-in, which now answers on a second
			// address too.
			var was *standIn
			for _, v := range m.VMs() {
				if v.VM == moved {
					was = byAddr[v.Addr]
				}
			}
			spare := httptest.NewServer(was)
			defer spare.Close()
			newAddr := strings.TrimPrefix(spare.URL, "http://")
			byAddr[newAddr] = was
			if _, err := m.RegisterVM(ctx, moved, api.RegisterRequest{Addr: newAddr}); err != nil {
				t.Fatal(err)
			}
			step("move " + moved)
			for _, c := range children {
				if gens["g"][c] <= before[c] {
					t.Errorf("%s moved to %s: its child %s kept generation %d", moved, newAddr, c, before[c])
				}
			}

			// A new number of stripes rebuilds the trees: every member
			// gets a new generation.
			before = gens["f"]
			if f, err := m.PutFunction(ctx, "f", api.FunctionRequest{Image: "reg/f:1", Stripes: 3}); err != nil || f.Stripes != 3 {
				t.Fatalf("f redefined with %d stripes (%v), want 3", f.Stripes, err)
			}
			ks["f"] = 3
			step("f to 3 stripes")
			for vm, g := range gens["f"] {
				if g <= before[vm] {
					t.Errorf("f to 3 stripes: %s kept generation %d", vm, g)
				}
			}
			// No stripes in a redefinition keeps the function's.
			if f, err := m.PutFunction(ctx, "f", api.FunctionRequest{Image: "reg/f:2"}); err != nil || f.Stripes != 3 {
				t.Fatalf("f redefined without stripes has %d (%v), want 3 kept", f.Stripes, err)
			}
			step("f new image")

			wantTrees := map[string]string{}
			wantAssign := map[string]string{}
			for fn := range ks {
				wantTrees[fn] = js(mustTree(t, m, fn))
			}
			for _, v := range m.VMs() {
				as, _, _ := m.Assignments(v.VM)
				wantAssign[v.VM] = js(as.Assignments)
			}
			m.Close()
			st.Close()

			st2 := backend.open(t)
			m2 := stripedManager(t, st2, c)
			for fn, k := range ks {
				if got := js(mustTree(t, m2, fn)); got != wantTrees[fn] {
					t.Errorf("%s after restart:\n got %s\nwant %s", fn, got, wantTrees[fn])
				}
				checkStripes(t, m2, fn, k)
			}
			for vm, want := range wantAssign {
				as, _, err := m2.Assignments(vm)
				if err != nil {
					t.Fatal(err)
				}
				if got := js(as.Assignments); got != want {
					t.Errorf("%s's assignments after restart:\n got %s\nwant %s", vm, got, want)
				}
			}
			// The restored trees go on changing as before.
			if _, err := m2.Scale(ctx, "f", api.ScaleRequest{Count: 2}); err != nil {
				t.Fatal(err)
			}
			checkStripes(t, m2, "f", 3)
			if f, err := m2.PutFunction(ctx, "f", api.FunctionRequest{Image: "reg/f:2", Stripes: 1}); err != nil || f.Stripes != 1 {
				t.Fatalf("f back to one tree: %d stripes (%v)", f.Stripes, err)
			}
			checkStripes(t, m2, "f", 1)
			wantF := js(mustTree(t, m2, "f"))
			m2.Close()
			st2.Close()
			m3 := stripedManager(t, backend.open(t), c)
			if got := js(mustTree(t, m3, "f")); got != wantF {
				t.Errorf("f of one tree after restart:\n got %s\nwant %s", got, wantF)
			}
		})
	}
}

func mustTree(t *testing.T, m *Manager, fn string) api.Tree {
	t.Helper()
	tree, err := m.Tree(fn)
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

// TestStripesValidation puts function definitions over HTTP: stripes 0 or
// absent take the default (2 here) for a new function, 1 to MaxStripes
// are kept, anything else is a 400 that names the field and changes
// nothing.
func TestStripesValidation(t *testing.T) {
	m := stripedManager(t, store.NewMemory(), &clock{now: time.Unix(1000, 0)})
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	for i, tt := range []struct {
		body string
		code int
		want int // stripes answered
	}{
		{`{"image":"reg/a:1"}`, 200, 2},
		{`{"image":"reg/a:1","stripes":0}`, 200, 2},
		{`{"image":"reg/a:1","stripes":null}`, 200, 2},
		{`{"image":"reg/a:1","stripes":1}`, 200, 1},
		{`{"image":"reg/a:1","stripes":3}`, 200, 3},
		{fmt.Sprintf(`{"image":"reg/a:1","stripes":%d}`, api.MaxStripes), 200, api.MaxStripes},
		{fmt.Sprintf(`{"image":"reg/a:1","stripes":%d}`, api.MaxStripes+1), 400, 0},
		{`{"image":"reg/a:1","stripes":-1}`, 400, 0},
		{`{"image":"reg/a:1","stripes":1e9}`, 400, 0},
		{`{"image":"reg/a:1","stripes":99999999999999999999}`, 400, 0},
		{`{"image":"reg/a:1","stripes":2.5}`, 400, 0},
		{`{"image":"reg/a:1","stripes":"2"}`, 400, 0},
		{`{"image":"reg/a:1","stripes":[2]}`, 400, 0},
		{`{"image":"reg/a:1","stripes":true}`, 400, 0},
	} {
		fn := fmt.Sprintf("f%d", i)
		req, _ := http.NewRequest(http.MethodPut, srv.URL+api.Prefix+"/functions/"+fn, bytes.NewReader([]byte(tt.body)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.code {
			t.Errorf("%s: %d %s, want %d", tt.body, resp.StatusCode, data, tt.code)
			continue
		}
		if tt.code != 200 {
			if !strings.Contains(string(data), "stripes") {
				t.Errorf("%s: refusal %s does not name the field", tt.body, data)
			}
			if _, err := m.Tree(fn); err == nil {
				t.Errorf("%s: refused, but %s was defined", tt.body, fn)
			}
			continue
		}
		var got api.Function
		if err := json.Unmarshal(data, &got); err != nil || got.Stripes != tt.want {
			t.Errorf("%s: answered %s, want %d stripes", tt.body, data, tt.want)
		}
		if n := len(mustTree(t, m, fn).Stripes); n != tt.want {
			t.Errorf("%s: tree has %d stripes, want %d", tt.body, n, tt.want)
		}
	}
	if api.MaxStripes > 16 {
		t.Errorf("api.MaxStripes %d is more than ftree builds", api.MaxStripes)
	}
}

// TestStripesOptionRefused checks that a manager refuses a default it
// cannot build.
func TestStripesOptionRefused(t *testing.T) {
	for _, k := range []int{-1, api.MaxStripes + 1} {
		if _, err := New(t.Context(), store.NewMemory(), Options{Pinner: fakePins, Stripes: k}); err == nil {
			t.Errorf("Options.Stripes %d accepted", k)
		}
	}
}

// TestBlockSizeFollowsTheImage checks the assigned block: stripe.BlockFor
// from the size a sizing pinner reports, the default block without one,
// an operator's fixed block over both, and that a redefinition with the
// same digest keeps the block although the pool grew.
func TestBlockSizeFollowsTheImage(t *testing.T) {
	sizer := sizingPinner{size: 758_000_000, layers: 1}
	for _, tt := range []struct {
		name   string
		pinner Pinner
		fixed  int64
		image  string
		want   int64
	}{
		{"sized", sizer, 0, "reg/a:1", stripe.BlockFor(758_000_000, 1, 4, 2)},
		{"not sized", fakePins, 0, "reg/a:1", stripe.DefaultBlock},
		{"by digest", sizer, 0, "reg/a@sha256:" + strings.Repeat("ab", 32), stripe.DefaultBlock},
		{"fixed", sizer, 128 << 10, "reg/a:1", 128 << 10},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m, err := New(t.Context(), store.NewMemory(), Options{Pinner: tt.pinner, Stripes: 2, BlockSize: tt.fixed})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			register(t, m, vmNames(4)...)
			f, err := m.PutFunction(t.Context(), "f", api.FunctionRequest{Image: tt.image})
			if err != nil {
				t.Fatal(err)
			}
			if f.BlockSize != tt.want {
				t.Fatalf("block %d, want %d", f.BlockSize, tt.want)
			}
			if _, err := m.Scale(t.Context(), "f", api.ScaleRequest{Count: 4}); err != nil {
				t.Fatal(err)
			}
			if a := assignmentOf(t, m, "vm-000", "f"); a.BlockSize != tt.want {
				t.Errorf("assigned block %d, want %d", a.BlockSize, tt.want)
			}
			register(t, m, vmNames(1000)...)
			if f, _ := m.PutFunction(t.Context(), "f", api.FunctionRequest{Image: tt.image, Spec: json.RawMessage(`{"env":["A=1"]}`)}); f.BlockSize != tt.want {
				t.Errorf("block %d after a redefinition of the same digest, want %d kept", f.BlockSize, tt.want)
			}
		})
	}
	if a, b := stripe.BlockFor(758_000_000, 1, 4, 2), stripe.BlockFor(758_000_000, 1, 1000, 2); a == b {
		t.Errorf("the pool's size does not change the block (%d), so the last check above could not fail", a)
	}
}

type sizingPinner struct {
	size   int64
	layers int
}

func (p sizingPinner) Pin(ctx context.Context, image string) (string, error) {
	return fakePins(ctx, image)
}

func (p sizingPinner) PinSize(ctx context.Context, image string) (Pinned, error) {
	d, err := fakePins(ctx, image)
	return Pinned{Digest: d, Size: p.size, Layers: p.layers}, err
}

// TestEmptyStripedFunctionSurvivesRestart: a function of three stripes and
// no VMs yet loads as such.
func TestEmptyStripedFunctionSurvivesRestart(t *testing.T) {
	st := store.NewMemory()
	c := &clock{now: time.Unix(1000, 0)}
	m := stripedManager(t, keepOpen{st}, c)
	if _, err := m.PutFunction(t.Context(), "f", api.FunctionRequest{Image: "reg/f:1", Stripes: 3}); err != nil {
		t.Fatal(err)
	}
	m.Close()
	m2 := stripedManager(t, st, c)
	tree := mustTree(t, m2, "f")
	if len(tree.Stripes) != 3 || tree.Root != nil || len(tree.Nodes) != 0 {
		t.Fatalf("empty function of 3 stripes restored as %s", js(tree))
	}
	register(t, m2, vmNames(5)...)
	if _, err := m2.Scale(t.Context(), "f", api.ScaleRequest{Count: 5}); err != nil {
		t.Fatal(err)
	}
	checkStripes(t, m2, "f", 3)
}
