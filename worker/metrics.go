package worker

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are a worker's Prometheus series, on a registry of its own so that
// many workers can share a process.
type metrics struct {
	reg            *prometheus.Registry
	in             *prometheus.CounterVec
	verifyFailures prometheus.Counter
	parentSwitches prometheus.Counter
	demands        prometheus.Counter
	notPinned      prometheus.Counter
	refusals       *prometheus.CounterVec
}

func newMetrics(w *Worker) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		in: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "faasnet_worker_bytes_in_total", Help: "Blob bytes received, by source (parent or registry).",
		}, []string{"source"}),
		verifyFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "faasnet_worker_verification_failures_total", Help: "Blobs whose content did not match their digest (dropped and fetched again).",
		}),
		parentSwitches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "faasnet_worker_parent_switches_total", Help: "Times a function's tree parent changed.",
		}),
		demands: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "faasnet_worker_demand_fetches_total", Help: "On-demand range fetches (a container or a child blocked on bytes).",
		}),
		notPinned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "faasnet_worker_unpinned_manifests_total", Help: "Parent resolve answers refused because they named another manifest than the pinned one.",
		}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "faasnet_worker_peer_refusals_total", Help: "Handshakes and requests refused on the peer listener, by reason (certificate, grant or push checks).",
		}, []string{"reason"}),
	}
	peerStat := func(name, help string, get func() int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(get()) })
	}
	m.reg.MustRegister(m.in, m.verifyFailures, m.parentSwitches, m.demands, m.notPinned, m.refusals,
		peerStat("faasnet_worker_bytes_out_total", "Blob bytes sent to children.", func() int64 { return w.peerSrv.Stats().BytesSent }),
		peerStat("faasnet_worker_blocks_served_total", "Blocks sent to children.", func() int64 { return w.peerSrv.Stats().Blocks }),
		peerStat("faasnet_worker_peer_requests_total", "Peer protocol requests served.", func() int64 { return w.peerSrv.Stats().Requests }),
		peerStat("faasnet_worker_peer_rejected_total", "Child requests refused for lack of an upload slot.", func() int64 { return w.peerSrv.Stats().Rejected }),
		peerStat("faasnet_worker_cache_hits_total", "Cache lookups that found a verified blob.", func() int64 { return w.cache.Stats().Hits }),
		peerStat("faasnet_worker_cache_evictions_total", "Blobs evicted from the cache.", func() int64 { return w.cache.Stats().Evictions }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "faasnet_worker_cache_bytes", Help: "Bytes the cache holds on disk."},
			func() float64 { return float64(w.cache.Stats().Bytes) }),
	)
	return m
}

func (m *metrics) bytesIn(fromParent bool, n int64) {
	src := "registry"
	if fromParent {
		src = "parent"
	}
	m.in.WithLabelValues(src).Add(float64(n))
}
