// Package burst turns an Azure Functions trace (package sim reads it) into
// something an emulated cluster can replay: it finds the most bursty window
// of the trace, picks the functions that scale out most in it, and converts
// their invocations into a schedule of cold starts and reclaims for a pool
// of VMs, with the same instance bookkeeping as sim.Replay, so that the
// emulation and the simulator replay the same starts.
package burst

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/faasnet/faasnet/sim"
)

// Window is a stretch of a trace and the functions chosen in it.
type Window struct {
	// Start is the window's first minute as an index into the trace's
	// minutes; Minute is its label in the trace (e.g. 480 + Start).
	Start, Minute, Minutes int
	// Functions are the indexes (into sim.Trace.Functions) of the
	// functions chosen: the ones with the most instances added in the
	// window, most first.
	Functions []int
	// Score is the window's burstiness (see Bursty): the largest increase
	// of the chosen functions' instances from one minute to the next,
	// divided by their mean instances over the window.
	Score float64
	// PeakIncrease is that largest increase, at PeakAt minutes into the
	// window; Mean is the mean instances.
	PeakIncrease, PeakAt int
	Mean                 float64
}

// Bursty returns the most bursty window of minutes minutes of tr for
// functions functions. For every start, it takes the functions that scale
// out most within the window: whose instances (sim.TraceFunction.Instances
// at scale 1) rise most in total above the most they needed in the
// previous minutes of the window that an idle instance stays warm (idle;
// 0 compares with the minute before), which is what makes cold starts.
// It scores the window by the largest one-minute rise of those functions'
// summed instances, divided by their mean instances over the window
// (windows with a mean under one instance are skipped: a rise from nothing
// to one is not a burst). The highest score wins; ties go to the earlier
// window.
func Bursty(tr *sim.Trace, minutes, functions int, idle time.Duration) (Window, error) {
	if minutes < 2 || minutes > tr.Minutes {
		return Window{}, fmt.Errorf("burst: a window of %d minutes in a trace of %d: want at least 2 and at most the trace", minutes, tr.Minutes)
	}
	if functions < 1 || functions > len(tr.Functions) {
		return Window{}, fmt.Errorf("burst: %d functions of the trace's %d", functions, len(tr.Functions))
	}
	if idle < 0 {
		return Window{}, fmt.Errorf("burst: idle timeout %v", idle)
	}
	inst := make([][]int, len(tr.Functions))
	for f, fn := range tr.Functions {
		inst[f] = make([]int, tr.Minutes)
		for m := range tr.Minutes {
			inst[f][m] = fn.Instances(m, 1)
		}
	}
	// An instance idle for less than idle is still there: a need is new
	// only above the most of the last warm minutes.
	warm := 1 + int(idle/time.Minute)
	best := Window{Score: -1}
	for s := 0; s+minutes <= tr.Minutes; s++ {
		w := score(inst, s, minutes, functions, warm)
		if w.Mean >= 1 && w.Score > best.Score {
			best = w
		}
	}
	if best.Score < 0 {
		return Window{}, errors.New("burst: no window has a mean of one instance or more")
	}
	best.Minute = tr.FirstMinute + best.Start
	return best, nil
}

// score picks the functions of the window [s, s+minutes) and scores it;
// a function's rise in minute m is above the most of the warm minutes
// before it in the window.
func score(inst [][]int, s, minutes, functions, warm int) Window {
	type cand struct{ f, rise int }
	cands := make([]cand, len(inst))
	for f, in := range inst {
		rise := 0
		for m := s + 1; m < s+minutes; m++ {
			recent := 0
			for k := max(s, m-warm); k < m; k++ {
				recent = max(recent, in[k])
			}
			rise += max(0, in[m]-recent)
		}
		cands[f] = cand{f, rise}
	}
	slices.SortStableFunc(cands, func(a, b cand) int { return b.rise - a.rise })
	w := Window{Start: s, Minutes: minutes}
	for _, c := range cands[:functions] {
		w.Functions = append(w.Functions, c.f)
	}
	total := make([]int, minutes)
	sum := 0
	for _, f := range w.Functions {
		for m := range minutes {
			total[m] += inst[f][s+m]
		}
	}
	for m, n := range total {
		sum += n
		if m > 0 && n-total[m-1] > w.PeakIncrease {
			w.PeakIncrease, w.PeakAt = n-total[m-1], m
		}
	}
	w.Mean = float64(sum) / float64(minutes)
	if w.Mean > 0 {
		w.Score = float64(w.PeakIncrease) / w.Mean
	}
	return w
}

// Cut returns the part of tr that w covers: its functions, in w's order,
// with their invocations of w's minutes only. sim.Replay of it replays the
// window.
func Cut(tr *sim.Trace, w Window) *sim.Trace {
	out := &sim.Trace{FirstMinute: tr.FirstMinute + w.Start, Minutes: w.Minutes}
	for _, f := range w.Functions {
		fn := tr.Functions[f]
		inv := make([]int, w.Minutes)
		copy(inv, fn.Invocations[min(w.Start, len(fn.Invocations)):])
		fn.Invocations = inv
		out.Functions = append(out.Functions, fn)
	}
	return out
}

