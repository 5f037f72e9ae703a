package worker

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/enroll"
	"github.com/faasnet/faasnet/peer"
	"github.com/faasnet/faasnet/pki"
)

// Security is a worker's identity and what it trusts. With it, everything
// on the peer listener is mutual TLS with certificates of the cluster CA:
// assignments are accepted from the manager only, and blobs are served only
// to a VM holding a grant that covers them. The manager is called over
// mutual TLS too. Without it (Config.Security nil) the worker trusts every
// packet: that is for benchmarks measuring what TLS costs and for tests of
// other parts, never for a cluster.
type Security struct {
	// Keeper holds this VM's certificate, from enrollment; the worker
	// renews it in place.
	Keeper *pki.Keeper
	// CA is the cluster CA: the manager's and the peers' certificates and
	// the grants are checked against it, and nothing else is trusted.
	CA *x509.Certificate
	// CertDir is where renewed certificates are saved (pki.VMFiles); ""
	// keeps them in memory only.
	CertDir string
}

// check refuses a Security the worker cannot run with.
func (s *Security) check(vm, managerURL string) error {
	if s.Keeper == nil || s.CA == nil {
		return errors.New("worker: security needs a certificate (Keeper) and the cluster CA")
	}
	if err := enroll.CheckManagerURL(managerURL); err != nil {
		return fmt.Errorf("worker: %w", err)
	}
	c := s.Keeper.Get()
	if c.Leaf == nil {
		return errors.New("worker: the certificate has no parsed leaf")
	}
	id, err := pki.NewVerifier(s.CA, nil).Verify([]*x509.Certificate{c.Leaf}, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return fmt.Errorf("worker %s: its certificate: %w (enroll again)", vm, err)
	}
	if id.Manager || id.VM != vm {
		return fmt.Errorf("worker %s: the certificate is %s's", vm, id)
	}
	return nil
}

// secure sets up what Security asks for: the verifier with the worker's
// revocation set, the manager client and the peer client. Called by New.
func (w *Worker) secure() {
	s := w.cfg.Security
	w.revoked = &pki.Revocations{}
	w.verifier = pki.NewVerifier(s.CA, w.revoked)
	w.mgr = api.NewTLSClient(w.cfg.Manager, w.verifier.ManagerClient(s.Keeper), "")
	w.peers = peer.NewTLSClient(func(vm string) *tls.Config {
		return w.verifier.PeerClient(s.Keeper, vm)
	}, w.down)
}

// listen wraps the peer listener in TLS when the worker is secure.
func (w *Worker) listen(ln net.Listener) net.Listener {
	if w.cfg.Security == nil {
		return ln
	}
	return tls.NewListener(ln, w.peerTLS())
}

// peerTLS is the peer listener's TLS settings: a client certificate of the
// cluster CA is required; refused handshakes are counted by reason (the
// http.Server logs each with the client's address).
func (w *Worker) peerTLS() *tls.Config {
	cfg := w.verifier.PeerServer(w.cfg.Security.Keeper)
	verify := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		err := verify(cs)
		if err != nil {
			w.metrics.refusals.WithLabelValues(certReason(err)).Inc()
		}
		return err
	}
	return cfg
}

// certReason labels a refused certificate.
func certReason(err error) string {
	switch {
	case errors.Is(err, pki.ErrNoCert):
		return "no_certificate"
	case errors.Is(err, pki.ErrRevoked):
		return "revoked"
	case errors.Is(err, pki.ErrChain):
		return "untrusted_certificate"
	}
	return "bad_identity"
}

type identityKey struct{}

// identity is the verified caller of a request on the peer listener (the
// zero Identity on an insecure worker).
func identity(ctx context.Context) pki.Identity {
	id, _ := ctx.Value(identityKey{}).(pki.Identity)
	return id
}

// authenticate checks the caller's certificate again on every request,
// because a connection outlives its handshake: a VM revoked or expired
// since is refused at its next request. Handlers find the caller with
// identity.
func (w *Worker) authenticate(h http.Handler) http.Handler {
	if w.cfg.Security == nil {
		return h
	}
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		id, err := w.verifier.Peer(r.TLS)
		if err != nil {
			w.refuse(rw, r, certReason(err), err)
			return
		}
		h.ServeHTTP(rw, r.WithContext(context.WithValue(r.Context(), identityKey{}, id)))
	})
}

