package manager

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/internal/testenv"
	"github.com/faasnet/faasnet/manager/store"
)

// BenchmarkControlPlane measures what issue 13 asks of a manager, on each
// store: bbolt (one manager, its file) and a one-member etcd (one elected
// manager, every write fenced on its leader key), with 1,000 and 10,000
// registered VMs. Run it with
//
//	go test ./manager -run '^$' -bench ControlPlane -benchtime 3s
//
// It ends with a table of both stores side by side. The figures:
//
//   - heartbeat: heartbeats from every VM over HTTP on loopback, 8 in
//     flight, the clients in the same process (on a small machine they
//     take half the CPU); heartbeats/s. A heartbeat is not a store write:
//     liveness stays in the leader's memory.
//   - heartbeat-handler: the same through the manager's HTTP handler
//     without the network and the client: what the manager itself spends.
//   - scale: one scale-out of a VM the manager picks, then its release, in
//     a loop from one client; scale_ops/s counts each, every one durable
//     before it is answered.
//   - scale-parallel: the same from 8 clients at once, each on its own
//     function; their changes are stored in groups (see groupcommit.go).
//
// Half of the VMs are in the first function's trees (two stripes, the
// manager command's default), so that heartbeats carry assignments.
func BenchmarkControlPlane(b *testing.B) {
	ops := []struct {
		name, unit string
		run        func(b *testing.B, p *plane, n int)
	}{
		{"heartbeat", "heartbeats/s", func(b *testing.B, p *plane, n int) { benchHeartbeats(b, p.client, n) }},
		{"heartbeat-handler", "heartbeats/s", func(b *testing.B, p *plane, n int) { benchHeartbeatHandler(b, p.handler, n) }},
		{"scale", "scale_ops/s", func(b *testing.B, p *plane, _ int) { benchScale(b, p.client, 1) }},
		{"scale-parallel", "scale_ops/s", func(b *testing.B, p *plane, _ int) { benchScale(b, p.client, 8) }},
	}
	stores := []string{"bolt", "etcd"}
	results := map[string]float64{}
	for _, n := range []int{1000, 10000} {
		for _, backend := range stores {
			b.Run(fmt.Sprintf("vms=%d/store=%s", n, backend), func(b *testing.B) {
				p := controlPlane(b, backend, n)
				for _, op := range ops {
					b.Run(op.name, func(b *testing.B) {
						op.run(b, p, n)
						results[fmt.Sprint(op.name, n, backend)] = lastRate
					})
				}
			})
		}
	}
	var out strings.Builder
	fmt.Fprintf(&out, "\n%-18s %6s %14s %14s  %s\n", "", "VMs", "bolt", "etcd (1 member)", "unit")
	fmt.Fprintf(&out, "(go test ./manager -run '^$' -bench ControlPlane -benchtime %s; GOMAXPROCS %d)\n", benchtime(), runtime.GOMAXPROCS(0))
	for _, op := range ops {
		for _, n := range []int{1000, 10000} {
			fmt.Fprintf(&out, "%-18s %6d %14.0f %14.0f  %s\n", op.name, n, results[fmt.Sprint(op.name, n, "bolt")], results[fmt.Sprint(op.name, n, "etcd")], op.unit)
		}
	}
	fmt.Print(out.String()) // after the benchmark lines, for a person to read
}

// benchtime returns the -test.benchtime flag's value.
func benchtime() string {
	if f := flag.Lookup("test.benchtime"); f != nil {
		return f.Value.String()
	}
	return "?"
}

// lastRate is the rate the last benchmark function reported.
var lastRate float64

// plane is a manager under benchmark.
type plane struct {
	client  *api.Client
	handler http.Handler
}

// benchFunctions is how many functions the control plane benchmark defines:
// one per client of scale-parallel.
const benchFunctions = 8

// controlPlane starts a manager on the named store with n VMs registered
// and benchFunctions functions, the first on n/2 of them, and returns a
// client of its API.
func controlPlane(b *testing.B, backend string, n int) *plane {
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
	return &plane{client: c, handler: m.Handler()}
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
	lastRate = float64(b.N) / b.Elapsed().Seconds()
	b.ReportMetric(lastRate, "heartbeats/s")
}

func benchHeartbeatHandler(b *testing.B, h http.Handler, n int) {
	var next atomic.Int64
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			vm := benchVM(int(next.Add(1)) % n)
			req := httptest.NewRequest(http.MethodPost, api.Prefix+"/vms/"+vm+"/heartbeat", nil)
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if w.Code != http.StatusOK {
				b.Errorf("heartbeat of %s: %d %s", vm, w.Code, w.Body)
				return
			}
		}
	})
	lastRate = float64(b.N) / b.Elapsed().Seconds()
	b.ReportMetric(lastRate, "heartbeats/s")
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
	lastRate = float64(ops.Load()) / b.Elapsed().Seconds()
	b.ReportMetric(lastRate, "scale_ops/s")
}
