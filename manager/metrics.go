package manager

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the manager's Prometheus series, on a registry of its own so
// that several managers (tests, the in-process cluster) never collide.
type metrics struct {
	reg           *prometheus.Registry
	ops           *prometheus.CounterVec
	heartbeats    prometheus.Counter
	missed        prometheus.Counter
	parentChanges prometheus.Counter
	promotions    prometheus.Counter
	refusals      *prometheus.CounterVec
	certs         *prometheus.CounterVec
	revoked       prometheus.Counter
	claimsIgnored prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "faasnet_manager_operations_total",
			Help: "Control-plane operations by kind and result.",
		}, []string{"op", "result"}),
		heartbeats: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "faasnet_manager_heartbeats_total",
			Help: "Heartbeats received.",
		}),
		missed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "faasnet_manager_heartbeats_missed_total",
			Help: "VMs removed because they stayed silent past the VM timeout.",
		}),
		parentChanges: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "faasnet_manager_parent_changes_total",
			Help: "VMs that got a new parent (including VMs attached to a tree).",
		}),
		promotions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "faasnet_manager_tree_rotations_total",
			Help: "Tree restructurings: a deepest leaf promoted into a removed VM's place (our trees keep every level full, which replaces the paper's AVL rotations).",
		}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "faasnet_manager_auth_refusals_total",
			Help: "Calls refused for their credentials (missing, unknown, expired or revoked token or certificate, wrong role, another VM's certificate, a bad join token), by reason.",
		}, []string{"reason"}),
		certs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "faasnet_manager_certificates_issued_total",
			Help: "VM certificates issued, by enrollment or renewal.",
		}, []string{"op"}),
		revoked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "faasnet_manager_certificates_revoked_total",
			Help: "VM certificates revoked.",
		}),
		claimsIgnored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "faasnet_manager_image_claims_ignored_total",
			Help: "Images a VM reported cached that the manager never assigned to it, ignored by placement.",
		}),
	}
	m.reg.MustRegister(m.ops, m.heartbeats, m.missed, m.parentChanges, m.promotions, m.refusals, m.certs, m.revoked, m.claimsIgnored)
	return m
}

func (m *metrics) op(op string, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.ops.WithLabelValues(op, result).Inc()
}

// collectFrom adds gauges read from the manager's state at scrape time.
func (m *metrics) collectFrom(mg *Manager) {
	count := func(f func() int) func() float64 {
		return func() float64 {
			mg.mu.Lock()
			defer mg.mu.Unlock()
			return float64(f())
		}
	}
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "faasnet_manager_vms", Help: "Registered VMs."},
			count(func() int { return len(mg.vms) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "faasnet_manager_trees", Help: "Function trees with at least one VM."},
			count(func() int {
				n := 0
				for _, f := range mg.fns {
					if f.tree.Len() > 0 {
						n++
					}
				}
				return n
			})),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "faasnet_manager_functions", Help: "Defined functions."},
			count(func() int { return len(mg.fns) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "faasnet_manager_tree_memberships", Help: "VM places summed over all trees."},
			count(func() int {
				n := 0
				for _, f := range mg.fns {
					n += f.tree.Len()
				}
				return n
			})),
	)
}
