// Package failover decides what a fetch through a function tree does after
// each attempt: go on, wait and try the same source again, ask the manager
// to repair the tree, or give up on the tree and use the registry.
//
// A parent's failures come in three kinds, treated differently:
//
//   - Busy: it answered 503 at its upload cap. It is alive and will serve
//     soon, so the fetch waits as long as it asks (Retry-After), and tries
//     again, for up to BusyTimeout before it gives up on it.
//   - Slow: it is alive (its health check answers) but delivered nothing,
//     most likely waiting for its own parent. The fetch tries it again at
//     once, for up to ParentTimeout.
//   - Failed: it is unreachable or erred. The fetch asks the manager for a
//     new parent and tries again with backoff, for up to ParentTimeout.
//
// A parent that delivers anything is working again: its clock restarts. A
// new parent (the manager repaired the tree) starts with a clean record.
// Bytes that fail verification came from the tree, which is then not trusted
// again for this blob: the registry serves the rest.
//
// A Policy holds the limits and is shared; a State is one fetch's record.
// Neither reads the clock: callers pass the time, so the policy is a plain
// function of its inputs.
package failover

import "time"

// Outcome is how an attempt ended.
type Outcome int

const (
	Done    Outcome = iota // it fetched everything it was asked for
	Corrupt                // the content failed verification
	Busy                   // the parent is at its upload cap (503)
	Slow                   // the parent is alive but delivered nothing
	Failed                 // the source is unreachable or erred
)

// Action is what the fetch does next.
type Action int

const (
	Go     Action = iota // start the next attempt now
	Wait                 // wait for Decision.Delay (or a new parent), then try again
	Repair               // ask the manager for a new parent, then as Wait
)

func (a Action) String() string {
	switch a {
	case Go:
		return "go"
	case Wait:
		return "wait"
	case Repair:
		return "repair"
	}
	return "action?"
}

// Decision is the Policy's answer to an attempt.
type Decision struct {
	Action Action
	Delay  time.Duration // for Wait and Repair
}

// Policy holds the limits. The zero value is not useful; see Default.
type Policy struct {
	// ParentTimeout is how long a parent may fail or deliver nothing before
	// the registry serves instead.
	ParentTimeout time.Duration
	// BusyTimeout is how long a parent may answer busy before the registry
	// serves instead.
	BusyTimeout time.Duration
	// MinBackoff and MaxBackoff bound the pause between failed attempts; a
	// busy parent's Retry-After is honoured within [MinBackoff, the rest of
	// BusyTimeout].
	MinBackoff, MaxBackoff time.Duration
}

// Default is the policy with FaaSNet's defaults.
var Default = Policy{
	ParentTimeout: 5 * time.Second,
	BusyTimeout:   30 * time.Second,
	MinBackoff:    200 * time.Millisecond,
	MaxBackoff:    2 * time.Second,
}

// State is one fetch's record of its current parent. The zero value is a
// fetch that has not failed.
type State struct {
	parent   string        // the parent the record is about ("" none)
	since    time.Time     // when it started failing; zero: it is not
	onlyBusy bool          // every failure since then was a busy answer
	gaveUp   bool          // it failed too long: the registry serves
	distrust bool          // the tree served bad bytes
	backoff  time.Duration // the next pause after a failure
}

// Attempt describes one attempt for Policy.Next.
type Attempt struct {
	Parent     string        // the parent asked; "" for the registry
	Outcome    Outcome       // how it ended
	Progress   bool          // it delivered some of what it was asked for
	RetryAfter time.Duration // for Busy, what the parent asked
	At         time.Time     // when it ended
}

// UseRegistry tells where the next attempt goes, given the fetch's current
// parent ("" when it has none, e.g. at the root): true for the registry. A
// parent other than the one in the record starts a new record.
func (p Policy) UseRegistry(s *State, parent string) bool {
	if parent != s.parent {
		*s = State{parent: parent, distrust: s.distrust}
	}
	return parent == "" || s.distrust || s.gaveUp
}

// Next records an attempt and decides what comes next.
func (p Policy) Next(s *State, a Attempt) Decision {
	if s.backoff == 0 || a.Progress {
		s.backoff = p.MinBackoff
	}
	if a.Outcome == Done {
		s.since, s.backoff = time.Time{}, p.MinBackoff
		return Decision{Action: Go}
	}
	if a.Parent == "" {
		// The registry: nothing to fail over to, so back off and retry.
		return p.pause(s, Wait)
	}
	if a.Parent != s.parent {
		*s = State{parent: a.Parent, distrust: s.distrust, backoff: p.MinBackoff}
	}
	if a.Outcome == Corrupt {
		s.distrust = true
		return Decision{Action: Go}
	}
	if a.Progress || s.since.IsZero() {
		s.since, s.onlyBusy = a.At, true
	}
	s.onlyBusy = s.onlyBusy && a.Outcome == Busy
	limit := p.ParentTimeout
	if s.onlyBusy {
		limit = p.BusyTimeout
	}
	failing := a.At.Sub(s.since)
	if failing >= limit {
		s.gaveUp = true
		return Decision{Action: Go}
	}
	switch a.Outcome {
	case Busy:
		d := min(max(a.RetryAfter, p.MinBackoff), limit-failing)
		return Decision{Action: Wait, Delay: d}
	case Slow:
		return Decision{Action: Go}
	}
	return p.pause(s, Repair)
}

// pause returns act with the current backoff, and doubles it.
func (p Policy) pause(s *State, act Action) Decision {
	d := s.backoff
	s.backoff = min(2*s.backoff, p.MaxBackoff)
	return Decision{Action: act, Delay: d}
}
