package manager

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/manager/store"
	"github.com/faasnet/faasnet/pki"
)

// Several managers on one etcd prefix elect a leader (Options.Election).
// Only the leader decides: it runs the control loops (failure detection,
// pushes, certificate upkeep) and takes every write and every VM call;
// its store fences each write on its leader key, so a leader deposed
// without noticing cannot write. A follower answers /healthz, /metrics and
// the UI's page itself and everything else with 307 to the leader's URL.
//
// Redirecting, not forwarding: a follower that forwarded would have to
// speak for the caller, whose identity is its own TLS certificate or
// token; with a redirect the leader authorizes the caller itself, and a
// call never depends on two managers at once. api.Client follows the
// redirect (keeping the token, which Go's redirects would drop between
// hosts), and moves on to another manager when one cannot be reached.
// A follower answers the reads of the stored state itself (the VMs, the
// functions, the trees) from a copy that etcd's watch keeps, change by
// change (follow.go): they stay answered while no manager leads (etcd
// without quorum). What only the leader knows (status reports, the live
// feed) is redirected. A follower's copy lags the stored state by a watch
// event and the rebuild of the trees it touched.
//
// Etcd names a new leader, and followers redirect to it, a moment before
// its term starts: it loads the state first. Calls that reach it in that
// moment wait for the term (awaitTerm) rather than get 503.

// haState is the manager's place in the election.
type haState struct {
	leading atomic.Bool
	// began is closed when this manager starts leading, and replaced when
	// it stops (setLeading); calls held while it takes over wait on it.
	beganMu sync.Mutex
	began   chan struct{}
	held    prometheus.Gauge       // calls waiting for this manager's term
	leader  atomic.Pointer[string] // the leader's URL as last observed
	// unknown is set when a write failed and the reload after it did too
	// (etcd unreachable): the state in memory may hold a change the store
	// does not, or the store one memory lacks. Cleared by the next load.
	unknown atomic.Bool
	resign  chan struct{} // stateUnknown asks the leader to step down

	role     prometheus.Gauge
	changes  prometheus.Counter
	fenced   prometheus.Counter
	requests *prometheus.HistogramVec
}

func (m *Manager) initHA() {
	h := &m.ha
	h.leading.Store(m.opts.Election == nil)
	h.began = make(chan struct{})
	if h.leading.Load() {
		close(h.began)
	}
	h.resign = make(chan struct{}, 1)
	h.held = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "faasnet_manager_held_calls",
		Help: "Calls held while this manager, elected, loads the state before its term starts.",
	})
	h.role = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "faasnet_manager_leader",
		Help: "1 while this manager leads (always, with a local store), 0 while it follows.",
	})
	h.changes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "faasnet_manager_leader_changes_total",
		Help: "Times this manager became leader or stopped leading.",
	})
	h.fenced = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "faasnet_manager_fenced_writes_total",
		Help: "Writes the store refused because this manager did not (or no longer) lead.",
	})
	h.requests = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "faasnet_manager_etcd_request_seconds",
		Help:    "Latency of the etcd requests of the state store, by kind (get, txn) and result.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
	}, []string{"op", "result"})
	if h.leading.Load() {
		h.role.Set(1)
	}
	m.metrics.reg.MustRegister(h.role, h.changes, h.fenced, h.requests, h.held)
}

// Request implements store.EtcdObserver.
func (h *haState) Request(op string, d time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	h.requests.WithLabelValues(op, result).Observe(d.Seconds())
}

// Fenced implements store.EtcdObserver.
func (h *haState) Fenced() { h.fenced.Inc() }

// StoreObserver returns what counts the store's etcd requests and fenced
// writes into the manager's metrics (store.Etcd.SetObserver).
func (m *Manager) StoreObserver() store.EtcdObserver { return &m.ha }

// Leading reports whether this manager leads now.
func (m *Manager) Leading() bool { return m.ha.leading.Load() }

// Leader returns the leader's URL as last observed; "" if unknown, or
// without an election.
func (m *Manager) Leader() string {
	if m.ha.leading.Load() && m.opts.Election != nil {
		return m.opts.Election.Value()
	}
	if p := m.ha.leader.Load(); p != nil {
		return *p
	}
	return ""
}

