// Package enroll is the VM side of joining a cluster: it makes the VM's key
// locally, has the manager sign a certificate for it (with the join token
// the first time, with the current certificate to renew), checks the answer
// against the CA file the VM was given, and keeps the key and certificate
// in a directory across restarts.
//
// The key never leaves the VM: only a certificate request goes to the
// manager. The manager's answer is not trusted either: the certificate
// must be for this key, name this VM and verify against the CA file, not
// against the CA certificate the answer carries.
package enroll

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/pki"
)

// ErrNoJoinToken is returned by LoadOrEnroll when the directory holds no
// usable certificate and there is no join token to enroll with.
var ErrNoJoinToken = errors.New("no join token")

// Enroll makes a new key for VM vm and enrolls it with the manager at
// managerURL using joinToken. The manager must prove it holds a
// certificate of ca; the certificate it signs is checked against ca.
func Enroll(ctx context.Context, managerURL string, ca *x509.Certificate, joinToken, vm string) (tls.Certificate, error) {
	if err := CheckManagerURL(managerURL); err != nil {
		return tls.Certificate{}, err
	}
	key, err := pki.NewKey()
	if err != nil {
		return tls.Certificate{}, err
	}
	csr, err := pki.NewCSR(key, vm)
	if err != nil {
		return tls.Certificate{}, err
	}
	v := pki.NewVerifier(ca, nil)
	c := api.NewTLSClient(managerURL, v.ManagerClient(nil), "")
	defer c.HTTP.CloseIdleConnections()
	resp, err := c.Enroll(ctx, api.EnrollRequest{VM: vm, CSR: string(csr), JoinToken: joinToken})
	if err != nil {
		return tls.Certificate{}, explain("enrolling", vm, managerURL, err)
	}
	cert, _, err := v.AcceptResponse(resp, key, vm)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("enrolling VM %s with %s: %w", vm, managerURL, err)
	}
	return cert, nil
}

// Renew asks the manager, through c (which must present cur, e.g. a
// client from api.NewTLSClient with a pki.Keeper holding it), for a new
// certificate for cur's key, and checks it against ca. The key stays the
// same, so files and connections keep working through a renewal.
func Renew(ctx context.Context, c *api.Client, vm string, cur tls.Certificate, ca *x509.Certificate) (tls.Certificate, error) {
	key, ok := cur.PrivateKey.(crypto.Signer)
	if !ok {
		return tls.Certificate{}, fmt.Errorf("renewing VM %s: the certificate's key (%T) cannot sign", vm, cur.PrivateKey)
	}
	csr, err := pki.NewCSR(key, vm)
	if err != nil {
		return tls.Certificate{}, err
	}
	resp, err := c.RenewCertificate(ctx, vm, api.RenewRequest{CSR: string(csr)})
	if err != nil {
		return tls.Certificate{}, explain("renewing the certificate of", vm, c.Base, err)
	}
	cert, _, err := pki.NewVerifier(ca, nil).AcceptResponse(resp, key, vm)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("renewing the certificate of VM %s with %s: %w", vm, c.Base, err)
	}
	return cert, nil
}

// CheckManagerURL refuses a manager URL that is not HTTPS: the join
// token, the certificates and the assignments must not cross the network in
// the clear. A URL without a scheme means HTTPS, as for api.NewClient;
// several managers are comma-separated, each checked.
func CheckManagerURL(raw string) error {
	for _, one := range strings.Split(raw, ",") {
		one = strings.TrimSpace(one)
		if !strings.Contains(one, "://") {
			one = "https://" + one
		}
		u, err := url.Parse(one)
		if err != nil {
			return fmt.Errorf("manager URL: %w", err)
		}
		if u.Scheme != "https" || u.Host == "" {
			return fmt.Errorf("manager URL %q: want https://HOST:PORT", one)
		}
	}
	return nil
}

