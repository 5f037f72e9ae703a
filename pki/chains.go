package pki

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"sync"
	"time"
)

// maxChains bounds the verified chains a Verifier remembers. Only
// certificates the cluster CA signed get in, so the bound is reached only
// by a cluster with that many VMs' certificates live at once; then the
// expired entries go, or all of them.
const maxChains = 8192

// chainKey names a verified chain: the leaf's DER bytes and the usage it
// was checked for.
type chainKey struct {
	raw   string
	usage x509.ExtKeyUsage
}

// validity is when every certificate of a verified chain is valid.
type validity struct{ notBefore, notAfter time.Time }

func (w validity) contains(t time.Time) bool {
	return !t.Before(w.notBefore) && !t.After(w.notAfter)
}

// chainCache remembers the chains a Verifier has verified. A chain's
// signatures cannot change and the roots do not, so a leaf verified once
// needs only its validity period checked again. Every connection of a VM
// presents the same certificate, and checking its signatures at every
// handshake and every request cost 6-7% of the CPU of 128 emulated VMs
// (faasnet bench --vms 128 --cpuprofile).
type chainCache struct {
	mu sync.Mutex
	m  map[chainKey]validity
}

func (c *chainCache) get(leaf *x509.Certificate, usage x509.ExtKeyUsage) (validity, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w, ok := c.m[chainKey{string(leaf.Raw), usage}]
	return w, ok
}

// put remembers that chain (leaf first, root last) was verified for usage.
func (c *chainCache) put(chain []*x509.Certificate, usage x509.ExtKeyUsage, now time.Time) {
	w := validity{notBefore: chain[0].NotBefore, notAfter: chain[0].NotAfter}
	for _, cert := range chain[1:] {
		if cert.NotBefore.After(w.notBefore) {
			w.notBefore = cert.NotBefore
		}
		if cert.NotAfter.Before(w.notAfter) {
			w.notAfter = cert.NotAfter
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[chainKey]validity)
	}
	if len(c.m) >= maxChains {
		for k, v := range c.m {
			if now.After(v.notAfter) {
				delete(c.m, k)
			}
		}
		if len(c.m) >= maxChains {
			clear(c.m)
		}
	}
	c.m[chainKey{string(chain[0].Raw), usage}] = w
}

// sessionsOf is the TLS session cache of a client presenting k's current
// certificate: v's sessions, keyed by that certificate as well as by the
// server. A resumed session carries the certificate it was made with, so
// after a renewal the next connections present the new certificate
// instead of resuming with the old one.
func (v *Verifier) sessionsOf(k *Keeper) tls.ClientSessionCache {
	if v.sessions == nil {
		return nil
	}
	c := k.Get()
	if len(c.Certificate) == 0 {
		return nil // no certificate to present: nothing worth resuming
	}
	sum := sha256.Sum256(c.Certificate[0])
	return certSessions{cache: v.sessions, cert: hex.EncodeToString(sum[:8])}
}

// certSessions is a session cache seen through one client certificate.
type certSessions struct {
	cache tls.ClientSessionCache
	cert  string // a short digest of the client certificate
}

func (s certSessions) Get(server string) (*tls.ClientSessionState, bool) {
	return s.cache.Get(server + " " + s.cert)
}

func (s certSessions) Put(server string, cs *tls.ClientSessionState) {
	s.cache.Put(server+" "+s.cert, cs)
}
