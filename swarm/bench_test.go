package swarm

import (
	"testing"
	"time"

	"github.com/faasnet/faasnet/imagegen"
)

// BenchmarkPull16Agents32MiB: 16 agents pull a 32 MiB image (5 layers) at
// once, each agent limited to 4 MiB/s up and down. It reports the makespan
// (until the slowest agent has the image) over the lower bound, the
// origin's egress in copies of the image, and what each agent received in
// vain (duplicates), in images.
//
// The lower bound: no agent receives the image faster than size/download
// rate; a limited origin must send every byte once; all agents together
// cannot receive faster than the origin and the agents upload.
//
// Sub-benchmarks vary what Kraken's design is sensitive to: the origin's
// egress (limited like a VM, or a dedicated cluster that is never the
// bottleneck) and the piece size (Kraken's 4 MiB, or faasnet's 512 KiB
// blocks); everything else is Kraken's default. (A 1 s announce interval
// instead of 3 s changes nothing measurable here.)
func BenchmarkPull16Agents32MiB(b *testing.B) {
	const (
		agents = 16
		rate   = 4 << 20
		size   = 32 << 20
	)
	reg := newTestRegistry(b)
	ref, img := reg.push(b, "fn/bench", imagegen.Spec{TotalSize: size, Layers: 5, Seed: 42})
	total := float64(imageBytes(b, img))
	for _, bc := range []struct {
		name     string
		piece    int64
		originUp int64
	}{
		{"pieces=4MiB/origin=4MiBps", 4 << 20, rate},
		{"pieces=4MiB/origin=unlimited", 4 << 20, 0},
		{"pieces=512KiB/origin=4MiBps", 512 << 10, rate},
		{"pieces=512KiB/origin=unlimited", 512 << 10, 0},
	} {
		b.Run(bc.name, func(b *testing.B) {
			bound := max(total/rate, agents*total/(float64(bc.originUp)+agents*rate))
			if bc.originUp > 0 {
				bound = max(bound, total/float64(bc.originUp))
			}
			cfg := Config{PieceSize: bc.piece, Seed: 42} // Kraken's defaults otherwise
			lim := limits{originUp: bc.originUp, agentUp: rate, agentDown: rate}
			var makespan, originBytes, wasted float64
			for b.Loop() {
				b.StopTimer()
				c := newCluster(b, reg, agents, cfg, lim)
				b.StartTimer()
				start := time.Now()
				stats := pullAll(b, c.agents, ref)
				makespan += time.Since(start).Seconds()
				b.StopTimer()
				for _, s := range stats {
					wasted += float64(s.Wasted)
				}
				originBytes += float64(c.origin.Egress())
				c.close(b)
				b.StartTimer()
			}
			n := float64(b.N)
			b.ReportMetric(makespan/n, "makespan-s")
			b.ReportMetric(bound, "bound-s")
			b.ReportMetric(makespan/n/bound, "makespan/bound")
			b.ReportMetric(originBytes/n/total, "origin-copies")
			b.ReportMetric(wasted/n/(agents*total), "wasted/image")
			b.Logf("lower bound %.2fs, makespan %.2fs, efficiency %.0f%%", bound, makespan/n, 100*bound*n/makespan)
		})
	}
}
