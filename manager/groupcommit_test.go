package manager

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/manager/store"
)

// TestMergeIsSequential checks that a merged batch leaves a store as the
// batches applied one after the other do, for random streams of puts and
// deletes of the same few VMs, functions and nodes.
func TestMergeIsSequential(t *testing.T) {
	ctx := t.Context()
	r := rand.New(rand.NewPCG(11, 17))
	for trial := range 300 {
		seq, merged := store.NewMemory(), store.NewMemory()
		var all store.Batch
		fns := map[string]bool{}
		for range 1 + r.IntN(6) {
			b := randomBatch(r, fns)
			if err := seq.Apply(ctx, b); err != nil {
				t.Fatalf("trial %d: applying %+v: %v", trial, b, err)
			}
			merge(&all, b)
		}
		if err := merged.Apply(ctx, all); err != nil {
			t.Fatalf("trial %d: applying the merged %+v: %v", trial, all, err)
		}
		want, _ := seq.Load(ctx)
		got, _ := merged.Load(ctx)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("trial %d: merged batch gives\n%+v\none by one\n%+v", trial, got, want)
		}
	}
}

// randomBatch returns a valid batch on the VMs v0..v3 and functions f0..f2;
// fns holds the functions that exist, and is updated.
func randomBatch(r *rand.Rand, fns map[string]bool) store.Batch {
	var b store.Batch
	pick := func(p string, n int) string { return fmt.Sprintf("%s%d", p, r.IntN(n)) }
	for range r.IntN(4) {
		switch r.IntN(8) {
		case 0:
			b.PutVMs = append(b.PutVMs, store.VM{Name: pick("v", 4), Addr: pick("10.0.0.", 9) + ":1", Capacity: 1 + r.IntN(3)})
		case 1:
			b.DeleteVMs = append(b.DeleteVMs, pick("v", 4))
		case 2:
			fn := pick("f", 3)
			b.PutFunctions = append(b.PutFunctions, store.Function{Name: fn, Image: "reg/f:1", Generation: uint64(r.IntN(9))})
			fns[fn] = true
		case 3:
			fn := pick("f", 3)
			if !slicesContain(b.PutFunctions, fn) && !slices.ContainsFunc(b.PutNodes, func(n store.Node) bool { return n.Function == fn }) {
				b.DeleteFunctions = append(b.DeleteFunctions, fn)
				delete(fns, fn)
			}
		case 4, 5:
			fn := pick("f", 3)
			if fns[fn] {
				b.PutNodes = append(b.PutNodes, store.Node{Function: fn, VM: pick("v", 4), Parent: pick("v", 4), Generation: uint64(r.IntN(9))})
			}
		case 6:
			b.DeleteNodes = append(b.DeleteNodes, store.NodeKey{Function: pick("f", 3), VM: pick("v", 4)})
		case 7:
			if r.IntN(2) == 0 {
				b.PutCerts = append(b.PutCerts, store.Cert{Serial: pick("c", 3), VM: pick("v", 4), Key: "k", NotAfter: time.Unix(int64(r.IntN(9)), 0).UTC()})
			} else {
				b.DeleteCerts = append(b.DeleteCerts, pick("c", 3))
			}
		}
	}
	b.Revision = uint64(r.IntN(3))
	return b
}

func slicesContain(fs []store.Function, name string) bool {
	for _, f := range fs {
		if f.Name == name {
			return true
		}
	}
	return false
}

// gateStore holds every Apply until the test lets it go, and fails it if
// told to.
type gateStore struct {
	store.Store
	entered chan struct{} // an Apply waits
	release chan error    // what the waiting Apply returns (nil: applies)
}

func (s *gateStore) Apply(ctx context.Context, b store.Batch) error {
	s.entered <- struct{}{}
	if err := <-s.release; err != nil {
		return err
	}
	return s.Store.Apply(ctx, b)
}

// TestGroupCommit checks the group commit on a store whose writes the test
// holds: changes made while a group is being written are stored together
// next; a heartbeat does not answer with a change before it is stored;
// and a group that fails fails the changes queued behind it, and the
// state in memory is the store's again.
func TestGroupCommit(t *testing.T) {
	ctx := t.Context()
	mem := store.NewMemory()
	m, err := New(ctx, mem, Options{VMTimeout: time.Hour, Pinner: fakePins})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for i := range 6 {
		if _, err := m.RegisterVM(ctx, fmt.Sprintf("vm-%d", i), api.RegisterRequest{Addr: "10.0.0.1:7071"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, fn := range []string{"a", "b", "c"} {
		if _, err := m.PutFunction(ctx, fn, api.FunctionRequest{Image: "reg/" + fn + ":1"}); err != nil {
			t.Fatal(err)
		}
	}
	gs := &gateStore{Store: mem, entered: make(chan struct{}), release: make(chan error)}
	m.store = gs

	scale := func(fn, vm string) <-chan error {
		done := make(chan error, 1)
		go func() {
			_, err := m.Scale(ctx, fn, api.ScaleRequest{VMs: []string{vm}})
			done <- err
		}()
		return done
	}
	// The first change is being written; two more come meanwhile.
	first := scale("a", "vm-0")
	<-gs.entered
	second, third := scale("b", "vm-1"), scale("c", "vm-2")
	waitQueued(t, m, 2)
	hb := make(chan api.Assignments, 1)
	go func() {
		out, err := m.Heartbeat("vm-1")
		if err != nil {
			t.Error(err)
		}
		hb <- out
	}()
	gs.release <- nil
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	<-gs.entered // the second and third, together
	// A negative check: an answer would come in microseconds.
	select {
	case out := <-hb:
		t.Fatalf("vm-1's heartbeat answered %+v before its change was stored", out)
	case <-time.After(200 * time.Millisecond):
	}
	gs.release <- nil
	for _, done := range []<-chan error{second, third} {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if out := <-hb; len(out.Assignments) != 1 || out.Assignments[0].Function != "b" {
		t.Fatalf("vm-1's heartbeat: %+v, want its assignment of b", out)
	}

	// A failed group fails what was queued behind it.
	fourth := scale("a", "vm-3")
	<-gs.entered
	fifth := scale("b", "vm-4")
	waitQueued(t, m, 2)
	gs.release <- errors.New("disk on fire")
	for _, done := range []<-chan error{fourth, fifth} {
		if err := <-done; StatusCode(err) != http.StatusServiceUnavailable {
			t.Errorf("a change of the failed group, or behind it: %v, want 503", err)
		}
	}
	want, err := mem.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, fn := range []string{"a", "b"} {
		tr, err := m.Tree(fn)
		if err != nil {
			t.Fatal(err)
		}
		stored := 0
		for _, n := range want.Nodes {
			if n.Function == fn {
				stored++
			}
		}
		if len(tr.Nodes) != 1 || stored != 1 {
			t.Errorf("%s after the failed group: %d VMs in memory, %d stored; want the 1 of before", fn, len(tr.Nodes), stored)
		}
	}
}

// waitQueued waits until n groups are queued.
func waitQueued(t *testing.T, m *Manager, n int) {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for {
		m.mu.Lock()
		got := len(m.writes.queue)
		m.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d groups queued, want %d", got, n)
		}
		<-tick.C
	}
}
