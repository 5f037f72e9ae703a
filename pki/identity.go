package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"

	"github.com/faasnet/faasnet/api"
)

// URI SAN scheme and hosts of the naming rule (see the package doc).
const (
	uriScheme   = "faasnet"
	vmHost      = "vm"
	managerHost = "manager"
)

// ErrIdentity is wrapped by every error Identify returns.
var ErrIdentity = errors.New("certificate names no faasnet identity")

// Identity is who a verified certificate speaks for: the manager, or one VM.
type Identity struct {
	Manager bool
	VM      string // set when Manager is false
}

func (id Identity) String() string {
	if id.Manager {
		return "manager"
	}
	return "vm/" + id.VM
}

// VMURI returns the URI SAN that names VM vm.
func VMURI(vm string) *url.URL {
	return &url.URL{Scheme: uriScheme, Host: vmHost, Path: "/" + vm}
}

func managerURI() *url.URL { return &url.URL{Scheme: uriScheme, Host: managerHost} }

// Identify reads the identity a certificate names, strictly: exactly one
// faasnet URI SAN, a VM certificate with no DNS, IP or e-mail names and a
// CommonName equal to its VM id, never a CA certificate. It does not check
// the signature: use it on certificates a Verifier has verified.
func Identify(c *x509.Certificate) (Identity, error) {
	if c.IsCA {
		return Identity{}, fmt.Errorf("%w: it is a CA certificate", ErrIdentity)
	}
	if len(c.URIs) != 1 {
		return Identity{}, fmt.Errorf("%w: it has %d URI names, want 1", ErrIdentity, len(c.URIs))
	}
	u := c.URIs[0]
	if u.Scheme != uriScheme || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" || u.RawPath != "" {
		return Identity{}, fmt.Errorf("%w: URI name %.100q is not faasnet://vm/NAME or faasnet://manager", ErrIdentity, u.String())
	}
	switch {
	case u.Host == managerHost && u.Path == "":
		return Identity{Manager: true}, nil
	case u.Host == vmHost && len(u.Path) > 1 && u.Path[0] == '/':
		vm := u.Path[1:]
		if err := api.ValidName("vm", vm); err != nil {
			return Identity{}, fmt.Errorf("%w: %w", ErrIdentity, err)
		}
		if c.Subject.CommonName != vm {
			return Identity{}, fmt.Errorf("%w: CommonName %.100q differs from the VM id %q", ErrIdentity, c.Subject.CommonName, vm)
		}
		if len(c.DNSNames)+len(c.IPAddresses)+len(c.EmailAddresses) != 0 {
			return Identity{}, fmt.Errorf("%w: VM certificate for %q carries DNS, IP or e-mail names", ErrIdentity, vm)
		}
		return Identity{VM: vm}, nil
	default:
		return Identity{}, fmt.Errorf("%w: URI name %.100q is not faasnet://vm/NAME or faasnet://manager", ErrIdentity, u.String())
	}
}

// VMFromCert returns the VM id a certificate names; a manager certificate
// or anything else Identify refuses is an error.
func VMFromCert(c *x509.Certificate) (string, error) {
	id, err := Identify(c)
	if err != nil {
		return "", err
	}
	if id.Manager {
		return "", fmt.Errorf("%w: it is the manager's certificate, not a VM's", ErrIdentity)
	}
	return id.VM, nil
}
