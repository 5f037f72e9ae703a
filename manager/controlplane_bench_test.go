package manager

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/internal/testenv"
	"github.com/faasnet/faasnet/manager/store"
)

// BenchmarkControlPlane measures what issue 13 asks of a manager, over real
// HTTP on loopback, on each store: bbolt (one manager, its file) and a
// one-member etcd (one elected manager, every write fenced on its leader
// key), with 1,000 and 10,000 registered VMs. Run it with
//
//	go test ./manager -run '^$' -bench ControlPlane -benchtime 3s
//
// The names put the two stores of one figure on adjacent lines:
//
//   - heartbeat: heartbeats from every VM, 8 in flight; heartbeats/s. A
//     heartbeat is not a store write (liveness stays in the leader's memory).
//   - scale: one scale-out of a VM the manager picks, then its release, in a
//     loop: durable writes one after the other; scale_ops/s counts each.
//   - scale-parallel: the same from 8 clients on 8 functions at once.
//
// Half of the VMs are in the function's trees (two stripes, the manager
// command's default), so that heartbeats carry assignments.
func BenchmarkControlPlane(b *testing.B) {
	ops := []struct {
		name string
		run  func(b *testing.B, c *api.Client, n int)
	}{
		{"heartbeat", benchHeartbeats},
		{"scale", func(b *testing.B, c *api.Client, _ int) { benchScale(b, c, 1) }},
		{"scale-parallel", func(b *testing.B, c *api.Client, _ int) { benchScale(b, c, 8) }},
	}
	for _, op := range ops {
		for _, n := range []int{1000, 10000} {
			for _, backend := range []string{"bolt", "etcd"} {
				b.Run(fmt.Sprintf("%s/vms=%d/store=%s", op.name, n, backend), func(b *testing.B) {
					c := controlPlane(b, backend, n)
					op.run(b, c, n)
				})
			}
		}
	}
}

// benchFunctions is how many functions the control plane benchmark defines:
// one per client of scale-parallel.
const benchFunctions = 8

// controlPlane starts a manager on the named store with n VMs registered
// and benchFunctions functions, the first on n/2 of them, and returns a
// client of its API.
func controlPlane(b *testing.B, backend string, n int) *api.Client {
	b.Helper()
	ctx := b.Context()
	opts := Options{VMTimeout: time.Hour, Pinner: fakePins, Stripes: api.DefaultStripes, Logger: slog.New(slog.DiscardHandler)}
	var st store.Store
	switch backend {
	case "bolt":
		s, err := store.OpenBolt(filepath.Join(b.TempDir(), "m.db"))
		if err != nil {
			b.Fatal(err)
		}
		st = s
	case "etcd":
		s, err := store.OpenEtcd(ctx, store.EtcdOptions{Endpoints: testenv.StartEtcd(b, 1).Endpoints(), Elect: true})
		if err != nil {
			b.Fatal(err)
		}
		el, err := s.Elector("http://bench", 5*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := el.Campaign(ctx); err != nil {
			b.Fatal(err)
		}
		opts.Election, st = el, s
	}
	b.Cleanup(func() { st.Close() })
	registerVMs(b, st, n)
	m, err := New(ctx, st, opts)
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(m.Handler())
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.Run(runCtx)
	}()
	b.Cleanup(func() { stop(); <-done; srv.Close(); m.Close() })
	waitLeading(b, m)
	c := api.NewClient(srv.URL)
	c.HTTP = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	for i := range benchFunctions {
		if _, err := c.PutFunction(ctx, benchFn(i), api.FunctionRequest{Image: "reg/f:1"}); err != nil {
			b.Fatal(err)
		}
	}
	// In steps, each one etcd transaction of a bounded size.
	for added := 0; added < n/2; added += 500 {
		if _, err := c.Scale(ctx, benchFn(0), api.ScaleRequest{Count: min(500, n/2-added)}); err != nil {
			b.Fatal(err)
		}
	}
	return c
}

func benchFn(i int) string { return fmt.Sprintf("f%d", i) }

func benchVM(i int) string { return fmt.Sprintf("vm-%05d", i) }

// registerVMs writes n VMs into st directly, 100 to a batch: registering
// them through the API would time the store's writes, not the benchmark's.
func registerVMs(b *testing.B, st store.Store, n int) {
	b.Helper()
	var batch store.Batch
	for i := range n {
		batch.PutVMs = append(batch.PutVMs, store.VM{Name: benchVM(i), Addr: "10.1.0.1:7071", Capacity: api.DefaultCapacity})
		if len(batch.PutVMs) == 100 || i == n-1 {
			if err := st.Apply(b.Context(), batch); err != nil {
				b.Fatal(err)
			}
			batch = store.Batch{}
		}
	}
}

// waitLeading waits until m leads (at once without an election).
func waitLeading(b *testing.B, m *Manager) {
	b.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for !m.Leading() {
		if time.Now().After(deadline) {
			b.Fatal("the manager did not lead within 10 s")
		}
		<-tick.C
	}
}

func benchHeartbeats(b *testing.B, c *api.Client, n int) {
	ctx := b.Context()
	var next atomic.Int64
	b.SetParallelism(4) // 8 in flight on 2 cores
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			vm := benchVM(int(next.Add(1)) % n)
			if _, err := c.Heartbeat(ctx, vm); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "heartbeats/s")
}

// benchScale scales out and in again: from one client on one function,
// or from 8 at once, each on its own function.
func benchScale(b *testing.B, c *api.Client, clients int) {
	ctx := b.Context()
	var ops atomic.Int64
	step := func(fn string) bool {
		out, err := c.Scale(ctx, fn, api.ScaleRequest{Count: 1})
		if err == nil {
			err = c.Release(ctx, fn, out.Added[0].VM)
		}
		if err != nil {
			b.Error(err)
			return false
		}
		ops.Add(2)
		return true
	}
	if clients == 1 {
		for b.Loop() {
			if !step(benchFn(0)) {
				return
			}
		}
	} else {
		var next atomic.Int64
		b.SetParallelism((clients + 1) / 2) // goroutines: GOMAXPROCS (2 here) times this
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			fn := benchFn(int(next.Add(1)-1) % benchFunctions)
			for pb.Next() {
				if !step(fn) {
					return
				}
			}
		})
	}
	b.ReportMetric(float64(ops.Load())/b.Elapsed().Seconds(), "scale_ops/s")
}
