package runc

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// flaky answers status fail to the first n requests, then 200.
func flaky(n int64, fail int) (http.Handler, *atomic.Int64) {
	var seen atomic.Int64
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if seen.Add(1) <= n {
			w.WriteHeader(fail)
			return
		}
		w.Write([]byte("ok"))
	}), &seen
}

func TestWaitReady(t *testing.T) {
	for _, tc := range []struct {
		name      string
		failFirst int64
		status    int
		timeout   time.Duration
		wantErr   string
		wantSeen  int64 // at least
	}{
		{name: "at once", status: 500, timeout: 10 * time.Second, wantSeen: 1},
		{name: "after 503s", failFirst: 5, status: 503, timeout: 10 * time.Second, wantSeen: 6},
		{name: "never", failFirst: 1 << 40, status: 500, timeout: time.Second, wantErr: "status 500"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, seen := flaky(tc.failFirst, tc.status)
			srv := httptest.NewServer(h)
			defer srv.Close()
			ctx, cancel := context.WithTimeout(t.Context(), tc.timeout)
			defer cancel()
			d, err := WaitReady(ctx, srv.URL+"/healthz")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("WaitReady: %v, want an error wrapping DeadlineExceeded and naming %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if seen.Load() < tc.wantSeen || d <= 0 {
				t.Errorf("ready after %v and %d requests, want at least %d requests", d, seen.Load(), tc.wantSeen)
			}
		})
	}
}

// TestWaitReadyLateListener probes a port before anything listens on it,
// as a just-started container's is.
func TestWaitReadyLateListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	result := make(chan error, 1)
	go func() {
		_, err := WaitReady(t.Context(), "http://"+addr+"/")
		result <- err
	}()
	// The probe fails with "connection refused" until the server below
	// listens; the test would time out if WaitReady gave up.
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("port %s was taken meanwhile: %v", addr, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})}
	go srv.Serve(ln2)
	defer srv.Close()
	if err := <-result; err != nil {
		t.Fatal(err)
	}
}

func TestWaitReadyExited(t *testing.T) {
	exited := make(chan struct{})
	close(exited)
	_, err := waitReady(t.Context(), "http://127.0.0.1:1/", exited)
	if !errors.Is(err, ErrExited) {
		t.Fatalf("waitReady with the process gone: %v, want ErrExited", err)
	}
}

func TestWaitReadyBadURL(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := WaitReady(ctx, "http://[::1"); err == nil || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitReady with a malformed URL: %v, want an immediate error", err)
	}
}

func BenchmarkProbe(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	for b.Loop() {
		if _, err := WaitReady(b.Context(), srv.URL); err != nil {
			b.Fatal(err)
		}
	}
}
