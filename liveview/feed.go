// Package liveview is the manager's live view: a Server-Sent Events stream
// of snapshots and the single page (embedded, no outside requests) that
// draws them.
//
// One Feed builds each snapshot once, whatever the number of open pages,
// at most every Interval, and only while someone watches; a slow client
// gets the newest snapshot, never a backlog. So 10 pages cost what one
// does, and a page costs nothing between changes.
package liveview

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// DefaultInterval is how often a snapshot is built while pages watch.
const DefaultInterval = 250 * time.Millisecond

// Feed shares snapshots among the streams of every open page.
type Feed struct {
	Build    func() any    // the snapshot, encoded as JSON
	Interval time.Duration // DefaultInterval if 0

	mu      sync.Mutex
	subs    map[chan []byte]struct{}
	latest  []byte
	running bool
}

// subscribe returns a channel of the newest snapshots (one slot: a slow
// reader skips what it missed) and its cancel function.
func (f *Feed) subscribe() (chan []byte, func()) {
	ch := make(chan []byte, 1)
	f.mu.Lock()
	if f.subs == nil {
		f.subs = map[chan []byte]struct{}{}
	}
	f.subs[ch] = struct{}{}
	if f.latest != nil {
		ch <- f.latest
	}
	if !f.running {
		f.running = true
		go f.run()
	}
	f.mu.Unlock()
	return ch, func() {
		f.mu.Lock()
		delete(f.subs, ch)
		f.mu.Unlock()
	}
}

// run builds snapshots until nobody watches, sending each changed one.
func (f *Feed) run() {
	every := f.Interval
	if every <= 0 {
		every = DefaultInterval
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		b, err := json.Marshal(f.Build())
		f.mu.Lock()
		if len(f.subs) == 0 {
			f.running, f.latest = false, nil
			f.mu.Unlock()
			return
		}
		if err == nil && !bytes.Equal(b, f.latest) {
			f.latest = b
			for ch := range f.subs {
				select { // drop the one not read yet: only the newest counts
				case <-ch:
				default:
				}
				ch <- b
			}
		}
		f.mu.Unlock()
		<-t.C
	}
}

// ServeHTTP streams snapshots as "snapshot" events until the client goes.
func (f *Feed) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	// The server's read timeout would end the stream; a stream reads
	// nothing after its request.
	rc.SetReadDeadline(time.Time{})
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	ch, cancel := f.subscribe()
	defer cancel()
	fmt.Fprint(w, "retry: 2000\n\n")
	if err := rc.Flush(); err != nil {
		return
	}
	for {
		select {
		case <-r.Context().Done():
			return
		case b := <-ch:
			if err := send(w, rc, b); err != nil {
				slog.Debug("live view client gone", "remote", r.RemoteAddr, "err", err)
				return
			}
		}
	}
}

func send(w http.ResponseWriter, rc *http.ResponseController, b []byte) error {
	if _, err := fmt.Fprintf(w, "event: snapshot\ndata: %s\n\n", b); err != nil {
		return err
	}
	return rc.Flush()
}

// Watching reports whether any page watches now (for tests and metrics).
func (f *Feed) Watching() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subs)
}
