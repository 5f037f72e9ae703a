package burst

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/faasnet/faasnet/sim"
)

// The synthetic trace in testdata: four functions over twelve minutes,
// each invocation a minute long, so that instances equal invocations.
// a runs 1 all along, b jumps from 0 to 5 in minute 6 (label 106), c runs
// 2 all along, d alternates 0 and 1.
func synthetic(t *testing.T) *sim.Trace {
	t.Helper()
	tr, err := sim.ReadTrace("testdata")
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// TestBurstySynthetic: the winner is the window where b's jump is the
// largest rise against the mean, worked out by hand: [103, 107) with b and
// d, whose summed instances go 1, 0, 1, 5: a rise of 4 over a mean of
// 1.75.
func TestBurstySynthetic(t *testing.T) {
	tr := synthetic(t)
	w, err := Bursty(tr, 4, 2, 0)
	if err != nil {
		t.Fatal(err)
	}
	if w.Start != 3 || w.Minute != 103 || !slices.Equal(w.Functions, []int{1, 3}) {
		t.Errorf("window at %d (minute %d) with functions %v; want 3 (103) with [1 3]", w.Start, w.Minute, w.Functions)
	}
	if w.PeakIncrease != 4 || w.PeakAt != 3 || w.Mean != 1.75 || w.Score != 4/1.75 {
		t.Errorf("peak rise %d at %d, mean %v, score %v; want 4 at 3, 1.75, %v", w.PeakIncrease, w.PeakAt, w.Mean, w.Score, 4/1.75)
	}
}

// TestBurstyIdle: with instances kept warm two minutes, d's alternation
// makes no cold starts, so the function chosen beside b is a (the first
// of the ones that do not rise); the window is the same, [103, 107), whose
// b and a go 1, 1, 1, 6: a rise of 5 over a mean of 2.25.
func TestBurstyIdle(t *testing.T) {
	tr := synthetic(t)
	w, err := Bursty(tr, 4, 2, 2*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if w.Start != 3 || !slices.Equal(w.Functions, []int{1, 0}) || w.PeakIncrease != 5 || w.Score != 5/2.25 {
		t.Errorf("window at %d with functions %v, rise %d, score %v; want 3 with [1 0], 5, %v", w.Start, w.Functions, w.PeakIncrease, w.Score, 5/2.25)
	}
}

func TestBurstyRefuses(t *testing.T) {
	tr := synthetic(t)
	for _, tt := range []struct{ minutes, functions int }{{1, 1}, {13, 1}, {4, 0}, {4, 5}} {
		if _, err := Bursty(tr, tt.minutes, tt.functions, 0); err == nil {
			t.Errorf("Bursty(%d minutes, %d functions) did not fail", tt.minutes, tt.functions)
		}
	}
}

// TestScheduleSynthetic checks the conversion of the window worked out
// above into starts and reclaims, by hand.
func TestScheduleSynthetic(t *testing.T) {
	tr := synthetic(t)
	cut := Cut(tr, Window{Start: 3, Minutes: 4, Functions: []int{1, 3}})
	if !slices.Equal(cut.Functions[0].Invocations, []int{0, 0, 0, 5}) || !slices.Equal(cut.Functions[1].Invocations, []int{1, 0, 1, 0}) {
		t.Fatalf("cut: %v and %v", cut.Functions[0].Invocations, cut.Functions[1].Invocations)
	}
	win := Window{Start: 3, Minutes: 4, Functions: []int{1, 3}}
	tests := []struct {
		name  string
		win   Window
		pool  int
		idle  time.Duration
		want  []Event
		cold  int
		warm  int
		rejct int
	}{
		{
			// d's instance stays warm over its idle minutes; b starts 5.
			name: "warm d", win: win, pool: 10, idle: 2 * time.Minute, cold: 5, warm: 1,
			want: []Event{
				{Minute: 0, Function: 1, Instance: 0, Start: true, Warm: true},
				{Minute: 3, Function: 0, Instance: 1, Start: true}, {Minute: 3, Function: 0, Instance: 2, Start: true},
				{Minute: 3, Function: 0, Instance: 3, Start: true}, {Minute: 3, Function: 0, Instance: 4, Start: true},
				{Minute: 3, Function: 0, Instance: 5, Start: true},
			},
		},
		{
			// b alone from minute 3: five start, work two minutes, and
			// are reclaimed once a whole minute passed without work.
			name: "b reclaimed", win: Window{Start: 3, Minutes: 9, Functions: []int{1}}, pool: 10, idle: time.Minute, cold: 5, warm: 0,
			want: []Event{
				{Minute: 3, Function: 0, Instance: 0, Start: true}, {Minute: 3, Function: 0, Instance: 1, Start: true},
				{Minute: 3, Function: 0, Instance: 2, Start: true}, {Minute: 3, Function: 0, Instance: 3, Start: true},
				{Minute: 3, Function: 0, Instance: 4, Start: true},
				{Minute: 6, Function: 0, Instance: 0}, {Minute: 6, Function: 0, Instance: 1}, {Minute: 6, Function: 0, Instance: 2},
				{Minute: 6, Function: 0, Instance: 3}, {Minute: 6, Function: 0, Instance: 4},
			},
		},
		{
			// Four VMs, d's warm instance on one: two of b's are refused.
			name: "pool full", win: win, pool: 4, idle: 2 * time.Minute, cold: 3, warm: 1, rejct: 2,
			want: []Event{
				{Minute: 0, Function: 1, Instance: 0, Start: true, Warm: true},
				{Minute: 3, Function: 0, Instance: 1, Start: true}, {Minute: 3, Function: 0, Instance: 2, Start: true},
				{Minute: 3, Function: 0, Instance: 3, Start: true},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cut := Cut(tr, tt.win)
			s, err := NewSchedule(cut, tt.pool, 1, tt.idle)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(s.Events, tt.want) {
				t.Errorf("events\n%v\nwant\n%v", s.Events, tt.want)
			}
			if s.ColdStarts != tt.cold || s.Warm != tt.warm || s.Rejected != tt.rejct {
				t.Errorf("cold %d, warm %d, rejected %d; want %d, %d, %d", s.ColdStarts, s.Warm, s.Rejected, tt.cold, tt.warm, tt.rejct)
			}
			agreesWithSim(t, cut, s, tt.pool)
		})
	}
}

// agreesWithSim replays cut with the simulator on the same pool (one
// function per VM) and checks that it started, kept warm and refused the
// same instances as the schedule.
func agreesWithSim(t *testing.T, cut *sim.Trace, s *Schedule, pool int) {
	t.Helper()
	cfg := sim.DefaultConfig()
	cfg.VMs, cfg.FunctionsPerVM, cfg.ImageSize = pool, 1, 8<<20
	r, err := sim.Replay(cut, sim.ReplayConfig{Config: cfg, IdleTimeout: s.IdleTimeout, ScaleFactor: s.Scale, Minute: time.Second}, sim.OnDemand)
	if err != nil {
		t.Fatal(err)
	}
	// The simulator's peak burst counts the first minute's warm
	// instances too; the schedule's only cold starts.
	if r.ColdStarts != s.ColdStarts || r.Warm != s.Warm || r.Rejected != s.Rejected || r.PeakBurst != max(s.PeakBurst, s.Warm) || r.PeakInstances != s.PeakInstances {
		t.Errorf("sim: cold %d, warm %d, rejected %d, peak burst %d, peak instances %d; schedule: %d, %d, %d, %d, %d",
			r.ColdStarts, r.Warm, r.Rejected, r.PeakBurst, r.PeakInstances, s.ColdStarts, s.Warm, s.Rejected, s.PeakBurst, s.PeakInstances)
	}
}

// TestFitScale: the scale found fills the pool without refusing, and a
// little more refuses.
func TestFitScale(t *testing.T) {
	tr := synthetic(t)
	cut := Cut(tr, Window{Start: 0, Minutes: 12, Functions: []int{0, 1, 2, 3}})
	const pool, idle = 12, 2 * time.Minute
	scale, err := FitScale(cut, pool, idle, 100)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := NewSchedule(cut, pool, scale, idle)
	over, _ := NewSchedule(cut, pool, scale*1.01, idle)
	if s.Rejected != 0 || over.Rejected == 0 {
		t.Errorf("scale %v: %d rejected (want 0), at 1%% more %d (want some)", scale, s.Rejected, over.Rejected)
	}
	agreesWithSim(t, cut, s, pool)
}

// realTraceDirs are where the Azure sample is, beside a checkout (as sim's
// tests look for it) or beside a worktree under a directory of its own.
var realTraceDirs = []string{
	"../../shared/traces/azure2019-invitro-500",
	"../../../shared/traces/azure2019-invitro-500",
}

func realTrace() string {
	for _, d := range realTraceDirs {
		if _, err := os.Stat(filepath.Join(d, "invocations.csv")); err == nil {
			return d
		}
	}
	return ""
}

// TestBurstyRealTrace runs the selection on the project's Azure sample
// and checks what the criterion promises: no window of the same length
// scores higher, and the chosen functions rise most in it.
func TestBurstyRealTrace(t *testing.T) {
	dir := realTrace()
	if dir == "" {
		t.Skipf("the Azure trace sample is in neither of %v (a checkout beside ../shared has it)", realTraceDirs)
	}
	tr, err := sim.ReadTrace(dir)
	if err != nil {
		t.Fatal(err)
	}
	w, err := Bursty(tr, 30, 8, 15*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("most bursty 30 minutes: from minute %d, score %.2f (rise %d at +%d min over a mean of %.1f), functions %v",
		w.Minute, w.Score, w.PeakIncrease, w.PeakAt, w.Mean, w.Functions)
	inst := make([][]int, len(tr.Functions))
	for f, fn := range tr.Functions {
		for m := range tr.Minutes {
			inst[f] = append(inst[f], fn.Instances(m, 1))
		}
	}
	for s := 0; s+30 <= tr.Minutes; s++ {
		if o := score(inst, s, 30, 8, 16); o.Mean >= 1 && o.Score > w.Score {
			t.Errorf("window at %d scores %.3f, more than the chosen %.3f", s, o.Score, w.Score)
		}
	}
	if w.Mean < 1 || len(w.Functions) != 8 {
		t.Errorf("mean %.2f, %d functions", w.Mean, len(w.Functions))
	}
}

// TestScheduleAgreesWithSim: on seeded random traces, pools and idle
// timeouts, the schedule starts, keeps warm and refuses what the
// simulator's replay does.
func TestScheduleAgreesWithSim(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 40 {
		tr := &sim.Trace{Minutes: 2 + rng.IntN(20)}
		for range 1 + rng.IntN(5) {
			fn := sim.TraceFunction{AvgMillis: float64(rng.IntN(120000))}
			for range tr.Minutes {
				n := 0
				if rng.IntN(3) == 0 {
					n = rng.IntN(40)
				}
				fn.Invocations = append(fn.Invocations, n)
			}
			tr.Functions = append(tr.Functions, fn)
		}
		pool := 1 + rng.IntN(30)
		idle := time.Duration(1+rng.IntN(5)) * time.Minute
		s, err := NewSchedule(tr, pool, 0.5+rng.Float64(), idle)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(fmt.Sprint(i), func(t *testing.T) { agreesWithSim(t, tr, s, pool) })
	}
}