// refused counts and logs a refusal on the peer listener. The error says
// why in terms of names and digests; no grant or key ever goes in it.
func (w *Worker) refused(r *http.Request, reason string, err error) {
	w.metrics.refusals.WithLabelValues(reason).Inc()
	ok, dropped := w.refusalLog.Allow(reason, time.Now())
	if !ok {
		return // counted; a flood of refusals must not flood the log
	}
	w.log.Warn("refused a request", "reason", reason, "caller", identity(r.Context()).String(),
		"remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path, "err", err, "not_logged_before", dropped)
}

// refuse is refused, answering 403.
func (w *Worker) refuse(rw http.ResponseWriter, r *http.Request, reason string, err error) {
	w.refused(r, reason, err)
	rw.Header().Set("Content-Type", "application/json")
	rw.WriteHeader(http.StatusForbidden)
	json.NewEncoder(rw).Encode(api.Error{Message: err.Error()})
}

// revocationMemory is how long a serial the manager listed stays refused
// after the manager last listed it. The manager lists every revoked
// certificate until it expires, in every heartbeat answer, so entries are
// refreshed long before they are dropped; dropping them bounds the set.
const revocationMemory = 2 * pki.DefaultVMTTL

// learnRevoked adds the serials of an assignments document to the set the
// peer listener refuses. A connection of a revoked VM already open is
// refused at its next request (authenticate); idle connections to peers are
// dropped, so that the next request to one is a new handshake.
func (w *Worker) learnRevoked(serials []string) {
	if w.revoked == nil {
		return
	}
	now := time.Now()
	added := false
	for _, s := range serials {
		n, ok := parseSerial(s)
		if !ok {
			w.log.Warn("ignoring a malformed revoked serial from the manager", "serial", fmt.Sprintf("%.40q", s))
			continue
		}
		added = added || !w.revoked.Revoked(n)
		w.revoked.Add(n.Text(16), now.Add(revocationMemory))
	}
	w.revoked.Prune(now)
	if added {
		w.peers.HTTP.CloseIdleConnections()
	}
}

// parseSerial reads a certificate serial in hex: positive, at most 20
// bytes (RFC 5280), in any case and with leading zeros.
func parseSerial(s string) (*big.Int, bool) {
	if s == "" || len(s) > 64 {
		return nil, false
	}
	n, ok := new(big.Int).SetString(s, 16)
	if !ok || n.Sign() <= 0 || n.BitLen() > 160 {
		return nil, false
	}
	return n, true
}

// Renewal retry bounds: a failed renewal is retried with backoff, and a
// new certificate is never renewed sooner than minRenewal, so that a
// manager issuing short-lived certificates cannot make the worker spin.
const (
	minRenewal = time.Second
	maxRetry   = time.Minute
)

// renewLoop renews the worker's certificate when pki.NeedsRenewal says so,
// until ctx is done. Listeners and clients take the new certificate at
// their next handshake (the Keeper); CertDir keeps it for a restart.
func (w *Worker) renewLoop(ctx context.Context) {
	s := w.cfg.Security
	retry := minRenewal
	wait := renewalDue(s.Keeper.Get().Leaf, time.Now())
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if err := w.renew(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			leaf := s.Keeper.Get().Leaf
			w.log.Error("renewing the VM certificate failed; retrying", "err", err, "expires", leaf.NotAfter, "retry", retry)
			wait, retry = retry, min(2*retry, maxRetry)
			continue
		}
		retry = minRenewal
		wait = max(renewalDue(s.Keeper.Get().Leaf, time.Now()), minRenewal)
	}
}

// renewalDue is how long until c needs renewal (0 if it does now).
func renewalDue(c *x509.Certificate, now time.Time) time.Duration {
	life := c.NotAfter.Sub(c.NotBefore)
	return max(c.NotBefore.Add(life*2/3).Sub(now), 0)
}

// renew gets a new certificate for the worker's key and puts it in use.
func (w *Worker) renew(ctx context.Context) error {
	s := w.cfg.Security
	c, err := enroll.Renew(ctx, w.mgr, w.cfg.ID, s.Keeper.Get(), s.CA)
	if err != nil {
		return err
	}
	// Saved before it is put in use: whoever sees the new certificate in
	// use (a restart, a test) finds it on disk too.
	if s.CertDir != "" {
		if err := enroll.Save(s.CertDir, w.cfg.ID, c); err != nil {
			// Put in use all the same; only a restart would miss it.
			w.log.Error("saving the renewed certificate failed", "dir", s.CertDir, "err", err)
		}
	}
	s.Keeper.Set(c)
	w.log.Info("renewed the VM certificate", "expires", c.Leaf.NotAfter)
	return nil
}
