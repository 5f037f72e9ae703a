package manager

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
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
// followed by its release: two durable writes per iteration, with one tree
// and with two stripes (whose nodes the manager diffs at every write).
func BenchmarkScaleRelease(b *testing.B) {
	for _, n := range []int{1000} {
		for _, k := range []int{1, 2} {
			b.Run(fmt.Sprintf("vms=%d/stripes=%d", n, k), func(b *testing.B) { benchScaleRelease(b, n, k) })
		}
	}
}

func benchScaleRelease(b *testing.B, n, k int) {
	c, _ := benchManager(b, n)
	ctx := context.Background()
	if _, err := c.PutFunction(ctx, "f", api.FunctionRequest{Image: "reg/f:1", Stripes: k}); err != nil {
		b.Fatal(err)
	}
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

// BenchmarkLiveSnapshot measures one live view snapshot of a function on
// 1,000 VMs, built and encoded: the feed does this at most four times a
// second however many pages watch, so cpu_share_4hz is the share of one
// core the live view costs the manager.
func BenchmarkLiveSnapshot(b *testing.B) {
	c, m := benchManager(b, 1000)
	if _, err := c.Scale(context.Background(), "f", api.ScaleRequest{Count: 1000}); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := json.Marshal(m.Snapshot()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(4*float64(b.Elapsed().Nanoseconds())/float64(b.N)/1e9, "cpu_share_4hz")
}

// BenchmarkHeartbeatWatched measures heartbeats on 1,000 VMs with no page
// and with ten pages watching the live view, side by side.
func BenchmarkHeartbeatWatched(b *testing.B) {
	for _, pages := range []int{0, 10} {
		b.Run(fmt.Sprintf("pages=%d", pages), func(b *testing.B) {
			c, m := benchManager(b, 1000)
			ctx := context.Background()
			if _, err := c.Scale(ctx, "f", api.ScaleRequest{Count: 1000}); err != nil {
				b.Fatal(err)
			}
			for range pages {
				srv := httptest.NewServer(m.live)
				resp, err := http.Get(srv.URL)
				if err != nil {
					b.Fatal(err)
				}
				go io.Copy(io.Discard, resp.Body) // a page reading its stream
				b.Cleanup(func() { resp.Body.Close(); srv.Close() })
			}
			i := 0
			for b.Loop() {
				if _, err := c.Heartbeat(ctx, fmt.Sprintf("vm-%05d", i%1000)); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
