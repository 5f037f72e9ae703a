package pki

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/token"
)

// MaxEnrollSize bounds an enrollment request body: a CSR for an ECDSA or
// Ed25519 key is well under 1 KiB, and this request comes from anyone.
const MaxEnrollSize = 8 << 10

// ErrEnroll is wrapped by every error ParseEnrollRequest returns.
var ErrEnroll = errors.New("bad enrollment request")

// EnrollRequest and EnrollResponse are the wire types of enrollment;
// they live in package api with the rest of the manager's API.
type (
	EnrollRequest  = api.EnrollRequest
	EnrollResponse = api.EnrollResponse
)

// Enrollment is a parsed, checked EnrollRequest. The join token is only
// carried: checking it is the token store's job.
type Enrollment struct {
	VM        string
	CSR       *x509.CertificateRequest
	JoinToken string
}

// ParseEnrollRequest reads and checks an enrollment request: at most
// MaxEnrollSize bytes of JSON, one object with exactly the known fields and
// nothing after it, a VM id api.ValidName accepts, a CSR of exactly one PEM
// block whose signature verifies, with a supported key, naming the VM as its
// CommonName and asking for no other names, and a join token of the one
// token form (whether it is a live join token is the token Set's call).
func ParseEnrollRequest(r io.Reader) (Enrollment, error) {
	body, err := io.ReadAll(io.LimitReader(r, MaxEnrollSize+1))
	if err != nil {
		return Enrollment{}, fmt.Errorf("%w: read: %w", ErrEnroll, err)
	}
	if len(body) > MaxEnrollSize {
		return Enrollment{}, fmt.Errorf("%w: more than %d bytes", ErrEnroll, MaxEnrollSize)
	}
	var req EnrollRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return Enrollment{}, fmt.Errorf("%w: %w", ErrEnroll, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Enrollment{}, fmt.Errorf("%w: data after the JSON object", ErrEnroll)
	}
	if err := api.ValidName("vm", req.VM); err != nil {
		return Enrollment{}, fmt.Errorf("%w: %w", ErrEnroll, err)
	}
	if _, err := token.ParseSecret(req.JoinToken); err != nil {
		return Enrollment{}, fmt.Errorf("%w: join token: %w", ErrEnroll, err)
	}
	der, err := onePEM([]byte(req.CSR), "CERTIFICATE REQUEST")
	if err != nil {
		return Enrollment{}, fmt.Errorf("%w: csr: %w", ErrEnroll, err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return Enrollment{}, fmt.Errorf("%w: csr: %w", ErrEnroll, err)
	}
	if err := checkCSR(csr); err != nil {
		return Enrollment{}, fmt.Errorf("%w: %w", ErrEnroll, err)
	}
	if csr.Subject.CommonName != req.VM {
		return Enrollment{}, fmt.Errorf("%w: csr names %.100q, the request VM %q", ErrEnroll, csr.Subject.CommonName, req.VM)
	}
	return Enrollment{VM: req.VM, CSR: csr, JoinToken: req.JoinToken}, nil
}

// maxEnrollResponse bounds the manager's answer: two certificates.
const maxEnrollResponse = 64 << 10

// AcceptCertificate reads the manager's EnrollResponse and checks the
// certificate before the VM uses it: it is for key, names vm, and verifies
// against v (the CA file the VM was given, not the CA the answer carries).
// It returns the certificate ready for a Keeper and its PEM for saving.
func (v *Verifier) AcceptCertificate(r io.Reader, key crypto.Signer, vm string) (tls.Certificate, []byte, error) {
	body, err := io.ReadAll(io.LimitReader(r, maxEnrollResponse+1))
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("read enrollment response: %w", err)
	}
	if len(body) > maxEnrollResponse {
		return tls.Certificate{}, nil, fmt.Errorf("enrollment response is more than %d bytes", maxEnrollResponse)
	}
	var resp EnrollResponse
	if err := json.Unmarshal(body, &resp); err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("enrollment response: %w", err)
	}
	return v.AcceptResponse(resp, key, vm)
}

// AcceptResponse is AcceptCertificate for an answer already decoded (as
// api.Client's Enroll and RenewCertificate return it).
func (v *Verifier) AcceptResponse(resp EnrollResponse, key crypto.Signer, vm string) (tls.Certificate, []byte, error) {
	certPEM := []byte(resp.Certificate)
	cert, err := ParseCert(certPEM)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("enrollment response: %w", err)
	}
	if !publicEqual(cert.PublicKey, key.Public()) {
		return tls.Certificate{}, nil, fmt.Errorf("enrollment response: the certificate is not for this VM's key")
	}
	id, err := v.Verify([]*x509.Certificate{cert}, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("enrollment response: %w", err)
	}
	if id.Manager || id.VM != vm {
		return tls.Certificate{}, nil, fmt.Errorf("enrollment response: %w: want vm/%s, got %s", ErrWrongID, vm, id)
	}
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}, certPEM, nil
}

// ParseRenewRequest reads and checks a renewal request for vm (the caller
// has already checked that the call came with vm's certificate): at most
// MaxEnrollSize bytes of JSON, one object with exactly the known fields and
// nothing after it, and a CSR as ParseEnrollRequest wants it, naming vm.
func ParseRenewRequest(r io.Reader, vm string) (*x509.CertificateRequest, error) {
	body, err := io.ReadAll(io.LimitReader(r, MaxEnrollSize+1))
	if err != nil {
		return nil, fmt.Errorf("%w: read: %w", ErrEnroll, err)
	}
	if len(body) > MaxEnrollSize {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrEnroll, MaxEnrollSize)
	}
	var req api.RenewRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrEnroll, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the JSON object", ErrEnroll)
	}
	der, err := onePEM([]byte(req.CSR), "CERTIFICATE REQUEST")
	if err != nil {
		return nil, fmt.Errorf("%w: csr: %w", ErrEnroll, err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("%w: csr: %w", ErrEnroll, err)
	}
	if err := checkCSR(csr); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrEnroll, err)
	}
	if csr.Subject.CommonName != vm {
		return nil, fmt.Errorf("%w: csr names %.100q, the VM is %q", ErrEnroll, csr.Subject.CommonName, vm)
	}
	return csr, nil
}

// KeyID returns the hex SHA-256 of a public key's PKIX encoding: a short
// name for a key, to tell whether two certificates or requests share one.
func KeyID(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("key id: %w", err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}
