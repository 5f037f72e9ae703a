package manager

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/manager/store"
)

// benchManager is a bbolt-backed manager with n VMs and one function, served
// over real HTTP on loopback.
func benchManager(b *testing.B, n int) (*api.Client, *Manager) {
	b.Helper()
	st, err := store.OpenBolt(filepath.Join(b.TempDir(), "m.db"))
	if err != nil {
		b.Fatal(err)
	}
	m, err := New(context.Background(), st, Options{VMTimeout: time.Hour, Pinner: fakePins})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(m.Handler())
	b.Cleanup(func() { srv.Close(); m.Close(); st.Close() })
	c := api.NewClient(srv.URL)
	c.HTTP = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	ctx := context.Background()
	for i := range n {
		if _, err := c.RegisterVM(ctx, fmt.Sprintf("vm-%05d", i), "127.0.0.1:9", nil); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := c.PutFunction(ctx, "f", api.FunctionRequest{Image: "reg/f:1"}); err != nil {
		b.Fatal(err)
	}
	return c, m
}

// BenchmarkScaleRelease measures a scale-out of one VM (manager picks it)
// followed by its release: two durable writes per iteration.
func BenchmarkScaleRelease(b *testing.B) {
	for _, n := range []int{1000} {
		b.Run(fmt.Sprintf("vms=%d", n), func(b *testing.B) {
			c, _ := benchManager(b, n)
			ctx := context.Background()
			if _, err := c.Scale(ctx, "f", api.ScaleRequest{Count: n / 2}); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for b.Loop() {
				out, err := c.Scale(ctx, "f", api.ScaleRequest{Count: 1})
				if err != nil {
					b.Fatal(err)
				}
				if err := c.Release(ctx, "f", out.Added[0].VM); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(2*b.N)/b.Elapsed().Seconds(), "requests/s")
		})
	}
}

// BenchmarkHeartbeat measures heartbeats from many VMs in parallel.
func BenchmarkHeartbeat(b *testing.B) {
	c, _ := benchManager(b, 1000)
	ctx := context.Background()
	if _, err := c.Scale(ctx, "f", api.ScaleRequest{Count: 1000}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := c.Heartbeat(ctx, fmt.Sprintf("vm-%05d", i%1000)); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "requests/s")
}
