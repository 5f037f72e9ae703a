package manager

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/internal/testenv"
	"github.com/faasnet/faasnet/manager/store"
)

// BenchmarkFollowerLag measures how long a follower's copy lags the leader
// on a one-member etcd with 10,000 VMs, half of them in one function of two
// stripes: each iteration is a scale-out of one VM and its release on the
// leader, and the time from each one's answer until the follower's copy
// has its revision. Run it with
//
//	go test ./manager -run '^$' -bench FollowerLag -benchtime 100x
func BenchmarkFollowerLag(b *testing.B) {
	const n = 10000
	ctx := b.Context()
	ep := testenv.StartEtcd(b, 1).Endpoints()
	open := func() *store.Etcd {
		st, err := store.OpenEtcd(ctx, store.EtcdOptions{Endpoints: ep, Elect: true})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { st.Close() })
		return st
	}
	run := func(st *store.Etcd, lead bool) *Manager {
		el, err := st.Elector("http://bench", 5*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		if lead {
			if _, err := el.Campaign(ctx); err != nil {
				b.Fatal(err)
			}
			registerVMs(b, st, n)
		}
		m, err := New(ctx, st, Options{VMTimeout: time.Hour, Pinner: fakePins, Stripes: api.DefaultStripes, Election: el, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		runCtx, stop := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); m.Run(runCtx) }()
		b.Cleanup(func() { stop(); <-done; m.Close() })
		return m
	}
	leader := run(open(), true)
	waitLeading(b, leader)
	c := api.NewClient(httptest.NewServer(leader.Handler()).URL)
	if _, err := c.PutFunction(ctx, "f", api.FunctionRequest{Image: "reg/f:1"}); err != nil {
		b.Fatal(err)
	}
	for added := 0; added < n/2; added += 500 {
		if _, err := c.Scale(ctx, "f", api.ScaleRequest{Count: 500}); err != nil {
			b.Fatal(err)
		}
	}
	follower := run(open(), false)
	revision := func(m *Manager) uint64 {
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.revision
	}
	caughtUp := func() time.Duration {
		want, start := revision(leader), time.Now()
		deadline := start.Add(30 * time.Second)
		for revision(follower) < want {
			if time.Now().After(deadline) {
				b.Fatalf("the follower is at revision %d 30 s after the leader reached %d", revision(follower), want)
			}
			time.Sleep(100 * time.Microsecond) // polling a measurement, not synchronising
		}
		return time.Since(start)
	}
	caughtUp()
	var lags []time.Duration
	for b.Loop() {
		out, err := leader.Scale(ctx, "f", api.ScaleRequest{Count: 1})
		if err != nil {
			b.Fatal(err)
		}
		lags = append(lags, caughtUp())
		if err := leader.Release(ctx, "f", out.Added[0].VM); err != nil {
			b.Fatal(err)
		}
		lags = append(lags, caughtUp())
	}
	slices.Sort(lags)
	b.ReportMetric(float64(lags[len(lags)/2].Microseconds())/1000, "lag_median_ms")
	b.ReportMetric(float64(lags[len(lags)-1].Microseconds())/1000, "lag_max_ms")
}
