package manager

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/manager/store"
)

// clock is a manual clock for failure-detection tests.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newTestManager(t *testing.T, st store.Store, c *clock) *Manager {
	t.Helper()
	m, err := New(context.Background(), st, Options{VMTimeout: 10 * time.Second, Now: c.Now, Pinner: fakePins})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m
}

func register(t *testing.T, m *Manager, names ...string) {
	t.Helper()
	for i, n := range names {
		if _, err := m.RegisterVM(context.Background(), n, api.RegisterRequest{Addr: fmt.Sprintf("127.0.0.1:%d", 10000+i)}); err != nil {
			t.Fatalf("register %s: %v", n, err)
		}
	}
}

func vmNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("vm-%03d", i)
	}
	return out
}

func wantCode(t *testing.T, err error, code int) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %d", code)
	}
	if got := StatusCode(err); got != code {
		t.Fatalf("got %d (%v), want %d", got, err, code)
	}
}

func TestScaleBuildsBalancedTreeAndHeartbeatsFollowIt(t *testing.T) {
	ctx := context.Background()
	m := newTestManager(t, store.NewMemory(), &clock{now: time.Unix(1000, 0)})
	register(t, m, vmNames(7)...)
	if _, err := m.PutFunction(ctx, "f", api.FunctionRequest{Image: "127.0.0.1:5000/app:v1"}); err != nil {
		t.Fatal(err)
	}
	out, err := m.Scale(ctx, "f", api.ScaleRequest{Count: 7})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Added) != 7 {
		t.Fatalf("added %d VMs, want 7", len(out.Added))
	}
	tree, err := m.Tree("f")
	if err != nil {
		t.Fatal(err)
	}
	if tree.Height != 2 || len(tree.Nodes) != 7 {
		t.Fatalf("7 VMs gave height %d and %d nodes, want 2 and 7", tree.Height, len(tree.Nodes))
	}
	addr := map[string]string{}
	for _, v := range m.VMs() {
		addr[v.VM] = v.Addr
	}
	for _, n := range tree.Nodes {
		as, err := m.Heartbeat(n.VM)
		if err != nil {
			t.Fatal(err)
		}
		if len(as.Assignments) != 1 {
			t.Fatalf("%s has %d assignments, want 1", n.VM, len(as.Assignments))
		}
		a := as.Assignments[0]
		if a.Function != "f" || a.Image != "127.0.0.1:5000/app:v1" || a.Generation == 0 {
			t.Errorf("%s: assignment %+v", n.VM, a)
		}
		switch {
		case n.Parent == nil && a.Parent != nil:
			t.Errorf("root %s told to fetch from %v", n.VM, a.Parent)
		case n.Parent != nil && (a.Parent == nil || a.Parent.VM != *n.Parent || a.Parent.Addr != addr[*n.Parent]):
			t.Errorf("%s: tree parent %s, heartbeat parent %+v", n.VM, *n.Parent, a.Parent)
		}
	}
}

func TestScaleIsAllOrNothing(t *testing.T) {
	ctx := context.Background()
	m := newTestManager(t, store.NewMemory(), &clock{now: time.Unix(1000, 0)})
	register(t, m, vmNames(4)...)
	m.PutFunction(ctx, "f", api.FunctionRequest{Image: "reg/app:v1"})
	if _, err := m.Scale(ctx, "f", api.ScaleRequest{VMs: []string{"vm-000"}}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		req  api.ScaleRequest
		fn   string
		code int
	}{
		{"unknown VM", api.ScaleRequest{VMs: []string{"vm-001", "nope"}}, "f", http.StatusNotFound},
		{"VM already in tree", api.ScaleRequest{VMs: []string{"vm-001", "vm-000"}}, "f", http.StatusConflict},
		{"VM named twice", api.ScaleRequest{VMs: []string{"vm-001", "vm-001"}}, "f", http.StatusBadRequest},
		{"count beyond pool", api.ScaleRequest{Count: 4}, "f", http.StatusConflict},
		{"both vms and count", api.ScaleRequest{VMs: []string{"vm-001"}, Count: 1}, "f", http.StatusBadRequest},
		{"neither", api.ScaleRequest{}, "f", http.StatusBadRequest},
		{"negative count", api.ScaleRequest{Count: -1}, "f", http.StatusBadRequest},
		{"invalid VM name", api.ScaleRequest{VMs: []string{"a/b"}}, "f", http.StatusBadRequest},
		{"unknown function", api.ScaleRequest{Count: 1}, "g", http.StatusNotFound},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := m.Scale(ctx, c.fn, c.req)
			wantCode(t, err, c.code)
			tree, _ := m.Tree("f")
			if len(tree.Nodes) != 1 {
				t.Fatalf("a refused scale changed the tree: %d nodes", len(tree.Nodes))
			}
		})
	}
}

