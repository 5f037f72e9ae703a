package manager

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/internal/testenv"
)

// TestFollowerCopyFollowsChanges drives a leader through a random stream of
// registrations, leaves, definitions (one tree and stripes), scale-outs,
// releases and deletions, and checks that the follower's copy, kept change
// by change from etcd's watch, ends equal to the leader's state: the same
// VMs, functions and trees (links, depths, fan-outs); and that it loaded
// the whole state only once, at the start.
func TestFollowerCopyFollowsChanges(t *testing.T) {
	ep := testenv.StartEtcd(t, 1).Endpoints()
	a := startHANode(t, ep, true)
	b := startHANode(t, ep, false)
	waitHealth(t, a, api.RoleLeader, a.srv.URL)
	waitHealth(t, b, api.RoleFollower, a.srv.URL)
	ctx := t.Context()
	r := rand.New(rand.NewPCG(5, 8))
	vm := func() string { return fmt.Sprintf("vm-%02d", r.IntN(24)) }
	fn := func() string { return fmt.Sprintf("f%d", r.IntN(4)) }
	for range 150 {
		var err error
		switch r.IntN(10) {
		case 0, 1:
			_, err = a.m.RegisterVM(ctx, vm(), api.RegisterRequest{Addr: fmt.Sprintf("10.0.0.%d:7071", 1+r.IntN(3))})
		case 2:
			err = a.m.LeaveVM(ctx, vm())
		case 3:
			_, err = a.m.PutFunction(ctx, fn(), api.FunctionRequest{Image: fmt.Sprintf("reg/f:%d", r.IntN(2)), Stripes: 1 + r.IntN(3)})
		case 4:
			err = a.m.DeleteFunction(ctx, fn())
		case 5, 6, 7:
			_, err = a.m.Scale(ctx, fn(), api.ScaleRequest{Count: 1 + r.IntN(3)})
		case 8, 9:
			f := fn()
			if tr, terr := a.m.Tree(f); terr == nil && len(tr.Nodes) > 0 {
				err = a.m.Release(ctx, f, tr.Nodes[r.IntN(len(tr.Nodes))].VM)
			}
		}
		if c := StatusCode(err); err != nil && c != 404 && c != 409 {
			t.Fatalf("the stream: %v", err)
		}
	}
	want := copyOf(t, a.m)
	t.Logf("the leader has %d VMs and %d functions", len(a.m.VMs()), len(a.m.Functions()))
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		got := copyOf(t, b.m)
		if got == want {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the follower's copy:\n%s\nthe leader's state:\n%s", got, want)
		}
		<-tick.C
	}
	b.m.mu.Lock()
	loads := b.m.follow.loads
	b.m.mu.Unlock()
	if loads != 1 {
		t.Errorf("the follower loaded the whole state %d times, want once: it did not apply the changes", loads)
	}
}

// copyOf returns m's VMs, functions and trees as JSON.
func copyOf(t *testing.T, m *Manager) string {
	t.Helper()
	out := map[string]any{"vms": m.VMs(), "functions": m.Functions()}
	for _, f := range m.Functions() {
		tr, err := m.Tree(f.Function)
		if err != nil {
			t.Fatal(err)
		}
		out["tree "+f.Function] = tr
	}
	js, err := json.MarshalIndent(out, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	return string(js)
}
