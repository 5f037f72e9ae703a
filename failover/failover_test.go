package failover

import (
	"testing"
	"time"
)

// step is one attempt of a scenario and what must follow it.
type step struct {
	parent     string // the fetch's current parent when the attempt starts
	at         time.Duration
	outcome    Outcome
	progress   bool
	retryAfter time.Duration

	wantRegistry bool // UseRegistry before the attempt
	want         Decision
}

func TestPolicy(t *testing.T) {
	p := Policy{ParentTimeout: 5 * time.Second, BusyTimeout: 30 * time.Second, MinBackoff: 200 * time.Millisecond, MaxBackoff: time.Second}
	s := time.Second
	ms := time.Millisecond
	tests := []struct {
		name  string
		steps []step
	}{
		{"root uses the registry and backs off", []step{
			{parent: "", at: 0, outcome: Failed, wantRegistry: true, want: Decision{Wait, 200 * ms}},
			{parent: "", at: s, outcome: Failed, wantRegistry: true, want: Decision{Wait, 400 * ms}},
			{parent: "", at: 2 * s, outcome: Failed, wantRegistry: true, want: Decision{Wait, 800 * ms}},
			{parent: "", at: 3 * s, outcome: Failed, wantRegistry: true, want: Decision{Wait, s}},
			{parent: "", at: 4 * s, outcome: Done, wantRegistry: true, want: Decision{Go, 0}},
		}},
		{"a dead parent is repaired, then the registry serves", []step{
			{parent: "p", at: 0, outcome: Failed, want: Decision{Repair, 200 * ms}},
			{parent: "p", at: 2 * s, outcome: Failed, want: Decision{Repair, 400 * ms}},
			{parent: "p", at: 5 * s, outcome: Failed, want: Decision{Go, 0}},
			{parent: "p", at: 6 * s, outcome: Done, wantRegistry: true, want: Decision{Go, 0}},
		}},
		{"a new parent gets a clean record", []step{
			{parent: "p", at: 0, outcome: Failed, want: Decision{Repair, 200 * ms}},
			{parent: "p", at: 6 * s, outcome: Failed, want: Decision{Go, 0}},
			{parent: "q", at: 7 * s, outcome: Failed, want: Decision{Repair, 200 * ms}},
			{parent: "q", at: 8 * s, outcome: Done, want: Decision{Go, 0}},
		}},
		{"a busy parent is waited for as it asks", []step{
			{parent: "p", at: 0, outcome: Busy, retryAfter: s, want: Decision{Wait, s}},
			{parent: "p", at: 10 * s, outcome: Busy, retryAfter: 3 * s, want: Decision{Wait, 3 * s}},
			{parent: "p", at: 20 * s, outcome: Busy, want: Decision{Wait, 200 * ms}},
			{parent: "p", at: 21 * s, outcome: Done, want: Decision{Go, 0}},
		}},
		{"a busy parent's wait is bounded", []step{
			{parent: "p", at: 0, outcome: Busy, retryAfter: time.Hour, want: Decision{Wait, 30 * s}},
			{parent: "p", at: 29 * s, outcome: Busy, retryAfter: s, want: Decision{Wait, s}},
			{parent: "p", at: 30 * s, outcome: Busy, retryAfter: s, want: Decision{Go, 0}},
			{parent: "p", at: 31 * s, outcome: Done, wantRegistry: true, want: Decision{Go, 0}},
		}},
		{"busy then failing counts as failing", []step{
			{parent: "p", at: 0, outcome: Busy, retryAfter: s, want: Decision{Wait, s}},
			{parent: "p", at: 2 * s, outcome: Failed, want: Decision{Repair, 200 * ms}},
			{parent: "p", at: 4 * s, outcome: Busy, retryAfter: s, want: Decision{Wait, s}},
			{parent: "p", at: 6 * s, outcome: Busy, retryAfter: s, want: Decision{Go, 0}},
			{parent: "p", at: 7 * s, outcome: Done, wantRegistry: true, want: Decision{Go, 0}},
		}},
		{"a slow parent is retried at once, then given up", []step{
			{parent: "p", at: 0, outcome: Slow, want: Decision{Go, 0}},
			{parent: "p", at: 3 * s, outcome: Slow, want: Decision{Go, 0}},
			{parent: "p", at: 6 * s, outcome: Slow, want: Decision{Go, 0}},
			{parent: "p", at: 7 * s, outcome: Done, wantRegistry: true, want: Decision{Go, 0}},
		}},
		{"progress restarts the clock", []step{
			{parent: "p", at: 0, outcome: Slow, want: Decision{Go, 0}},
			{parent: "p", at: 4 * s, outcome: Slow, progress: true, want: Decision{Go, 0}},
			{parent: "p", at: 8 * s, outcome: Failed, progress: true, want: Decision{Repair, 200 * ms}},
			{parent: "p", at: 12 * s, outcome: Slow, want: Decision{Go, 0}},
			{parent: "p", at: 13 * s, outcome: Slow, want: Decision{Go, 0}},
			{parent: "p", at: 14 * s, outcome: Done, wantRegistry: true, want: Decision{Go, 0}},
		}},
		{"bad bytes from the tree: the registry for good", []step{
			{parent: "p", at: 0, outcome: Corrupt, progress: true, want: Decision{Go, 0}},
			{parent: "q", at: s, outcome: Corrupt, wantRegistry: true, want: Decision{Wait, 200 * ms}},
			{parent: "q", at: 2 * s, outcome: Done, wantRegistry: true, want: Decision{Go, 0}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var st State
			t0 := time.Unix(1000, 0)
			for i, sp := range tt.steps {
				reg := p.UseRegistry(&st, sp.parent)
				if reg != sp.wantRegistry {
					t.Fatalf("step %d: UseRegistry = %v, want %v", i, reg, sp.wantRegistry)
				}
				a := Attempt{Parent: sp.parent, Outcome: sp.outcome, Progress: sp.progress, RetryAfter: sp.retryAfter, At: t0.Add(sp.at)}
				if reg {
					a.Parent = ""
				}
				if got := p.Next(&st, a); got != sp.want {
					t.Fatalf("step %d: Next(%+v) = %v %v, want %v %v", i, a, got.Action, got.Delay, sp.want.Action, sp.want.Delay)
				}
			}
		})
	}
}
