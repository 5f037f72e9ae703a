package manager

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/digest"
	"github.com/faasnet/faasnet/grant"
	"github.com/faasnet/faasnet/manager/store"
	"github.com/faasnet/faasnet/pki"
	"github.com/faasnet/faasnet/token"
)

// Security makes the manager the cluster's certificate authority and has it
// authorize every call (see Handler). Without it (Options.Security nil) the
// manager serves plain HTTP to anyone: only benchmarks comparing against
// plaintext and old unit tests run that way; the command line cannot.
type Security struct {
	// Dir holds the CA (pki.CertFile, pki.KeyFile, the key mode 0600) and
	// the bootstrap tokens (token.AdminFile, token.JoinFile, mode 0600).
	// They are created on first start and kept across restarts.
	Dir string
	// Addr is the address the API listens on; the manager's certificate
	// is valid for its host (for localhost and the loopback addresses if
	// the host is empty or unspecified).
	Addr string
	// Names are further DNS names or IP addresses clients dial the
	// manager by (--advertise).
	Names []string
	// VMCertTTL is the lifetime of a VM certificate. Default
	// pki.DefaultVMTTL.
	VMCertTTL time.Duration
	// GrantTTL is the lifetime of the grants in assignments. Default
	// DefaultGrantTTL; at most grant.MaxLifetime.
	GrantTTL time.Duration
	// ServerCertTTL is the lifetime of the manager's own certificate,
	// issued at every start and renewed by Run. Default
	// pki.DefaultServerTTL.
	ServerCertTTL time.Duration
}

// DefaultGrantTTL is the default lifetime of a grant. A grant is signed
// again once half of it has passed, so a VM's heartbeats always carry one
// with at least half of it left.
const DefaultGrantTTL = 10 * time.Minute

// trust is the manager's security state. The CA, keeper, verifier,
// revocations and tokens are safe for concurrent use (handshakes and the
// authorization of requests read them without the manager's lock); they
// change only after the store holds the change. certs, revokedList and
// grants are guarded by Manager.mu.
type trust struct {
	sec      Security
	ca       *pki.CA
	keeper   *pki.Keeper
	verifier *pki.Verifier
	revoked  *pki.Revocations
	tokens   *token.Set
	rotateMu sync.Mutex // serializes join token rotations

	certs       map[string]store.Cert // by serial: issued and not yet expired
	revokedList []string              // revoked unexpired serials, sorted: Assignments.Revoked
	grants      map[grantKey]signedGrant
}

type grantKey struct{ vm, fn, digest string }

type signedGrant struct {
	raw             string
	issued, expires time.Time
}

// initTrust sets up the CA, the tokens and the manager's certificate from
// the security options and the loaded state.
func (m *Manager) initTrust(ctx context.Context, s store.State) error {
	sec := *m.opts.Security
	if err := sec.withDefaults(); err != nil {
		return err
	}
	now := m.opts.Now()
	ca, err := pki.Init(sec.Dir, now)
	if err != nil {
		return err
	}
	tokens, err := m.bootstrapTokens(ctx, sec.Dir, s.Tokens, now)
	if err != nil {
		return err
	}
	t := &trust{sec: sec, ca: ca, tokens: tokens, revoked: pki.NewRevocations(nil),
		certs: make(map[string]store.Cert, len(s.Certs)), grants: map[grantKey]signedGrant{}}
	for _, c := range s.Certs {
		t.certs[c.Serial] = c
		if !c.Revoked.IsZero() {
			t.revoked.Add(c.Serial, c.NotAfter)
		}
	}
	t.refreshRevoked()
	t.verifier = pki.NewVerifier(ca.Cert, t.revoked)
	t.verifier.Now = m.opts.Now
	cert, err := ca.IssueServer(sec.Addr, sec.Names, now, sec.ServerCertTTL)
	if err != nil {
		return fmt.Errorf("manager certificate for %s %v: %w", sec.Addr, sec.Names, err)
	}
	t.keeper = pki.NewKeeper(cert)
	m.trust = t
	m.log.Info("manager certificate", "dns", cert.Leaf.DNSNames, "ip", cert.Leaf.IPAddresses, "expires", cert.Leaf.NotAfter)
	return nil
}

