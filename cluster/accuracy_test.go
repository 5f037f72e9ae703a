package cluster

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/faasnet/faasnet/internal/testenv"
)

// A run too slow to meet a rate while the machine's CPUs were busier than
// CPUBusy says more about the machine than about the limiters: timers wake
// late, and a token bucket with a 20 ms burst loses what it cannot hold.

// loadedFloor is the share of its rate a run must still reach when the
// machine's CPUs were busy: late timers can cost a good part of the rate,
// but a limiter throttling far below its setting still shows.
const loadedFloor = 0.5

// tooLoaded decides a run that fell short of its rate, got of want bytes/s,
// while the machine's CPUs were busy. Outside CI it skips: the machine
// cannot tell. In CI, where a skip would hide the check for good, the bound
// widens to loadedFloor of the rate instead.
func tooLoaded(t *testing.T, got, want float64, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if !testenv.InCI() {
		t.Skip(msg)
	}
	if got < loadedFloor*want {
		t.Errorf("%s, and below even %.0f%% of %.0f B/s: %.0f B/s", msg, 100*loadedFloor, want, got)
		return
	}
	t.Logf("%s; CI: within the widened bound of %.0f%%", msg, 100*loadedFloor)
}

// TestOneVMReceivesAtItsDownloadRate: one VM alone, the registry
// unlimited, receives the image at its configured download rate within 5%,
// through the real worker and registry path and through the plain puller.
// The VM's ready time includes the control plane's round trips and the
// limiter's initial burst, both a few milliseconds against seconds.
//
// Faster than the limit always fails. Slower is measured again, up to three
// times, because other processes on a shared machine delay our timers; if
// every attempt was slow while the machine's CPUs were busy, the test
// skips, naming the load, since then it cannot tell; in CI it checks the
// best attempt against a wider bound instead (tooLoaded).
func TestOneVMReceivesAtItsDownloadRate(t *testing.T) {
	const rate = 4 << 20
	sc := Scenario{ImageSize: 12 << 20, Layers: 3, Bandwidth: rate, Seed: 3}
	if testing.Short() {
		sc.ImageSize = 6 << 20
	}
	h := newHarness(t, sc, Options{})
	for _, strategy := range []string{"faasnet", "registry"} {
		t.Run(strategy, func(t *testing.T) {
			var busy []float64
			best := 0.0
			for range 3 {
				res := run(t, h, strategy, 1)
				got := float64(res.ImageBytes) / res.Makespan.Seconds()
				t.Logf("%s: %d bytes in %v: %.3f MiB/s, limit %.3f MiB/s, machine CPU %.0f%%",
					strategy, res.ImageBytes, res.Makespan, got/(1<<20), float64(rate)/(1<<20), 100*res.MachineCPU)
				if got > rate*1.05 {
					t.Fatalf("received at %.0f B/s, over the limit %d B/s by more than 5%%", got, rate)
				}
				if got >= rate*0.95 {
					return
				}
				busy = append(busy, res.MachineCPU)
				best = max(best, got)
			}
			if slices.Min(busy) >= CPUBusy {
				tooLoaded(t, best, rate, "three runs below the rate while the machine's CPUs were %.0f%% busy or more: too loaded to measure", 100*slices.Min(busy))
				return
			}
			t.Errorf("three runs more than 5%% below the limit %d B/s, with CPUs %v busy", rate, busy)
		})
	}
}

// egressLog records when registry egress left the limiter.
type egressLog struct {
	mu     sync.Mutex
	events []egressEvent
}

type egressEvent struct {
	t time.Time
	n int
}

func (l *egressLog) add(n int) {
	l.mu.Lock()
	l.events = append(l.events, egressEvent{time.Now(), n})
	l.mu.Unlock()
}

// maxInWindow returns the most bytes sent within any window of length w.
func (l *egressLog) maxInWindow(w time.Duration) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	ev := slices.Clone(l.events)
	slices.SortFunc(ev, func(a, b egressEvent) int { return a.t.Compare(b.t) })
	var best, sum int64
	j := 0
	for i := range ev {
		for ; j < len(ev) && ev[j].t.Sub(ev[i].t) < w; j++ {
			sum += int64(ev[j].n)
		}
		best = max(best, sum)
		sum -= int64(ev[i].n)
	}
	return best
}

// TestRegistryNeverExceedsItsEgressLimit: VMs with unlimited links pull at
// once from a limited registry; in no window does the registry send more
// than the limit allows. A token bucket allows its burst plus rate × window;
// the slack is the lateness of timers on a busy machine (a piece allowed at
// t may be recorded a little later, next to one allowed on time).
func TestRegistryNeverExceedsItsEgressLimit(t *testing.T) {
	const limit = 8 << 20
	var log egressLog
	sc := Scenario{ImageSize: 8 << 20, Layers: 2, RegistryBandwidth: limit, Seed: 4}
	vms := 4
	if testing.Short() {
		vms = 2
	}
	h := newHarness(t, sc, Options{OnEgress: log.add})
	log.mu.Lock()
	log.events = nil // forget the push
	log.mu.Unlock()
	res := run(t, h, "registry", vms)

	burst := int64(h.Registry().Limiter().Burst())
	const lateness = 100 * time.Millisecond
	for _, w := range []time.Duration{250 * time.Millisecond, time.Second, 2 * time.Second} {
		allowed := burst + int64(float64(limit)*(w+lateness).Seconds())
		got := log.maxInWindow(w)
		t.Logf("window %v: at most %d bytes sent, %d allowed", w, got, allowed)
		if got > allowed {
			t.Errorf("registry sent %d bytes within %v, more than the %d its limit allows", got, w, allowed)
		}
	}
	// Not vacuous: the registry was the bottleneck and ran near its limit
	// (unless other processes kept the CPUs busy, see CPUBusy and tooLoaded).
	if avg := float64(res.RegistryEgress) / res.Makespan.Seconds(); avg < 0.9*limit {
		if res.MachineCPU >= CPUBusy {
			tooLoaded(t, avg, limit, "registry sent %.0f B/s on average, below its %d B/s limit, while the machine's CPUs were %.0f%% busy: too loaded to tell", avg, limit, 100*res.MachineCPU)
			return
		}
		t.Errorf("registry sent %.0f B/s on average, far below its %d B/s limit: the test did not load it", avg, limit)
	}
}