// Health returns what /healthz answers.
func (m *Manager) Health() api.Health {
	h := api.Health{Status: "ok", Role: api.RoleFollower, Leader: m.Leader()}
	if m.Leading() {
		h.Role = api.RoleLeader
	}
	return h
}

// Run runs the control loops until ctx is done: at once without an
// election, otherwise during each term this manager wins.
func (m *Manager) Run(ctx context.Context) {
	if m.opts.Election == nil {
		m.runLoops(ctx)
		return
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		m.opts.Election.ObserveLeader(ctx, func(l string) { m.ha.leader.Store(&l) })
	})
	wg.Go(func() { m.opts.Election.WatchChanges(ctx, m.followChange) })
	wg.Go(func() { m.renewWhileFollowing(ctx) })
	for ctx.Err() == nil {
		term, err := m.opts.Election.Campaign(ctx)
		if err != nil {
			if ctx.Err() == nil {
				m.log.Error("campaigning for the leadership", "err", err)
				wait(ctx, time.Second)
			}
			continue
		}
		m.lead(ctx, term)
	}
}

// wait returns after d or when ctx ends.
func wait(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// endTimeout bounds giving up the leader key at the end of a term.
const endTimeout = 2 * time.Second

// lead runs the control loops for one term: it loads the state the last
// leader left (which restarts every VM's heartbeat clock, as a restart
// does), and steps down when the term ends or ctx does.
func (m *Manager) lead(ctx context.Context, term *store.Term) {
	defer func() {
		end, cancel := context.WithTimeout(context.WithoutCancel(ctx), endTimeout)
		defer cancel()
		term.End(end)
	}()
	if err := m.takeOver(ctx); err != nil {
		m.log.Error("loading the state as the new leader; giving the leadership up", "err", err)
		wait(ctx, time.Second)
		return
	}
	m.setLeading(true)
	m.log.Info("leading the control plane", "url", m.opts.Election.Value(), "leader_key", term.Key())
	tctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		m.runLoops(tctx)
	}()
	select {
	case <-term.Done():
		m.log.Warn("lost the leadership (cut off from etcd, or paused, for longer than the session TTL): following")
	case <-m.ha.resign:
		m.log.Warn("the state in memory may differ from the stored one (a write and the reload after it failed): giving the leadership up, to load it anew")
	case <-ctx.Done():
	}
	m.setLeading(false)
	cancel()
	<-done
}

func (m *Manager) setLeading(on bool) {
	h := &m.ha
	h.beganMu.Lock()
	defer h.beganMu.Unlock()
	if h.leading.Swap(on) == on {
		return
	}
	h.changes.Inc()
	if on {
		h.role.Set(1)
		close(h.began)
	} else {
		h.role.Set(0)
		h.began = make(chan struct{})
	}
}

// holdTimeout bounds how long a call waits for this manager's term to
// start once etcd names it the leader: loading the whole state took 0.7 to
// 2 s at 10,000 VMs (BenchmarkFollowerLag, when followers still loaded it
// whole).
const holdTimeout = 5 * time.Second

// awaitTerm waits until this manager leads, at most holdTimeout, and
// reports whether it does. Called when etcd already names this manager the
// leader but its term has not started (it is loading the state): a call
// redirected here by a follower waits that moment out instead of getting
// 503.
func (m *Manager) awaitTerm(ctx context.Context) bool {
	h := &m.ha
	h.beganMu.Lock()
	began := h.began
	h.beganMu.Unlock()
	if m.Leading() {
		return true
	}
	h.held.Inc()
	defer h.held.Dec()
	t := time.NewTimer(holdTimeout)
	defer t.Stop()
	select {
	case <-began:
	case <-t.C:
	case <-ctx.Done():
	}
	return m.Leading()
}

// stateUnknown marks the state in memory as unknown after a failed write
// whose reload failed too. With an election the leader steps down, so that
// the next term starts from the store, and no copy is answered from until
// a load succeeds. m.mu is held.
func (m *Manager) stateUnknown() {
	if m.opts.Election == nil {
		return
	}
	m.ha.unknown.Store(true)
	select {
	case m.ha.resign <- struct{}{}:
	default:
	}
}