// bootstrapTokens loads the stored tokens and makes sure the admin and join
// token files in dir hold live tokens (token.Bootstrap), storing what that
// changed.
func (m *Manager) bootstrapTokens(ctx context.Context, dir string, recs []token.Record, now time.Time) (*token.Set, error) {
	tokens, err := token.NewSet(recs)
	if err != nil {
		return nil, fmt.Errorf("loading tokens: %w", err)
	}
	changed, err := token.Bootstrap(dir, tokens, now)
	if err != nil {
		return nil, fmt.Errorf("bootstrap tokens in %s: %w", dir, err)
	}
	if changed {
		if err := m.store.Apply(ctx, store.Batch{PutTokens: tokens.Records()}); err != nil {
			return nil, fmt.Errorf("storing the bootstrap tokens: %w", err)
		}
	}
	return tokens, nil
}

func (s *Security) withDefaults() error {
	if s.Dir == "" {
		return fmt.Errorf("security: no directory for the CA and tokens")
	}
	if s.VMCertTTL == 0 {
		s.VMCertTTL = pki.DefaultVMTTL
	}
	if s.GrantTTL == 0 {
		s.GrantTTL = DefaultGrantTTL
	}
	if s.ServerCertTTL == 0 {
		s.ServerCertTTL = pki.DefaultServerTTL
	}
	switch {
	case s.VMCertTTL < time.Minute:
		return fmt.Errorf("security: VM certificate lifetime %s is under a minute", s.VMCertTTL)
	case s.GrantTTL < time.Minute || s.GrantTTL > grant.MaxLifetime:
		return fmt.Errorf("security: grant lifetime %s is not between a minute and %s", s.GrantTTL, grant.MaxLifetime)
	case s.ServerCertTTL < time.Hour:
		return fmt.Errorf("security: manager certificate lifetime %s is under an hour", s.ServerCertTTL)
	}
	return nil
}

// TLSConfig returns the TLS settings the API must be served with: the
// manager's certificate (renewed in place by Run), and client certificates
// requested and, when sent, verified against the cluster CA. It is nil
// without Options.Security.
func (m *Manager) TLSConfig() *tls.Config {
	if m.trust == nil {
		return nil
	}
	c := m.trust.verifier.ManagerServer(m.trust.keeper)
	verify := c.VerifyConnection
	c.VerifyConnection = func(cs tls.ConnectionState) error {
		err := verify(cs)
		if err != nil {
			m.refusedHandshake(cs, err)
		}
		return err
	}
	return c
}

// refusedHandshake counts and logs a client certificate refused at the
// handshake (another CA, self-signed, expired, revoked).
func (m *Manager) refusedHandshake(cs tls.ConnectionState, err error) {
	reason := reasonBadCert
	if errors.Is(err, pki.ErrRevoked) {
		reason = reasonRevokedCert
	}
	m.metrics.refusals.WithLabelValues(reason).Inc()
	if len(cs.PeerCertificates) == 0 {
		m.log.Warn("refused a client at the handshake", "reason", reason, "err", err)
		return
	}
	leaf := cs.PeerCertificates[0]
	m.log.Warn("refused a client certificate at the handshake", "reason", reason,
		"subject", leaf.Subject.CommonName, "serial", leaf.SerialNumber.Text(16), "err", err)
}

// CA returns the cluster CA (nil without Options.Security). Its key signs
// VM certificates and grants; callers need only CA().Cert or CertPEM.
func (m *Manager) CA() *pki.CA {
	if m.trust == nil {
		return nil
	}
	return m.trust.ca
}