func TestCapacityIsEnforced(t *testing.T) {
	ctx := context.Background()
	m := newTestManager(t, store.NewMemory(), &clock{now: time.Unix(1000, 0)})
	if _, err := m.RegisterVM(ctx, "small", api.RegisterRequest{Addr: "127.0.0.1:1", Capacity: &api.Capacity{Functions: 1}}); err != nil {
		t.Fatal(err)
	}
	m.PutFunction(ctx, "f", api.FunctionRequest{Image: "reg/a:1"})
	m.PutFunction(ctx, "g", api.FunctionRequest{Image: "reg/b:1"})
	if _, err := m.Scale(ctx, "f", api.ScaleRequest{VMs: []string{"small"}}); err != nil {
		t.Fatal(err)
	}
	_, err := m.Scale(ctx, "g", api.ScaleRequest{VMs: []string{"small"}})
	wantCode(t, err, http.StatusConflict)
	_, err = m.Scale(ctx, "g", api.ScaleRequest{Count: 1})
	wantCode(t, err, http.StatusConflict)
	// A refresh without capacity keeps it; one below the current load is refused.
	v, err := m.RegisterVM(ctx, "small", api.RegisterRequest{Addr: "127.0.0.1:1"})
	if err != nil || v.Capacity.Functions != 1 {
		t.Fatalf("refresh without capacity: %+v, %v", v, err)
	}
	m.Release(ctx, "f", "small")
	if _, err := m.Scale(ctx, "g", api.ScaleRequest{VMs: []string{"small"}}); err != nil {
		t.Fatalf("after release the VM has room: %v", err)
	}
}

