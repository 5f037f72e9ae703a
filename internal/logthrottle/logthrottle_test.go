package logthrottle

import (
	"testing"
	"time"
)

func TestThrottle(t *testing.T) {
	var th Throttle
	t0 := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	steps := []struct {
		key     string
		at      time.Duration
		ok      bool
		dropped int
	}{
		{"a", 0, true, 0},
		{"a", 100 * time.Millisecond, false, 0},
		{"b", 200 * time.Millisecond, true, 0}, // keys are independent
		{"a", 500 * time.Millisecond, false, 0},
		{"a", 1100 * time.Millisecond, true, 2}, // says what it left out
		{"a", 3 * time.Second, true, 0},
	}
	for i, s := range steps {
		ok, dropped := th.Allow(s.key, t0.Add(s.at))
		if ok != s.ok || dropped != s.dropped {
			t.Errorf("step %d (%s at %v): %v %d, want %v %d", i, s.key, s.at, ok, dropped, s.ok, s.dropped)
		}
	}
}