// SecurityFiles returns where the CA certificate and the bootstrap admin
// and join token files are (all "" without Options.Security).
func (m *Manager) SecurityFiles() (caCert, adminToken, joinToken string) {
	if m.trust == nil {
		return "", "", ""
	}
	d := m.trust.sec.Dir
	return filepath.Join(d, pki.CertFile), filepath.Join(d, token.AdminFile), filepath.Join(d, token.JoinFile)
}

// errNoSecurity answers the security endpoints of a manager without a CA.
var errNoSecurity = &Error{404, "this manager runs without a certificate authority: it issues no certificates or tokens"}

// Enroll issues a first certificate to a VM that presents the join token.
// A VM that holds a live certificate for another key cannot be enrolled
// again (409): anyone with the join token could otherwise take over a
// running VM's identity. Revoke it first (DELETE /vms/{vm}).
func (m *Manager) Enroll(ctx context.Context, e pki.Enrollment) (api.EnrollResponse, error) {
	if m.trust == nil {
		return api.EnrollResponse{}, errNoSecurity
	}
	r, err := m.trust.tokens.Authenticate(e.JoinToken, m.opts.Now())
	if err == nil && r.Role != token.Join {
		err = fmt.Errorf("token %s is a %s token, not a join token", r.ID, r.Role)
	}
	if err != nil {
		return api.EnrollResponse{}, &Error{401, fmt.Sprintf("enrolling %s: the join token is not accepted: %v", e.VM, err)}
	}
	return m.issue(ctx, "enroll", e.VM, e.CSR, true)
}

// RenewCertificate issues a new certificate to vm for csr. The caller has
// checked that the request came with vm's current certificate.
func (m *Manager) RenewCertificate(ctx context.Context, vm string, csr *x509.CertificateRequest) (api.EnrollResponse, error) {
	if m.trust == nil {
		return api.EnrollResponse{}, errNoSecurity
	}
	return m.issue(ctx, "renew", vm, csr, false)
}

// issue signs csr for vm and records the certificate, so that revoking vm
// revokes it.
func (m *Manager) issue(ctx context.Context, op, vm string, csr *x509.CertificateRequest, enrolling bool) (api.EnrollResponse, error) {
	t := m.trust
	keyID, err := pki.KeyID(csr.PublicKey)
	if err != nil {
		return api.EnrollResponse{}, badRequest("%v", err)
	}
	var out api.EnrollResponse
	err = m.commit(ctx, op, func(tx *txn) error {
		now := m.opts.Now()
		if c, ok := t.liveCert(vm, now); enrolling && ok && c.Key != keyID {
			return conflict("VM %s holds a live certificate (serial %s, until %s) for another key; revoke it (DELETE %s/vms/%s) before enrolling it again",
				vm, c.Serial, c.NotAfter.Format(time.RFC3339), api.Prefix, vm)
		}
		cert, certPEM, err := t.ca.SignVM(csr, vm, now, t.sec.VMCertTTL)
		if err != nil {
			return badRequest("%v", err)
		}
		rec := store.Cert{Serial: cert.SerialNumber.Text(16), VM: vm, Key: keyID, NotAfter: cert.NotAfter.UTC()}
		tx.batch.PutCerts = append(tx.batch.PutCerts, rec)
		tx.onCommit(func() { t.certs[rec.Serial] = rec })
		out = api.EnrollResponse{Certificate: string(certPEM), CA: string(t.ca.CertPEM), Expires: cert.NotAfter}
		return nil
	})
	if err == nil {
		m.metrics.certs.WithLabelValues(op).Inc()
		m.log.Info("issued a VM certificate", "op", op, "vm", vm, "expires", out.Expires)
	}
	return out, err
}

// liveCert returns a certificate of vm that is neither revoked nor expired.
func (t *trust) liveCert(vm string, now time.Time) (store.Cert, bool) {
	for _, c := range t.certs {
		if c.VM == vm && c.Revoked.IsZero() && now.Before(c.NotAfter) {
			return c, true
		}
	}
	return store.Cert{}, false
}