func TestSilentVMLeavesAndMovedVMsSeeNewParent(t *testing.T) {
	ctx := context.Background()
	c := &clock{now: time.Unix(1000, 0)}
	m := newTestManager(t, store.NewMemory(), c)
	names := vmNames(7)
	register(t, m, names...)
	m.PutFunction(ctx, "f", api.FunctionRequest{Image: "reg/a:1"})
	if _, err := m.Scale(ctx, "f", api.ScaleRequest{VMs: names}); err != nil {
		t.Fatal(err)
	}
	before := map[string]api.Assignment{}
	for _, n := range names {
		as, _ := m.Heartbeat(n)
		before[n] = as.Assignments[0]
	}
	// Everybody but the root keeps heartbeating past the timeout.
	root := names[0]
	for i := 0; i < 3; i++ {
		c.Add(4 * time.Second)
		for _, n := range names[1:] {
			if _, err := m.Heartbeat(n); err != nil {
				t.Fatal(err)
			}
		}
		if err := m.Sweep(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.Heartbeat(root); !api.IsNotFound(asStatusErr(err)) {
		t.Fatalf("silent root still known: %v", err)
	}
	tree, _ := m.Tree("f")
	if len(tree.Nodes) != 6 || tree.Root == nil || *tree.Root == root {
		t.Fatalf("tree after the root died: %+v", tree)
	}
	parents := map[string]string{}
	for _, n := range tree.Nodes {
		if n.Parent != nil {
			parents[n.VM] = *n.Parent
		}
	}
	moved := 0
	for _, n := range names[1:] {
		as, _ := m.Heartbeat(n)
		a := as.Assignments[0]
		oldParent, newParent := "", ""
		if before[n].Parent != nil {
			oldParent = before[n].Parent.VM
		}
		if a.Parent != nil {
			newParent = a.Parent.VM
		}
		if newParent != parents[n] {
			t.Errorf("%s: heartbeat parent %q, tree parent %q", n, newParent, parents[n])
		}
		if oldParent != newParent {
			moved++
			if a.Generation <= before[n].Generation {
				t.Errorf("%s got a new parent but generation stayed %d", n, a.Generation)
			}
		} else if a.Generation != before[n].Generation {
			t.Errorf("%s kept its parent but generation moved %d -> %d", n, before[n].Generation, a.Generation)
		}
	}
	if moved == 0 || moved > 3 {
		t.Errorf("%d VMs got a new parent, want 1 to 3", moved)
	}
	// The dead VM comes back: it registers again and can be placed again.
	register(t, m, root)
	if _, err := m.Scale(ctx, "f", api.ScaleRequest{VMs: []string{root}}); err != nil {
		t.Fatal(err)
	}
}

func asStatusErr(err error) error {
	if err == nil {
		return nil
	}
	return &api.StatusError{Code: StatusCode(err), Message: err.Error()}
}

func TestRestartKeepsTreesAndRestartsClocks(t *testing.T) {
	ctx := context.Background()
	st := store.NewMemory()
	c := &clock{now: time.Unix(1000, 0)}
	m := newTestManager(t, st, c)
	names := vmNames(20)
	register(t, m, names...)
	m.PutFunction(ctx, "f", api.FunctionRequest{Image: "reg/a:1"})
	m.PutFunction(ctx, "g", api.FunctionRequest{Image: "reg/b:1"})
	m.Scale(ctx, "f", api.ScaleRequest{Count: 15})
	m.Scale(ctx, "g", api.ScaleRequest{Count: 9})
	m.Release(ctx, "f", names[3])
	wantF, _ := m.Tree("f")
	wantG, _ := m.Tree("g")
	m.Close()

	c.Add(9 * time.Second) // the VMs were silent for 9 s before the restart
	m2 := newTestManager(t, st, c)
	gotF, _ := m2.Tree("f")
	gotG, _ := m2.Tree("g")
	if js(gotF) != js(wantF) || js(gotG) != js(wantG) {
		t.Fatalf("trees differ after restart:\n%s\n%s", js(gotF), js(wantF))
	}
	c.Add(9 * time.Second) // 18 s since their last heartbeat, 9 s since the restart
	m2.Sweep(ctx)
	if len(m2.VMs()) != 20 {
		t.Fatalf("restart did not restart the heartbeat clocks: %d VMs left", len(m2.VMs()))
	}
	c.Add(2 * time.Second)
	m2.Sweep(ctx)
	if len(m2.VMs()) != 0 {
		t.Fatalf("%d VMs still there 11 s after the restart", len(m2.VMs()))
	}
}

func TestPlacementPrefersCachedImageThenLeastLoaded(t *testing.T) {
	ctx := context.Background()
	m := newTestManager(t, store.NewMemory(), &clock{now: time.Unix(1000, 0)})
	register(t, m, vmNames(6)...)
	m.PutFunction(ctx, "busy", api.FunctionRequest{Image: "reg/busy:1"})
	m.PutFunction(ctx, "f", api.FunctionRequest{Image: "reg/f:1"})
	m.Scale(ctx, "busy", api.ScaleRequest{VMs: []string{"vm-000", "vm-001", "vm-002"}})
	// vm-005 ran f before, and has its image in its cache.
	if _, err := m.Scale(ctx, "f", api.ScaleRequest{VMs: []string{"vm-005"}}); err != nil {
		t.Fatal(err)
	}
	if err := m.Release(ctx, "f", "vm-005"); err != nil {
		t.Fatal(err)
	}
	if err := m.ReportStatus(ctx, "vm-005", api.StatusReport{Images: []string{"reg/f:1"}}); err != nil {
		t.Fatal(err)
	}
	out, err := m.Scale(ctx, "f", api.ScaleRequest{Count: 3})
	if err != nil {
		t.Fatal(err)
	}
	got := []string{out.Added[0].VM, out.Added[1].VM, out.Added[2].VM}
	want := []string{"vm-005", "vm-003", "vm-004"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("picked %v, want %v (cached first, then idle VMs)", got, want)
	}
}

func TestFTAwareParentChoice(t *testing.T) {
	ctx := context.Background()
	m := newTestManager(t, store.NewMemory(), &clock{now: time.Unix(1000, 0)})
	register(t, m, "a", "b", "c", "x", "y", "z", "n")
	m.PutFunction(ctx, "other", api.FunctionRequest{Image: "reg/o:1"})
	m.PutFunction(ctx, "f", api.FunctionRequest{Image: "reg/f:1"})
	// In "other", b is an interior VM with two children.
	m.Scale(ctx, "other", api.ScaleRequest{VMs: []string{"b", "x", "y"}})
	// In f: root a with children b and c; the next VM goes below b or c.
	m.Scale(ctx, "f", api.ScaleRequest{VMs: []string{"a", "b", "c"}})
	out, err := m.Scale(ctx, "f", api.ScaleRequest{VMs: []string{"n"}})
	if err != nil {
		t.Fatal(err)
	}
	if p := out.Added[0].Parent; p == nil || *p != "c" {
		t.Errorf("new VM attached below %v, want c (b already serves two children in another tree)", p)
	}
}

func TestBadInputIsRefusedWithoutChange(t *testing.T) {
	ctx := context.Background()
	m := newTestManager(t, store.NewMemory(), &clock{now: time.Unix(1000, 0)})
	long := string(make([]byte, 300))
	cases := []struct {
		name string
		err  error
		code int
	}{
		{"bad VM name", second(m.RegisterVM(ctx, "a b", api.RegisterRequest{Addr: "127.0.0.1:1"})), 400},
		{"long VM name", second(m.RegisterVM(ctx, long, api.RegisterRequest{Addr: "127.0.0.1:1"})), 400},
		{"bad addr", second(m.RegisterVM(ctx, "a", api.RegisterRequest{Addr: "nowhere"})), 400},
		{"bad port", second(m.RegisterVM(ctx, "a", api.RegisterRequest{Addr: "h:99999"})), 400},
		{"zero capacity", second(m.RegisterVM(ctx, "a", api.RegisterRequest{Addr: "h:1", Capacity: &api.Capacity{}})), 400},
		{"bad image", second(m.PutFunction(ctx, "f", api.FunctionRequest{Image: "reg/app:bad tag!"})), 400},
		{"empty image", second(m.PutFunction(ctx, "f", api.FunctionRequest{})), 400},
		{"spec not JSON", second(m.PutFunction(ctx, "f", api.FunctionRequest{Image: "reg/a:1", Spec: []byte(`{`)})), 400},
		{"spec typo", second(m.PutFunction(ctx, "f", api.FunctionRequest{Image: "reg/a:1", Spec: []byte(`{"readyness":{}}`)})), 400},
		{"spec bad memory", second(m.PutFunction(ctx, "f", api.FunctionRequest{Image: "reg/a:1", Spec: []byte(`{"memory":"lots"}`)})), 400},
		{"spec bad path", second(m.PutFunction(ctx, "f", api.FunctionRequest{Image: "reg/a:1", Spec: []byte(`{"readiness":{"path":"healthz"}}`)})), 400},
		{"bad function name", second(m.PutFunction(ctx, "-f", api.FunctionRequest{Image: "reg/a:1"})), 400},
		{"heartbeat unknown", second(m.Heartbeat("ghost")), 404},
		{"leave unknown", m.LeaveVM(ctx, "ghost"), 404},
		{"release unknown fn", m.Release(ctx, "nofn", "ghost"), 404},
		{"tree unknown", second(m.Tree("nofn")), 404},
		{"status unknown", second(m.Status("nofn")), 404},
		{"report unknown VM", m.ReportStatus(ctx, "ghost", api.StatusReport{}), 404},
		{"report bad state", m.ReportStatus(ctx, "ghost", api.StatusReport{Functions: []api.FunctionReport{{Function: "f", State: "dancing"}}}), 400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { wantCode(t, c.err, c.code) })
	}
	if len(m.VMs()) != 0 || len(m.Functions()) != 0 {
		t.Errorf("refused requests left state behind: %v %v", m.VMs(), m.Functions())
	}
}

func js(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func second[T any](_ T, err error) error { return err }

func TestImageChangeBumpsEveryGeneration(t *testing.T) {
	ctx := context.Background()
	m := newTestManager(t, store.NewMemory(), &clock{now: time.Unix(1000, 0)})
	register(t, m, vmNames(3)...)
	m.PutFunction(ctx, "f", api.FunctionRequest{Image: "reg/a:1"})
	m.Scale(ctx, "f", api.ScaleRequest{Count: 3})
	old := map[string]uint64{}
	for _, n := range vmNames(3) {
		as, _ := m.Heartbeat(n)
		old[n] = as.Assignments[0].Generation
	}
	m.PutFunction(ctx, "f", api.FunctionRequest{Image: "reg/a:2"})
	for _, n := range vmNames(3) {
		as, _ := m.Heartbeat(n)
		a := as.Assignments[0]
		if a.Image != "reg/a:2" || a.Generation <= old[n] {
			t.Errorf("%s after image change: %+v (old generation %d)", n, a, old[n])
		}
	}
}

// The revision comes from the store, not the clock: a manager restarted
// with its clock an hour behind still hands out growing revisions, and so
// does one started on a store written before revisions were stored.
func TestRevisionGrowsAcrossRestartWithClockBack(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "manager.db")
	c := &clock{now: time.Unix(1_800_000_000, 0)}

	// A store as an older manager left it: state, no revision.
	st, err := store.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Apply(ctx, store.Batch{PutVMs: []store.VM{{Name: "vm-0", Addr: "127.0.0.1:1", Capacity: 4}}}); err != nil {
		t.Fatal(err)
	}
	var last uint64
	for restart := range 3 {
		m := newTestManager(t, st, c)
		doc, err := m.Heartbeat("vm-0")
		if err != nil {
			t.Fatal(err)
		}
		if doc.Revision < last {
			t.Fatalf("restart %d: revision went back from %d to %d", restart, last, doc.Revision)
		}
		if restart == 0 && doc.Revision < uint64(c.Now().UnixNano()) {
			t.Fatalf("an old store starts at revision %d, below the clock %d", doc.Revision, c.Now().UnixNano())
		}
		if _, err := m.PutFunction(ctx, fmt.Sprintf("f%d", restart), api.FunctionRequest{Image: "reg/a:1"}); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Scale(ctx, fmt.Sprintf("f%d", restart), api.ScaleRequest{Count: 1}); err != nil {
			t.Fatal(err)
		}
		after, _ := m.Heartbeat("vm-0")
		if after.Revision <= doc.Revision {
			t.Fatalf("restart %d: a change left the revision at %d (before %d)", restart, after.Revision, doc.Revision)
		}
		last = after.Revision
		m.Close()
		st.Close()
		c.Add(-time.Hour) // the clock steps back across every restart
		if st, err = store.OpenBolt(path); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
}
