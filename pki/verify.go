package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"time"
)

// Errors a Verifier wraps, so a server can count refusals by reason.
var (
	ErrNoCert  = errors.New("no client certificate")
	ErrChain   = errors.New("certificate not issued by the cluster CA")
	ErrRevoked = errors.New("certificate revoked")
	ErrWrongID = errors.New("certificate names another identity")
)

// Revocations is the set of revoked certificate serial numbers. It is safe
// for concurrent use. The caller persists it (Serials, NewRevocations):
// entries can be dropped once the certificates they name have expired.
type Revocations struct {
	mu sync.RWMutex
	m  map[string]time.Time // serial (hex) -> the certificate's NotAfter
}

// NewRevocations returns a set holding the given serials (hex, as Serials
// returns them) with their certificates' expiry.
func NewRevocations(serials map[string]time.Time) *Revocations {
	r := &Revocations{m: make(map[string]time.Time, len(serials))}
	for s, t := range serials {
		r.m[s] = t
	}
	return r
}

// Revoke adds c's serial number.
func (r *Revocations) Revoke(c *x509.Certificate) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = make(map[string]time.Time)
	}
	r.m[c.SerialNumber.Text(16)] = c.NotAfter
}

// Add adds a serial number (hex, as Serials returns it) revoked elsewhere,
// e.g. one a worker learns from the manager, with its certificate's expiry.
func (r *Revocations) Add(serial string, notAfter time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m == nil {
		r.m = make(map[string]time.Time)
	}
	r.m[serial] = notAfter
}

// Revoked reports whether serial has been revoked. A nil set revokes nothing.
func (r *Revocations) Revoked(serial *big.Int) bool {
	if r == nil {
		return false
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	_, ok := r.m[serial.Text(16)]
	return ok
}

// Serials returns the revoked serials and their certificates' expiry, for
// persisting.
func (r *Revocations) Serials() map[string]time.Time {
	if r == nil {
		return nil
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make(map[string]time.Time, len(r.m))
	for s, t := range r.m {
		out[s] = t
	}
	return out
}

// Prune drops the entries of certificates expired at now, which no
// handshake accepts anyway, so the set does not grow forever.
func (r *Revocations) Prune(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for s, t := range r.m {
		if now.After(t) {
			delete(r.m, s)
		}
	}
}

// Verifier checks certificate chains against the cluster CA only.
type Verifier struct {
	Roots   *x509.CertPool // the cluster CA; never the system roots; fixed once used
	Revoked *Revocations   // may be nil
	Now     func() time.Time

	chains   *chainCache            // chains verified before; nil: none remembered
	sessions tls.ClientSessionCache // PeerClient's TLS sessions to resume
}

// maxSessions bounds the TLS sessions a Verifier's peer clients keep to
// resume: one per server dialed (a VM's parents in each stripe, over time).
const maxSessions = 256

// NewVerifier returns a Verifier trusting ca only. It remembers the chains
// it has verified (only their validity period is checked again), and
// PeerClient's settings resume TLS sessions, so that a VM's many
// connections to its parents do not each pay a full handshake. (The
// manager's clients do not: one kept-alive connection carries the
// heartbeats, and a session made without a client certificate, while
// enrolling, must not be resumed by a VM's calls.)
func NewVerifier(ca *x509.Certificate, revoked *Revocations) *Verifier {
	p := x509.NewCertPool()
	p.AddCert(ca)
	return &Verifier{Roots: p, Revoked: revoked, chains: &chainCache{},
		sessions: tls.NewLRUClientSessionCache(maxSessions)}
}

func (v *Verifier) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}

// Verify checks a peer's chain (leaf first) for usage and returns the
// identity it names. Only the leaf is used: the cluster CA signs every leaf
// itself, so a presented intermediate can only be an attempt to widen trust.
func (v *Verifier) Verify(chain []*x509.Certificate, usage x509.ExtKeyUsage) (Identity, error) {
	if len(chain) == 0 {
		return Identity{}, ErrNoCert
	}
	leaf := chain[0]
	if err := v.verifyChain(leaf, usage); err != nil {
		return Identity{}, fmt.Errorf("%w: %w", ErrChain, err)
	}
	if v.Revoked.Revoked(leaf.SerialNumber) {
		return Identity{}, fmt.Errorf("%w: serial %s (%s)", ErrRevoked, leaf.SerialNumber.Text(16), leaf.Subject.CommonName)
	}
	return Identify(leaf)
}

// verifyChain checks that the cluster CA signed leaf for usage, and that
// the chain is valid now. A chain verified before has only its validity
// period checked again.
func (v *Verifier) verifyChain(leaf *x509.Certificate, usage x509.ExtKeyUsage) error {
	now := v.now()
	if v.chains != nil {
		if w, ok := v.chains.get(leaf, usage); ok {
			if !w.contains(now) {
				return x509.CertificateInvalidError{Cert: leaf, Reason: x509.Expired,
					Detail: fmt.Sprintf("current time %s is outside %s to %s", now.UTC().Format(time.RFC3339),
						w.notBefore.UTC().Format(time.RFC3339), w.notAfter.UTC().Format(time.RFC3339))}
			}
			return nil
		}
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots:       v.Roots,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{usage},
	})
	if err != nil {
		return err
	}
	if v.chains != nil {
		v.chains.put(chains[0], usage, now)
	}
	return nil
}