// takeOver replaces the in-memory state with the store's: the trees, the
// pool (every VM's clock starting now) and the tokens and certificates the
// last leader added.
func (m *Manager) takeOver(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, err := m.load(ctx)
	if err != nil {
		return err
	}
	m.mergeTrust(s)
	m.ha.unknown.Store(false)
	// A resignation asked for in an earlier term is done.
	select {
	case <-m.ha.resign:
	default:
	}
	return nil
}

// mergeTrust adds the tokens and certificates of s that this manager's
// trust state lacks. Both only grow (a revoked token or certificate keeps
// its record), so adding is enough. m.mu is held.
func (m *Manager) mergeTrust(s store.State) {
	t := m.trust
	if t == nil {
		return
	}
	for _, r := range s.Tokens {
		if err := t.tokens.Add(r); err != nil && !r.Revoked.IsZero() {
			t.tokens.Revoke(r.ID, r.Revoked)
		}
	}
	for _, c := range s.Certs {
		t.certs[c.Serial] = c
		if !c.Revoked.IsZero() {
			t.revoked.Add(c.Serial, c.NotAfter)
		}
	}
	t.refreshRevoked()
}

// renewWhileFollowing renews the manager's own certificate when due while
// it follows (the leader's loops do while it leads), until ctx ends: a
// follower serves TLS too.
func (m *Manager) renewWhileFollowing(ctx context.Context) {
	t := time.NewTicker(maintainEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if tr := m.trust; tr != nil && !m.Leading() {
			now := m.opts.Now()
			if leaf := tr.keeper.Get().Leaf; pki.NeedsRenewal(leaf, now) {
				cert, err := tr.ca.IssueServer(tr.sec.Addr, tr.sec.Names, now, tr.sec.ServerCertTTL)
				if err != nil {
					m.log.Error("renewing the manager certificate", "err", err)
					continue
				}
				tr.keeper.Set(cert)
				m.log.Info("renewed the manager certificate", "expires", cert.Leaf.NotAfter)
			}
		}
	}
}

// followerAnswers reports whether a follower answers r itself.
func followerAnswers(r *http.Request) bool {
	p := r.URL.Path
	if p == api.HealthPath || p == "/metrics" {
		return true
	}
	if r.Method != http.MethodGet {
		return false
	}
	if strings.HasPrefix(p, "/ui/") || p == api.Prefix+"/vms" || p == api.Prefix+"/functions" {
		return true
	}
	fn, ok := strings.CutPrefix(p, api.Prefix+"/functions/")
	return ok && strings.HasSuffix(fn, "/tree") && strings.Count(fn, "/") == 1
}

// errNoLeader is a follower's answer while no leader is known.
var errNoLeader = errors.New("no manager leads the cluster right now (an election is under way, or etcd has no quorum); try again shortly")

// errStateUnknown is a follower's answer to reads while its copy is unknown.
var errStateUnknown = errors.New("this manager's copy of the state is unknown since a write and the reload after it failed (etcd unreachable, or without quorum); ask another manager, or try again shortly")

// followers wraps the API: a follower sends every call it does not answer
// itself to the leader.
func (m *Manager) followers(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if m.Leading() || r.URL.Path == api.HealthPath || r.URL.Path == "/metrics" {
			next.ServeHTTP(w, r)
			return
		}
		if followerAnswers(r) {
			if m.ha.unknown.Load() && !strings.HasPrefix(r.URL.Path, "/ui/") {
				w.Header().Set("Retry-After", "1")
				writeError(w, http.StatusServiceUnavailable, errStateUnknown.Error())
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		leader := m.Leader()
		if leader == m.opts.Election.Value() && m.awaitTerm(r.Context()) {
			next.ServeHTTP(w, r)
			return
		}
		if leader == "" || leader == m.opts.Election.Value() {
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusServiceUnavailable, errNoLeader.Error())
			return
		}
		w.Header().Set("Location", leader+r.URL.RequestURI())
		writeError(w, http.StatusTemporaryRedirect, "this manager follows; the leader is "+leader)
	})
}

func (m *Manager) handleHealth(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, m.Health())
}
