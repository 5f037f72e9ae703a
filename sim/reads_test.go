package sim

import (
	"math"
	"testing"
	"time"
)

// TestReadChainDelaysLazyStarts replays the synthetic trace with and without
// a chain of dependent reads: every lazy start (faasnet-lazy, ondemand)
// comes exactly ReadChain x ReadLatency later, since each read waits for the
// one before it whatever the bandwidth; the bytes moved are the same; whole
// fetches do not read lazily and do not change.
func TestReadChainDelaysLazyStarts(t *testing.T) {
	tr, rc := syntheticReplay(t)
	rc.Resolution = time.Microsecond
	chained := rc
	chained.ReadChain, chained.ReadLatency = 40, 5*time.Millisecond
	for _, tt := range []struct {
		s    Strategy
		want float64 // s later per start
	}{
		{FaaSNetLazy, 0.2},
		{OnDemand, 0.2},
		{FaaSNet, 0},
		{Registry, 0},
	} {
		base, err := Replay(tr, rc, tt.s)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Replay(tr, chained, tt.s)
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Latencies) != len(base.Latencies) || len(got.Latencies) == 0 {
			t.Fatalf("%s: %d starts with the chain, %d without", tt.s, len(got.Latencies), len(base.Latencies))
		}
		for i := range got.Latencies {
			// Each start's own delay; rounding to the resolution may add
			// one step per event.
			if d := got.Latencies[i] - base.Latencies[i]; math.Abs(d-tt.want) > 1e-3 {
				t.Errorf("%s: start %d took %.4f s with the chain, %.4f s without; want %.3f s more", tt.s, i, got.Latencies[i], base.Latencies[i], tt.want)
				break
			}
		}
		if got.ReadChain != 40 || got.ReadLatency != 0.005 || base.ReadChain != 0 || base.ReadLatency != 0 {
			t.Errorf("%s: result says read chain %d of %v s with the chain, %d of %v s without", tt.s, got.ReadChain, got.ReadLatency, base.ReadChain, base.ReadLatency)
		}
		if got.RegistryEgress != base.RegistryEgress {
			t.Errorf("%s: registry sent %d bytes with the chain, %d without", tt.s, got.RegistryEgress, base.RegistryEgress)
		}
	}
}

func TestReadChainMustNotBeNegative(t *testing.T) {
	for _, c := range []Config{{ReadChain: -1}, {ReadLatency: -time.Millisecond}} {
		cfg := DefaultConfig()
		cfg.ReadChain, cfg.ReadLatency = c.ReadChain, c.ReadLatency
		if _, err := cfg.normalize(); err == nil {
			t.Errorf("read chain %d, latency %v: accepted", c.ReadChain, c.ReadLatency)
		}
	}
}