// revokeVM revokes every unrevoked certificate issued to vm and returns how
// many it revoked. Every VM is told (Assignments.Revoked), so that their
// peer listeners refuse vm too.
func (tx *txn) revokeVM(vm string) int {
	t, m := tx.m.trust, tx.m
	now := m.opts.Now().UTC()
	var revoked []store.Cert
	for _, c := range t.certs {
		if c.VM == vm && c.Revoked.IsZero() {
			c.Revoked = now
			revoked = append(revoked, c)
		}
	}
	if len(revoked) == 0 {
		return 0
	}
	tx.batch.PutCerts = append(tx.batch.PutCerts, revoked...)
	for other := range m.vms {
		tx.touched[other] = true
	}
	tx.onCommit(func() {
		for _, c := range revoked {
			t.certs[c.Serial] = c
			t.revoked.Add(c.Serial, c.NotAfter)
		}
		t.refreshRevoked()
		m.metrics.revoked.Add(float64(len(revoked)))
		m.log.Warn("revoked the certificates of a VM", "vm", vm, "certificates", len(revoked))
	})
	return len(revoked)
}

// refreshRevoked rebuilds revokedList from certs.
func (t *trust) refreshRevoked() {
	var list []string
	for s, c := range t.certs {
		if !c.Revoked.IsZero() {
			list = append(list, s)
		}
	}
	slices.Sort(list)
	t.revokedList = list
}

// grantFor returns vm's grant for fn's pinned digest d, signed anew once
// half of the cached one's life has passed. m.mu is held.
func (m *Manager) grantFor(vm, fn, d string, now time.Time) string {
	t := m.trust
	k := grantKey{vm, fn, d}
	if g, ok := t.grants[k]; ok && now.Before(g.issued.Add(g.expires.Sub(g.issued)/2)) && !now.Before(g.issued) {
		return g.raw
	}
	h, err := digest.Parse(d)
	if err != nil {
		m.log.Error("cannot grant an invalid pinned digest", "function", fn, "digest", d, "err", err)
		return ""
	}
	g := grant.New(vm, fn, []v1.Hash{h}, now, t.sec.GrantTTL)
	raw, err := grant.Sign(t.ca.Signer(), g)
	if err != nil {
		m.log.Error("signing a grant", "vm", vm, "function", fn, "err", err)
		return ""
	}
	t.grants[k] = signedGrant{raw: raw, issued: now, expires: now.Add(t.sec.GrantTTL)}
	return raw
}

// maintainTrust renews the manager's certificate when due, forgets expired
// certificates (a revoked certificate past its expiry fails every handshake
// anyway) and drops grants past their life.
func (m *Manager) maintainTrust(ctx context.Context) error {
	t := m.trust
	if t == nil {
		return nil
	}
	now := m.opts.Now()
	if leaf := t.keeper.Get().Leaf; pki.NeedsRenewal(leaf, now) {
		cert, err := t.ca.IssueServer(t.sec.Addr, t.sec.Names, now, t.sec.ServerCertTTL)
		if err != nil {
			return fmt.Errorf("renewing the manager certificate: %w", err)
		}
		t.keeper.Set(cert)
		m.log.Info("renewed the manager certificate", "expires", cert.Leaf.NotAfter)
	}
	return m.commit(ctx, "prune-certs", func(tx *txn) error {
		for k, g := range t.grants {
			if !now.Before(g.expires) {
				delete(t.grants, k)
			}
		}
		var expired []string
		for s, c := range t.certs {
			if now.After(c.NotAfter) {
				expired = append(expired, s)
			}
		}
		if len(expired) == 0 {
			return nil
		}
		tx.batch.DeleteCerts = expired
		tx.onCommit(func() {
			for _, s := range expired {
				delete(t.certs, s)
			}
			t.revoked.Prune(now)
			t.refreshRevoked()
		})
		return nil
	})
}
