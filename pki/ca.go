// Package pki is the cluster's certificate authority and the TLS settings
// built on it.
//
// Threat model: anyone may reach the manager's and the workers' listeners,
// and a VM may be taken over. So every VM proves who it is with a short-lived
// certificate from the cluster CA that names its VM id, its key never leaves
// the VM (it sends a CSR), and a certificate can be revoked before it expires.
// The manager holds the CA key; nothing else is trusted: not the system roots,
// not a certificate's DNS names on a peer link (peers dial each other by
// address, so the VM id in the certificate is what is checked), not a
// self-signed or foreign chain.
//
// Naming rule (one rule, checked strictly by Identify): a VM's certificate
// has CommonName NAME and exactly one URI SAN, faasnet://vm/NAME, and no other
// names; the manager's has the URI SAN faasnet://manager plus the DNS names
// and IP addresses clients dial it by.
package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// File names of the CA inside its directory.
const (
	CertFile = "ca.crt"
	KeyFile  = "ca.key"
)

// Lifetimes. A VM certificate is short-lived so that a stolen key stops
// working soon even if nobody revokes it; the CA outlives every cluster.
const (
	DefaultVMTTL     = 24 * time.Hour
	DefaultServerTTL = 90 * 24 * time.Hour
	caTTL            = 20 * 365 * 24 * time.Hour
	// backdate covers clocks that run a little behind the manager's.
	backdate = 5 * time.Minute
)

// CA is the cluster's certificate authority: its certificate and key.
type CA struct {
	Cert    *x509.Certificate
	CertPEM []byte
	key     crypto.Signer
}

// Public returns the CA's public key, the key grants are checked against.
func (ca *CA) Public() crypto.PublicKey { return ca.Cert.PublicKey }

// Signer returns the CA's private key, for signing grants.
func (ca *CA) Signer() crypto.Signer { return ca.key }

// Pool returns a pool holding only the CA certificate.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Init loads the CA from dir, creating dir, the key and the certificate on
// first start. It never replaces a half-present CA: a key without its
// certificate (or the reverse) is an error, because a new CA would silently
// orphan every enrolled VM.
func Init(dir string, now time.Time) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)
	_, certErr := os.Stat(certPath)
	_, keyErr := os.Stat(keyPath)
	switch {
	case certErr == nil && keyErr == nil:
		return Load(dir, now)
	case errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist):
		return create(dir, now)
	case errors.Is(certErr, fs.ErrNotExist) && keyErr == nil:
		return nil, fmt.Errorf("CA in %s: %s exists but %s does not; restore it, or remove %s to start a new CA (every VM must then enroll again)", dir, KeyFile, CertFile, keyPath)
	case errors.Is(keyErr, fs.ErrNotExist) && certErr == nil:
		return nil, fmt.Errorf("CA in %s: %s exists but %s does not; restore it, or remove %s to start a new CA (every VM must then enroll again)", dir, CertFile, KeyFile, certPath)
	case certErr != nil:
		return nil, fmt.Errorf("CA certificate: %w", certErr)
	default:
		return nil, fmt.Errorf("CA key: %w", keyErr)
	}
}

// Load reads an existing CA from dir and checks it: the key file is private
// to its owner, the key matches the certificate, and the certificate is a
// CA certificate valid at now.
func Load(dir string, now time.Time) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)
	key, err := ReadKey(keyPath)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	cert, err := ParseCert(certPEM)
	if err != nil {
		return nil, fmt.Errorf("CA certificate %s: %w", certPath, err)
	}
	if !cert.IsCA || !cert.BasicConstraintsValid || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("CA certificate %s is not a CA certificate", certPath)
	}
	if now.Before(cert.NotBefore) || now.After(cert.NotAfter) {
		return nil, fmt.Errorf("CA certificate %s is valid from %s to %s, not now (%s)", certPath, cert.NotBefore.Format(time.RFC3339), cert.NotAfter.Format(time.RFC3339), now.Format(time.RFC3339))
	}
	if !publicEqual(cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("CA key %s does not match certificate %s", keyPath, certPath)
	}
	return &CA{Cert: cert, CertPEM: certPEM, key: key}, nil
}

func create(dir string, now time.Time) (*CA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("CA directory: %w", err)
	}
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "faasnet cluster CA " + serial.Text(16)[:8]},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caTTL),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true, // no intermediates: every leaf is signed by this key
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse new CA certificate: %w", err)
	}
	// Key first: a crash between the two leaves a key without a certificate,
	// which Init reports instead of guessing.
	if err := WriteKey(filepath.Join(dir, KeyFile), key); err != nil {
		return nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := WriteFileAtomic(filepath.Join(dir, CertFile), certPEM, 0o644); err != nil {
		return nil, err
	}
	return &CA{Cert: cert, CertPEM: certPEM, key: key}, nil
}

// NewKey returns a new ECDSA P-256 key: small, fast in handshakes, and
// understood by every TLS stack.
func NewKey() (*ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate key: %w", err)
	}
	return k, nil
}

func newSerial() (*big.Int, error) {
	// 128 random bits: unguessable, and unique without a counter.
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil
}

func publicEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}

// ParseCert parses exactly one PEM "CERTIFICATE" block; anything after it
// other than white space is an error.
func ParseCert(b []byte) (*x509.Certificate, error) {
	der, err := onePEM(b, "CERTIFICATE")
	if err != nil {
		return nil, err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	return c, nil
}

// onePEM returns the bytes of the single PEM block of type typ in b.
func onePEM(b []byte, typ string) ([]byte, error) {
	block, rest := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("no PEM %s block", typ)
	}
	if block.Type != typ {
		return nil, fmt.Errorf("PEM block is %q, want %q", block.Type, typ)
	}
	if len(block.Headers) != 0 {
		return nil, fmt.Errorf("PEM %s block has headers", typ)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("data after the PEM %s block", typ)
	}
	return block.Bytes, nil
}