// explain names what failed in err, a manager call's error, in the words an
// operator acts on.
func explain(what, vm, managerURL string, err error) error {
	var se *api.StatusError
	var untrusted *tls.CertificateVerificationError
	switch {
	case errors.As(err, &se) && se.Code == http.StatusUnauthorized && what == "enrolling":
		return fmt.Errorf("%s VM %s: join token refused by the manager at %s (401): %s", what, vm, managerURL, se.Message)
	case errors.As(err, &se) && se.Code == http.StatusForbidden:
		return fmt.Errorf("%s VM %s: refused by the manager at %s (403): %s", what, vm, managerURL, se.Message)
	case errors.As(err, &se):
		return fmt.Errorf("%s VM %s: the manager at %s answered %d: %s", what, vm, managerURL, se.Code, se.Message)
	case errors.As(err, &untrusted), errors.Is(err, pki.ErrChain), errors.Is(err, pki.ErrWrongID):
		return fmt.Errorf("%s VM %s: the server at %s is not the manager of the given CA: %w", what, vm, managerURL, err)
	}
	return fmt.Errorf("%s VM %s with %s: %w", what, vm, managerURL, err)
}

// Save writes c's key and certificate to dir as pki.VMFiles names them
// (NAME.key, private to its owner, and NAME.crt), creating dir. The key is
// written first: a crash in between leaves a pair that does not match,
// which LoadOrEnroll replaces.
func Save(dir, vm string, c tls.Certificate) error {
	key, ok := c.PrivateKey.(crypto.Signer)
	if !ok || len(c.Certificate) == 0 {
		return fmt.Errorf("saving the certificate of VM %s: no key or no certificate", vm)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("saving the certificate of VM %s: %w", vm, err)
	}
	keyPath, certPath := pki.VMFiles(dir, vm)
	if err := pki.WriteKey(keyPath, key); err != nil {
		return err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]})
	return pki.WriteFileAtomic(certPath, certPEM, 0o644)
}

// Load reads VM vm's key and certificate from dir and checks that the
// certificate names vm and verifies against ca now.
func Load(dir, vm string, ca *x509.Certificate, now time.Time) (tls.Certificate, error) {
	keyPath, certPath := pki.VMFiles(dir, vm)
	c, err := pki.LoadKeyPair(certPath, keyPath)
	if err != nil {
		return tls.Certificate{}, err
	}
	v := pki.NewVerifier(ca, nil)
	v.Now = func() time.Time { return now }
	id, err := v.Verify([]*x509.Certificate{c.Leaf}, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("%s: %w", certPath, err)
	}
	if id.Manager || id.VM != vm {
		return tls.Certificate{}, fmt.Errorf("%s: %w: it is %s's, not vm/%s's", certPath, pki.ErrWrongID, id, vm)
	}
	return c, nil
}

// LoadOrEnroll returns VM vm's certificate from dir if it is for vm,
// verifies against ca and does not need renewal yet; a valid one that needs
// renewal is renewed with itself. Otherwise it enrolls with joinToken
// (ErrNoJoinToken if empty). What it gets from the manager is saved in dir.
func LoadOrEnroll(ctx context.Context, managerURL string, ca *x509.Certificate, joinToken, vm, dir string) (tls.Certificate, error) {
	now := time.Now()
	cur, loadErr := Load(dir, vm, ca, now)
	if loadErr == nil && !pki.NeedsRenewal(cur.Leaf, now) {
		return cur, nil
	}
	var c tls.Certificate
	var err error
	if loadErr == nil {
		c, err = renewWith(ctx, managerURL, ca, vm, cur)
		if err != nil && joinToken == "" {
			// Still valid: the worker's renewal goes on trying.
			return cur, nil
		}
	}
	if loadErr != nil || err != nil {
		if joinToken == "" {
			return tls.Certificate{}, fmt.Errorf("VM %s: no usable certificate in %s (%v), and %w to enroll with", vm, dir, loadErr, ErrNoJoinToken)
		}
		c, err = Enroll(ctx, managerURL, ca, joinToken, vm)
		if err != nil {
			return tls.Certificate{}, err
		}
	}
	if err := Save(dir, vm, c); err != nil {
		return tls.Certificate{}, err
	}
	return c, nil
}

// renewWith renews cur over a manager client that presents it.
func renewWith(ctx context.Context, managerURL string, ca *x509.Certificate, vm string, cur tls.Certificate) (tls.Certificate, error) {
	if err := CheckManagerURL(managerURL); err != nil {
		return tls.Certificate{}, err
	}
	v := pki.NewVerifier(ca, nil)
	c := api.NewTLSClient(managerURL, v.ManagerClient(pki.NewKeeper(cur)), "")
	defer c.HTTP.CloseIdleConnections()
	return Renew(ctx, c, vm, cur, ca)
}
