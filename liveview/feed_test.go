package liveview

import (
	"bufio"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A Feed builds each snapshot once for all watchers, sends only changed
// ones, hands a slow watcher the newest, and stops building when nobody
// watches.
func TestFeedSharesCoalescesAndStops(t *testing.T) {
	var builds atomic.Int64
	var mu sync.Mutex
	value := 0
	f := &Feed{Interval: time.Millisecond, Build: func() any {
		builds.Add(1)
		mu.Lock()
		defer mu.Unlock()
		return value
	}}
	set := func(v int) { mu.Lock(); value = v; mu.Unlock() }

	var subs []chan []byte
	var cancels []func()
	for range 10 {
		ch, cancel := f.subscribe()
		subs, cancels = append(subs, ch), append(cancels, cancel)
	}
	for _, ch := range subs {
		if got := string(<-ch); got != "0" {
			t.Fatalf("first snapshot %q, want 0", got)
		}
	}
	// Unchanged snapshots are not sent.
	start, since := builds.Load(), time.Now()
	for builds.Load() < start+20 {
		time.Sleep(time.Millisecond) // waiting for the feed's own ticker, not synchronising with it
	}
	for i, ch := range subs {
		select {
		case b := <-ch:
			t.Fatalf("watcher %d got %q with nothing changed", i, b)
		default:
		}
	}
	// Ten watchers, one build per tick: no more builds than ticks passed
	// (a ticker drops the ticks a slow builder misses, never adds any).
	built, ticks := builds.Load()-start, int64(time.Since(since)/f.Interval)
	if built > ticks+2 {
		t.Errorf("%d builds in %d ticks with 10 watchers, want at most one a tick", built, ticks)
	}
	// A watcher that reads late gets the newest value, not a backlog.
	for v := 1; v <= 5; v++ {
		set(v)
		for b := builds.Load(); builds.Load() < b+2; {
			time.Sleep(time.Millisecond)
		}
	}
	if got := string(<-subs[0]); got != "5" {
		t.Errorf("a late reader got %q, want the newest, 5", got)
	}
	for _, c := range cancels {
		c()
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		f.mu.Lock()
		running := f.running
		f.mu.Unlock()
		if !running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the feed still builds with nobody watching")
		}
		time.Sleep(time.Millisecond)
	}
	if n := f.Watching(); n != 0 {
		t.Errorf("%d watchers after every cancel", n)
	}
}

// The stream speaks Server-Sent Events and ends with its client.
func TestFeedServesEvents(t *testing.T) {
	f := &Feed{Interval: time.Millisecond, Build: func() any { return map[string]int{"vms": 3} }}
	srv := httptest.NewServer(f)
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("content type %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	var lines []string
	for len(lines) < 5 && sc.Scan() {
		lines = append(lines, sc.Text())
	}
	want := "retry: 2000||event: snapshot|data: {\"vms\":3}|"
	if got := strings.Join(lines, "|"); got != want {
		t.Errorf("stream starts %q, want %q", got, want)
	}
	cancel()
	resp.Body.Close()
	deadline := time.Now().Add(5 * time.Second)
	for f.Watching() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the stream's watcher stayed after its client left")
		}
		time.Sleep(time.Millisecond)
	}
}
