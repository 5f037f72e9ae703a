package sim

import (
	"math"
	"reflect"
	"testing"
	"time"
)

func syntheticReplay(t *testing.T) (*Trace, ReplayConfig) {
	t.Helper()
	tr, err := ReadTrace("testdata/trace")
	if err != nil {
		t.Fatal(err)
	}
	rc := ReplayConfig{Config: DefaultConfig()}
	rc.VMs = 50
	rc.ImageSize = 100_000_000
	return tr, rc
}

// TestReplaySynthetic follows testdata/trace/README.md: fB's instance is up
// from the first minute (warm); fA starts 10 instances in minute 5 and 10
// more in minute 12; fC starts in minute 2, is reclaimed after 15 idle
// minutes and starts again in minute 19.
func TestReplaySynthetic(t *testing.T) {
	tr, rc := syntheticReplay(t)
	for _, s := range Strategies {
		r, err := Replay(tr, rc, s)
		if err != nil {
			t.Fatal(err)
		}
		if r.ColdStarts != 22 || r.Warm != 1 || r.Rejected != 0 || r.Unfinished != 0 {
			t.Errorf("%s: %d cold, %d warm, %d rejected, %d unfinished; want 22, 1, 0, 0", s, r.ColdStarts, r.Warm, r.Rejected, r.Unfinished)
		}
		if r.PeakTree != 20 || r.PeakBurst != 10 || r.PeakInstances != 22 {
			t.Errorf("%s: peak tree %d, burst %d, instances %d; want 20, 10, 22", s, r.PeakTree, r.PeakBurst, r.PeakInstances)
		}
		c, _ := rc.normalize()
		least := c.need(s)/float64(c.Bandwidth) + c.Latency.Seconds()
		if r.Latency.N != 22 || r.Latency.Min < least {
			t.Errorf("%s: %d latencies, the least %v s; want 22, none under %v s", s, r.Latency.N, r.Latency.Min, least)
		}
		if s == Registry && r.RegistryEgress != 22*rc.ImageSize {
			t.Errorf("registry sent %d bytes, want 22 images", r.RegistryEgress)
		}
		if s == FaaSNet && r.RegistryEgress != 3*rc.ImageSize {
			// fA's tree is fed once; fC's two lone instances each pull.
			t.Errorf("faasnet: registry sent %d bytes, want 3 images", r.RegistryEgress)
		}
	}
}

func TestReplayIdleTimeout(t *testing.T) {
	tr, rc := syntheticReplay(t)
	rc.IdleTimeout = time.Minute
	r, err := Replay(tr, rc, FaaSNet)
	if err != nil {
		t.Fatal(err)
	}
	// fA's first 10 are reclaimed at minute 9, so minute 12 starts 20.
	if r.ColdStarts != 32 {
		t.Errorf("%d cold starts with a one-minute idle timeout, want 32", r.ColdStarts)
	}
}

func TestReplayFullPool(t *testing.T) {
	tr, rc := syntheticReplay(t)
	rc.VMs, rc.FunctionsPerVM = 5, 1
	r, err := Replay(tr, rc, FaaSNet)
	if err != nil {
		t.Fatal(err)
	}
	// fB holds one VM, fC one in minute 2: fA gets 3 of 10 and misses 7
	// in each of minutes 5-7, then 17 of 20 in minute 12.
	if r.Rejected != 3*7+17 || r.ColdStarts != 3+2 {
		t.Errorf("%d rejected, %d cold starts; want 38 and 5", r.Rejected, r.ColdStarts)
	}
}

func TestReplayDeterministic(t *testing.T) {
	tr, rc := syntheticReplay(t)
	rc.ScaleFactor = 3
	a, err := Replay(tr, rc, Swarm)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Replay(tr, rc, Swarm)
	a.Wall, b.Wall = 0, 0
	if !reflect.DeepEqual(a, b) {
		t.Error("two replays with the same seed differ")
	}
}

func TestReplayErrors(t *testing.T) {
	tr, rc := syntheticReplay(t)
	rc.ScaleFactor = -1
	if _, err := Replay(tr, rc, FaaSNet); err == nil {
		t.Error("negative scale factor accepted")
	}
	if _, err := Replay(&Trace{}, ReplayConfig{Config: DefaultConfig()}, FaaSNet); err == nil {
		t.Error("empty trace accepted")
	}
}

// TestReplayRealTrace replays the real trace's first two hours (all of it
// without -short) and checks that it completes.
func TestReplayRealTrace(t *testing.T) {
	tr := readRealTrace(t)
	rc := ReplayConfig{Config: DefaultConfig()}
	rc.VMs = 1000
	if testing.Short() {
		rc.Minutes = 120
	}
	r, err := Replay(tr, rc, FaaSNet)
	if err != nil {
		t.Fatal(err)
	}
	if r.ColdStarts == 0 || r.Unfinished != 0 || r.Rejected != 0 {
		t.Errorf("%d cold starts, %d unfinished, %d rejected", r.ColdStarts, r.Unfinished, r.Rejected)
	}
	t.Logf("%d minutes: %d cold starts, latency p50 %.2fs p99 %.2fs, wall %.1fs", r.Minutes, r.ColdStarts, r.Latency.P50, r.Latency.P99, r.Wall)
}

// TestReplaySpedUp: a trace minute of two seconds changes nothing here,
// where every start takes under a second and starts come minutes apart:
// the same starts with the same latencies, counted from the sped-up
// minute. A negative minute is refused.
func TestReplaySpedUp(t *testing.T) {
	tr, rc := syntheticReplay(t)
	for _, s := range []Strategy{FaaSNet, Registry, OnDemand} {
		real, err := Replay(tr, rc, s)
		if err != nil {
			t.Fatal(err)
		}
		fast := rc
		fast.Minute = 2 * time.Second
		sped, err := Replay(tr, fast, s)
		if err != nil {
			t.Fatal(err)
		}
		if sped.ColdStarts != real.ColdStarts || sped.RegistryEgress != real.RegistryEgress || len(sped.Latencies) != len(real.Latencies) {
			t.Fatalf("%s: sped up %d starts, %d bytes; real time %d, %d", s, sped.ColdStarts, sped.RegistryEgress, real.ColdStarts, real.RegistryEgress)
		}
		for i, l := range real.Latencies {
			if l >= 2 || math.Abs(sped.Latencies[i]-l) > 0.01*l {
				t.Errorf("%s: start %d took %v s sped up, %v s in real time (want equal, under the 2 s minute)", s, i, sped.Latencies[i], l)
			}
		}
	}
	// A minute of a millisecond puts fA's two bursts, fC's two starts and
	// all the rest within 20 ms: they share the registry and take longer.
	crowded := rc
	crowded.Minute = time.Millisecond
	real, err := Replay(tr, rc, Registry)
	if err != nil {
		t.Fatal(err)
	}
	sped, err := Replay(tr, crowded, Registry)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("registry: slowest %v s crowded, %v s real time", sped.Latency.Max, real.Latency.Max)
	if sped.Latency.Max < 1.5*real.Latency.Max {
		t.Errorf("registry: slowest start %v s with the trace in 20 ms, %v s in real time; want much slower", sped.Latency.Max, real.Latency.Max)
	}
	bad := rc
	bad.Minute = -time.Second
	if _, err := Replay(tr, bad, FaaSNet); err == nil {
		t.Error("a negative minute was accepted")
	}
}
