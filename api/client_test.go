package api

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// deadAddr is an address nothing listens on: a listener opened and closed.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// counting serves the VM list, answering status code, and counts calls.
func counting(t *testing.T, code int) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.WriteHeader(code)
		w.Write([]byte(`{"vms":[]}`))
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

// With several managers, a call that cannot connect moves on to the next
// and stays there; a call that reached a manager is never sent again,
// whatever its answer or fate.
func TestClientMovesOnOnlyWhenItCannotConnect(t *testing.T) {
	ctx := context.Background()
	live, liveCalls := counting(t, http.StatusOK)
	c := NewClient("http://" + deadAddr(t) + ", " + live.URL + "/")
	if _, err := c.VMs(ctx); err != nil {
		t.Fatalf("with the first manager down: %v", err)
	}
	if c.Base != live.URL || liveCalls.Load() != 1 {
		t.Errorf("Base %s after the failover (want %s), live manager saw %d calls", c.Base, live.URL, liveCalls.Load())
	}

	failing, failingCalls := counting(t, http.StatusServiceUnavailable)
	c = NewClient(failing.URL + "," + live.URL)
	liveCalls.Store(0)
	if _, err := c.VMs(ctx); err == nil {
		t.Error("a 503 answer was not returned")
	}
	if failingCalls.Load() != 1 || liveCalls.Load() != 0 || c.Base != failing.URL {
		t.Errorf("after a 503: %d calls to it, %d to the next, Base %s: an answered call moved on", failingCalls.Load(), liveCalls.Load(), c.Base)
	}

	// A manager that takes the request and drops the connection: the
	// request may have taken effect, so it is not sent elsewhere.
	dropper := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	defer dropper.Close()
	c = NewClient(dropper.URL + "," + live.URL)
	liveCalls.Store(0)
	if _, err := c.Scale(ctx, "f", ScaleRequest{Count: 1}); err == nil {
		t.Error("a dropped request reported success")
	}
	if liveCalls.Load() != 0 {
		t.Errorf("a request that reached a manager was sent again to another (%d calls)", liveCalls.Load())
	}
}

func TestSplitManagers(t *testing.T) {
	got := SplitManagers("a:1, https://b:2/ ,http://c:3")
	want := []string{"https://a:1", "https://b:2", "http://c:3"}
	if len(got) != len(want) {
		t.Fatalf("%q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("%q, want %q", got, want)
		}
	}
}