// Event is a change of the schedule: an instance of a function starts on
// a VM of its own, or is reclaimed.
type Event struct {
	// Minute is minutes from the window's start.
	Minute int `json:"minute"`
	// Function indexes Schedule.Trace.Functions.
	Function int `json:"function"`
	// Instance names the instance, unique in the schedule.
	Instance int `json:"instance"`
	// Start says the instance starts (a cold start, unless Warm); else it
	// is reclaimed.
	Start bool `json:"start"`
	// Warm marks the instances of the first minute, which a replay takes
	// as already running: a window cut out of a day starts warm.
	Warm bool `json:"warm,omitempty"`
}

// Schedule is a window of a trace as starts and reclaims of instances.
type Schedule struct {
	Trace *sim.Trace `json:"-"`
	// Scale multiplies every invocation count.
	Scale       float64       `json:"scale"`
	IdleTimeout time.Duration `json:"idle_timeout"`
	// Events are in order of minute; in a minute reclaims come first,
	// so that the VMs they free can take the starts.
	Events []Event `json:"events"`
	// ColdStarts and Warm count the starts; Rejected adds up, minute by
	// minute, the instances the pool could not hold; PeakInstances is the
	// most instances at once, PeakBurst the most cold starts in one
	// minute.
	ColdStarts, Warm, Rejected int
	PeakInstances, PeakBurst   int
}

// instance is a running instance as the schedule tracks it.
type instance struct {
	id, lastUsed int
}

// NewSchedule converts tr (a Cut window) into starts and reclaims for a
// pool of pool VMs, each hosting one instance at a time, with invocations
// multiplied by scale: the bookkeeping of sim.Replay. In every minute each
// function needs sim.TraceFunction.Instances instances; its most recently
// used ones take the work; one idle for idleTimeout is reclaimed; the rest
// of the need is started, as far as the pool has room.
func NewSchedule(tr *sim.Trace, pool int, scale float64, idleTimeout time.Duration) (*Schedule, error) {
	if pool < 1 || scale <= 0 || math.IsInf(scale, 0) || math.IsNaN(scale) || idleTimeout < 0 {
		return nil, fmt.Errorf("burst: pool %d, scale %v, idle timeout %v: want them positive", pool, scale, idleTimeout)
	}
	s := &Schedule{Trace: tr, Scale: scale, IdleTimeout: idleTimeout}
	insts := make([][]*instance, len(tr.Functions))
	held, next := 0, 0
	for m := range tr.Minutes {
		need := make([]int, len(tr.Functions))
		for f, fn := range tr.Functions {
			need[f] = fn.Instances(m, scale)
			is := insts[f]
			slices.SortStableFunc(is, func(a, b *instance) int { return b.lastUsed - a.lastUsed })
			for _, in := range is[:min(need[f], len(is))] {
				in.lastUsed = m
			}
		}
		for f := range tr.Functions {
			keep := insts[f][:0]
			for _, in := range insts[f] {
				idle := time.Duration(m-in.lastUsed-1) * time.Minute
				if in.lastUsed < m && idle >= idleTimeout {
					s.Events = append(s.Events, Event{Minute: m, Function: f, Instance: in.id})
					held--
					continue
				}
				keep = append(keep, in)
			}
			insts[f] = keep
		}
		burst := 0
		for f := range tr.Functions {
			deficit := need[f] - len(insts[f])
			for range deficit {
				if held == pool {
					s.Rejected++
					continue
				}
				insts[f] = append(insts[f], &instance{id: next, lastUsed: m})
				s.Events = append(s.Events, Event{Minute: m, Function: f, Instance: next, Start: true, Warm: m == 0})
				next++
				held++
				if m == 0 {
					s.Warm++
				} else {
					s.ColdStarts++
					burst++
				}
			}
		}
		s.PeakBurst = max(s.PeakBurst, burst)
		s.PeakInstances = max(s.PeakInstances, held)
	}
	return s, nil
}

// FitScale returns the largest invocation scale, at most most, at which
// the schedule of tr never needs more than pool instances at once (so the
// pool rejects nothing), to three significant digits.
func FitScale(tr *sim.Trace, pool int, idleTimeout time.Duration, most float64) (float64, error) {
	fits := func(scale float64) (bool, error) {
		s, err := NewSchedule(tr, pool, scale, idleTimeout)
		if err != nil {
			return false, err
		}
		return s.Rejected == 0, nil
	}
	lo, hi := 0.0, most
	if ok, err := fits(hi); err != nil || ok {
		return hi, err
	}
	for hi-lo > hi*1e-3 {
		mid := (lo + hi) / 2
		ok, err := fits(mid)
		if err != nil {
			return 0, err
		}
		if ok {
			lo = mid
		} else {
			hi = mid
		}
	}
	if lo == 0 {
		return 0, fmt.Errorf("burst: even the smallest scale needs more than %d VMs", pool)
	}
	return lo, nil
}
