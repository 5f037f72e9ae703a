// Package logthrottle bounds how often a kind of log line is written.
//
// Refusals of hostile requests are logged, and anyone who can reach a
// listener can make them: unbounded, they would fill the disk or drown
// the lines that matter. Metrics still count every refusal; the log keeps
// the first of each kind per interval and says how many it left out.
package logthrottle

import (
	"sync"
	"time"
)

// Throttle allows one line per key per Interval. It is safe for
// concurrent use; the zero value allows one a second.
type Throttle struct {
	Interval time.Duration

	mu   sync.Mutex
	keys map[string]*entry
}

type entry struct {
	last    time.Time
	dropped int
}

// maxKeys bounds the memory of keys; callers use a few fixed reasons.
const maxKeys = 1024

// Allow reports whether a line of kind key may be written at now, and
// how many lines of that kind were left out since the last one written.
func (t *Throttle) Allow(key string, now time.Time) (ok bool, dropped int) {
	every := t.Interval
	if every <= 0 {
		every = time.Second
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.keys == nil || len(t.keys) >= maxKeys {
		t.keys = map[string]*entry{}
	}
	e := t.keys[key]
	if e == nil {
		e = &entry{}
		t.keys[key] = e
	}
	if !e.last.IsZero() && now.Sub(e.last) < every {
		e.dropped++
		return false, 0
	}
	dropped, e.dropped, e.last = e.dropped, 0, now
	return true, dropped
}