// Peer returns the identity of a connection's verified client, checking
// again for expiry and revocation: a connection lives longer than a
// handshake, and a VM revoked meanwhile must be refused on its next request.
func (v *Verifier) Peer(cs *tls.ConnectionState) (Identity, error) {
	if cs == nil {
		return Identity{}, ErrNoCert
	}
	return v.Verify(cs.PeerCertificates, x509.ExtKeyUsageClientAuth)
}

// ManagerServer returns the manager API's TLS settings: the manager's
// certificate, and client certificates optional (operators use tokens) but
// verified when present, so a handler can trust Peer's answer.
func (v *Verifier) ManagerServer(k *Keeper) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: k.GetCertificate,
		ClientAuth:     tls.RequestClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return nil
			}
			_, err := v.Verify(cs.PeerCertificates, x509.ExtKeyUsageClientAuth)
			return err
		},
	}
}

// PeerServer returns a worker listener's TLS settings: mutual TLS, and the
// client must hold a certificate from the cluster CA (a VM or the manager).
// Records are always full-sized: the peer protocol moves blobs, and small
// records at a connection's start only cost system calls.
func (v *Verifier) PeerServer(k *Keeper) *tls.Config {
	return &tls.Config{
		MinVersion:                  tls.VersionTLS13,
		GetCertificate:              k.GetCertificate,
		ClientAuth:                  tls.RequireAnyClientCert,
		DynamicRecordSizingDisabled: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := v.Verify(cs.PeerCertificates, x509.ExtKeyUsageClientAuth)
			return err
		},
	}
}

// PeerClient returns the TLS settings for dialing VM want's peer listener
// (a child dialing its parent, the manager pushing to a worker), presenting
// k's certificate. Peers are dialed by address, so the check is the VM id in
// the server's certificate, not a host name. Sessions are resumed (keyed by
// the dialed address and k's certificate); VerifyConnection runs on resumed
// connections too, so the server is checked again for the VM id, expiry and
// revocation, and the server checks the client alike.
func (v *Verifier) PeerClient(k *Keeper, want string) *tls.Config {
	return &tls.Config{
		MinVersion:                  tls.VersionTLS13,
		GetClientCertificate:        k.GetClientCertificate,
		ClientSessionCache:          v.sessionsOf(k),
		DynamicRecordSizingDisabled: true,
		// Verification is not skipped: VerifyConnection below does it, with
		// the VM id in place of the host name.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := v.Verify(cs.PeerCertificates, x509.ExtKeyUsageServerAuth)
			if err != nil {
				return err
			}
			if id.Manager || id.VM != want {
				return fmt.Errorf("%w: dialed VM %q, the server is %s", ErrWrongID, want, id)
			}
			return nil
		},
	}
}

// ManagerClient returns the TLS settings for calling the manager: the
// server must be the manager, with a certificate from the cluster CA valid
// for the dialed host name. k may be nil (operators and enrollment call
// without a certificate).
func (v *Verifier) ManagerClient(k *Keeper) *tls.Config {
	c := &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    v.Roots,
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := v.Verify(cs.PeerCertificates, x509.ExtKeyUsageServerAuth)
			if err != nil {
				return err
			}
			if !id.Manager {
				return fmt.Errorf("%w: the server is %s, not the manager", ErrWrongID, id)
			}
			return nil
		},
	}
	if k != nil {
		c.GetClientCertificate = k.GetClientCertificate
	}
	if v.Now != nil {
		c.Time = v.Now
	}
	return c
}

// Keeper holds the current certificate of a server or VM, so it can be
// renewed under live listeners and clients. It is safe for concurrent use.
type Keeper struct {
	mu   sync.RWMutex
	cert *tls.Certificate
}

// NewKeeper returns a Keeper holding c; c.Leaf must be set.
func NewKeeper(c tls.Certificate) *Keeper {
	k := &Keeper{}
	k.Set(c)
	return k
}

// Set replaces the certificate; handshakes from now on use it.
func (k *Keeper) Set(c tls.Certificate) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.cert = &c
}

// Get returns the current certificate.
func (k *Keeper) Get() tls.Certificate {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return *k.cert
}

// GetCertificate is a tls.Config.GetCertificate.
func (k *Keeper) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c := k.Get()
	return &c, nil
}

// GetClientCertificate is a tls.Config.GetClientCertificate.
func (k *Keeper) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	c := k.Get()
	return &c, nil
}

// NeedsRenewal reports whether c has used two thirds of its lifetime at
// now: late enough not to churn, early enough that a manager outage of a
// third of the lifetime does not strand the VM.
func NeedsRenewal(c *x509.Certificate, now time.Time) bool {
	life := c.NotAfter.Sub(c.NotBefore)
	return !now.Before(c.NotBefore.Add(life * 2 / 3))
}
