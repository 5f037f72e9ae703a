package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/faasnet/faasnet/api"
)

// SignVM signs a VM's certificate request: the certificate names vm (the
// naming rule in the package doc), is valid for ttl from now (DefaultVMTTL
// if ttl is 0), and serves both client and server auth, since a worker's
// peer listener is both. Only the CSR's public key is used; its signature
// must verify, and the names it asks for are ignored in favour of vm.
func (ca *CA) SignVM(csr *x509.CertificateRequest, vm string, now time.Time, ttl time.Duration) (*x509.Certificate, []byte, error) {
	if err := api.ValidName("vm", vm); err != nil {
		return nil, nil, err
	}
	if err := checkCSR(csr); err != nil {
		return nil, nil, err
	}
	if ttl == 0 {
		ttl = DefaultVMTTL
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: vm},
		URIs:        []*url.URL{VMURI(vm)},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	return ca.issue(tmpl, csr.PublicKey, now, ttl)
}

// IssueServer issues the manager's certificate for a new key: valid for
// the host of addr and for each extra name (IP addresses become IP names),
// for ttl from now (DefaultServerTTL if ttl is 0). An empty or unspecified
// host (":8080", "0.0.0.0:8080") names localhost and the loopback
// addresses; list the names clients use in extra. The certificate names the
// manager too, so the same certificate identifies it when it pushes to a
// worker (client auth).
func (ca *CA) IssueServer(addr string, extra []string, now time.Time, ttl time.Duration) (tls.Certificate, error) {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	names := append([]string{host}, extra...)
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		names = append(names[1:], "localhost", "127.0.0.1", "::1")
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "faasnet manager"},
		URIs:        []*url.URL{managerURI()},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			continue
		}
		if err := validDNSName(n); err != nil {
			return tls.Certificate{}, err
		}
		tmpl.DNSNames = append(tmpl.DNSNames, n)
	}
	if ttl == 0 {
		ttl = DefaultServerTTL
	}
	key, err := NewKey()
	if err != nil {
		return tls.Certificate{}, err
	}
	cert, _, err := ca.issue(tmpl, key.Public(), now, ttl)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}, nil
}

func (ca *CA) issue(tmpl *x509.Certificate, pub crypto.PublicKey, now time.Time, ttl time.Duration) (*x509.Certificate, []byte, error) {
	if ttl < 0 {
		return nil, nil, fmt.Errorf("certificate lifetime %s is negative", ttl)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = now.Add(-backdate)
	tmpl.NotAfter = now.Add(ttl)
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	tmpl.BasicConstraintsValid = true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign certificate for %s: %w", tmpl.Subject.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse new certificate for %s: %w", tmpl.Subject.CommonName, err)
	}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// validDNSName accepts host names a client may dial: LDH labels of 1 to 63
// bytes, 253 bytes at most, no wildcard.
func validDNSName(n string) error {
	if n == "" || len(n) > 253 {
		return fmt.Errorf("server name %.100q: want 1 to 253 bytes", n)
	}
	for _, label := range strings.Split(strings.TrimSuffix(n, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("server name %.100q: label %q is not a DNS label", n, label)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("server name %.100q: character %q is not allowed in a DNS name", n, c)
			}
		}
	}
	return nil
}

// NewCSR makes the certificate request a VM sends when it enrolls; key stays
// with the VM.
func NewCSR(key crypto.Signer, vm string) ([]byte, error) {
	if err := api.ValidName("vm", vm); err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: vm}}, key)
	if err != nil {
		return nil, fmt.Errorf("certificate request for %s: %w", vm, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// checkCSR accepts a request whose signature verifies, with a key type we
// issue for (ECDSA P-256 or P-384, Ed25519), and that asks for no names
// beyond its CommonName: a request for more is a mistake or a probe.
func checkCSR(csr *x509.CertificateRequest) error {
	if err := csr.CheckSignature(); err != nil {
		return fmt.Errorf("certificate request signature: %w", err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("certificate request key: curve %s is not supported (want P-256 or P-384)", k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
	default:
		return fmt.Errorf("certificate request key: %T is not supported (want ECDSA or Ed25519)", csr.PublicKey)
	}
	if len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.EmailAddresses)+len(csr.URIs) != 0 {
		return fmt.Errorf("certificate request asks for subject alternative names; the CA sets them from the VM id")
	}
	return nil
}
