package manager

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/internal/testenv"
	"github.com/faasnet/faasnet/manager/store"
)

// haNode is one manager of a test's election, served over plain HTTP.
type haNode struct {
	m    *Manager
	st   *store.Etcd
	srv  *httptest.Server
	stop context.CancelFunc
	done chan struct{}
}

// startHANode opens an elected store on endpoints, makes a manager (which
// first campaigns if lead, so that it writes the new store's first state)
// and runs it.
func startHANode(t *testing.T, endpoints []string, lead bool) *haNode {
	t.Helper()
	return startHANodeOpts(t, endpoints, lead, Options{VMTimeout: time.Hour})
}

// startHANodeOpts is startHANode with opts (the election, pinner and
// logger are set here).
func startHANodeOpts(t *testing.T, endpoints []string, lead bool, opts Options) *haNode {
	t.Helper()
	st, err := store.OpenEtcd(t.Context(), store.EtcdOptions{Endpoints: endpoints, Prefix: "/ha/", Elect: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	n := &haNode{st: st, done: make(chan struct{})}
	n.srv = httptest.NewUnstartedServer(nil)
	el, err := st.Elector("http://"+n.srv.Listener.Addr().String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if lead {
		if _, err := el.Campaign(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	opts.Pinner, opts.Election, opts.Logger = fakePins, el, slog.New(slog.DiscardHandler)
	n.m, err = New(t.Context(), st, opts)
	if err != nil {
		t.Fatal(err)
	}
	st.SetObserver(n.m.StoreObserver())
	n.srv.Config.Handler = n.m.Handler()
	n.srv.Start()
	ctx, stop := context.WithCancel(context.Background())
	n.stop = stop
	go func() {
		defer close(n.done)
		n.m.Run(ctx)
	}()
	t.Cleanup(n.close)
	return n
}

// close ends the node's Run (handing the leadership over) and its server.
func (n *haNode) close() {
	n.stop()
	<-n.done
	n.srv.Close()
	n.m.Close()
}

// waitHealth waits until n reports role with leader.
func waitHealth(t *testing.T, n *haNode, role, leader string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		h, err := api.NewClient(n.srv.URL).HealthOf(t.Context(), n.srv.URL)
		if err == nil && h.Role == role && h.Leader == leader {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: health %+v, %v; want %s of %s", n.srv.URL, h, err, role, leader)
		}
		<-tick.C
	}
}

// TestFollower checks what a follower does with each kind of call: writes
// and VM calls get 307 to the leader (which api.Client follows), reads of
// the stored state are answered from its watch-fed copy, and when the
// leader hands over it leads with the state the leader stored, while the
// old one's writes are fenced.
func TestFollower(t *testing.T) {
	ep := testenv.StartEtcd(t, 1).Endpoints()
	a := startHANode(t, ep, true)
	b := startHANode(t, ep, false)
	waitHealth(t, a, api.RoleLeader, a.srv.URL)
	waitHealth(t, b, api.RoleFollower, a.srv.URL)

	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tc := range []struct{ method, path string }{
		{"PUT", api.Prefix + "/vms/vm-0"},
		{"POST", api.Prefix + "/vms/vm-0/heartbeat"},
		{"POST", api.Prefix + "/vms/vm-0/status"},
		{"POST", api.Prefix + "/functions/f/scale"},
		{"GET", api.Prefix + "/functions/f/status"},
	} {
		req, _ := http.NewRequest(tc.method, b.srv.URL+tc.path, nil)
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusTemporaryRedirect || resp.Header.Get("Location") != a.srv.URL+tc.path {
			t.Errorf("%s %s at the follower: %d to %q, want 307 to the leader", tc.method, tc.path, resp.StatusCode, resp.Header.Get("Location"))
		}
	}

	c := api.NewClient(b.srv.URL)
	ctx := t.Context()
	for _, vm := range []string{"vm-0", "vm-1", "vm-2"} {
		if _, err := c.RegisterVM(ctx, vm, "10.0.0.1:7071", nil); err != nil {
			t.Fatalf("registering through the follower: %v", err)
		}
	}
	if _, err := c.PutFunction(ctx, "f", api.FunctionRequest{Image: "reg/f:1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Scale(ctx, "f", api.ScaleRequest{Count: 3}); err != nil {
		t.Fatal(err)
	}
	want, err := a.m.Tree("f")
	if err != nil {
		t.Fatal(err)
	}
	// The follower's own copy catches up through the watch.
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		got, err := api.NewClient(b.srv.URL).Tree(ctx, "f")
		if err == nil && len(got.Nodes) == 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the follower's tree: %+v, %v; want the leader's %+v", got, err, want)
		}
		<-tick.C
	}
	fenced := func(m *Manager, who string) {
		t.Helper()
		_, err := m.RegisterVM(ctx, "vm-x", api.RegisterRequest{Addr: "10.0.0.9:7071"})
		if StatusCode(err) != http.StatusServiceUnavailable || !strings.Contains(err.Error(), store.ErrFenced.Error()) {
			t.Errorf("a write made directly on %s = %v, want 503, fenced", who, err)
		}
	}
	fenced(b.m, "the follower")

	// The leader hands over: b leads with the stored state; a's copy
	// follows and its writes are refused.
	a.stop()
	<-a.done
	waitHealth(t, b, api.RoleLeader, b.srv.URL)
	if got, err := b.m.Tree("f"); err != nil || len(got.Nodes) != 3 {
		t.Fatalf("the new leader's tree: %+v, %v", got, err)
	}
	fenced(a.m, "the old leader")
	if vms := b.m.VMs(); len(vms) != 3 {
		t.Errorf("VMs after the fenced writes: %+v", vms)
	}
}

// TestTakeOverRestartsClocks checks that a new leader gives every VM a full
// VM timeout from when it took over, as a restart does, rather than
// carrying over when its copy of the state was loaded: the VMs were silent
// only because nobody led.
func TestTakeOverRestartsClocks(t *testing.T) {
	ep := testenv.StartEtcd(t, 1).Endpoints()
	clk := &clock{now: time.Unix(1_000_000_000, 0)}
	opts := Options{VMTimeout: 10 * time.Second, Now: clk.Now}
	a := startHANodeOpts(t, ep, true, opts)
	b := startHANodeOpts(t, ep, false, opts)
	ctx := t.Context()
	for _, vm := range []string{"vm-0", "vm-1"} {
		if _, err := a.m.RegisterVM(ctx, vm, api.RegisterRequest{Addr: "10.0.0.1:7071"}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for len(b.m.VMs()) != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the follower's copy has %d VMs, want 2", len(b.m.VMs()))
		}
		<-tick.C
	}
	clk.Add(8 * time.Second)
	a.stop()
	<-a.done
	waitHealth(t, b, api.RoleLeader, b.srv.URL)
	clk.Add(8 * time.Second) // 16 s since the VMs were heard, 8 s since b leads
	if err := b.m.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(b.m.VMs()); n != 2 {
		t.Fatalf("%d VMs left 8 s into the new leader's term, want 2: their clocks did not restart", n)
	}
	clk.Add(3 * time.Second)
	if err := b.m.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(b.m.VMs()); n != 0 {
		t.Fatalf("%d VMs left 11 s into the new leader's term with a 10 s timeout, want 0", n)
	}
}

// TestCallsWaitForTheTermToStart: etcd names a manager the leader a moment
// before its term starts (it loads the state first), and followers redirect
// calls to it from that moment. Such a call waits for the term instead of
// getting 503.
func TestCallsWaitForTheTermToStart(t *testing.T) {
	ep := testenv.StartEtcd(t, 1).Endpoints()
	st, err := store.OpenEtcd(t.Context(), store.EtcdOptions{Endpoints: ep, Prefix: "/ha/", Elect: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	srv := httptest.NewUnstartedServer(nil)
	self := "http://" + srv.Listener.Addr().String()
	el, err := st.Elector(self, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := el.Campaign(t.Context()); err != nil {
		t.Fatal(err)
	}
	m, err := New(t.Context(), st, Options{VMTimeout: time.Hour, Pinner: fakePins, Election: el, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	srv.Config.Handler = m.Handler()
	srv.Start()
	t.Cleanup(srv.Close)
	// Elected, as etcd and every follower see it, but not leading yet.
	m.ha.leader.Store(&self)

	answered := make(chan error, 1)
	go func() {
		_, err := api.NewClient(self).Status(t.Context(), "f")
		answered <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for heldCalls(t, m) != "1" {
		select {
		case err := <-answered:
			t.Fatalf("answered before the term started: %v", err)
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			t.Fatal("the call was not held")
		}
	}
	m.setLeading(true)
	// The leader's own answer: no such function.
	if err := <-answered; !api.IsNotFound(err) {
		t.Fatalf("after the term started: %v, want the leader's 404", err)
	}
	if n := heldCalls(t, m); n != "0" {
		t.Errorf("%s calls still held", n)
	}
}

// heldCalls is faasnet_manager_held_calls as m's /metrics shows it, "" if
// it is absent.
func heldCalls(t *testing.T, m *Manager) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, l := range strings.Split(rec.Body.String(), "\n") {
		if v, ok := strings.CutPrefix(l, "faasnet_manager_held_calls "); ok {
			return v
		}
	}
	return "" // absent
}
