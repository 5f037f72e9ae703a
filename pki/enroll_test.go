package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
)

// tok has the form of a token; ParseEnrollRequest does not judge more.
var tok = strings.Repeat("A", 43)

func enrollJSON(t testing.TB, vm, csr, token string) string {
	b, err := json.Marshal(EnrollRequest{VM: vm, CSR: csr, JoinToken: token})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func csrPEM(t testing.TB, key any, tmpl *x509.CertificateRequest) string {
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func TestParseEnrollRequest(t *testing.T) {
	key, _ := NewKey()
	good, err := NewCSR(key, "vm-1")
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	p521, _ := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	block, _ := pem.Decode(good)
	tampered := append([]byte(nil), block.Bytes...)
	tampered[len(tampered)-5] ^= 1
	tamperedPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: tampered}))

	tests := []struct {
		name string
		body string
		ok   bool
	}{
		{"good", enrollJSON(t, "vm-1", string(good), tok), true},
		{"ed25519", enrollJSON(t, "vm-1", csrPEM(t, edKey, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "vm-1"}}), tok), true},
		{"trailing space", enrollJSON(t, "vm-1", string(good), tok) + "\n ", true},
		{"bad vm", enrollJSON(t, "../vm", string(good), tok), false},
		{"empty vm", enrollJSON(t, "", string(good), tok), false},
		{"no token", enrollJSON(t, "vm-1", string(good), ""), false},
		{"malformed token", enrollJSON(t, "vm-1", string(good), "hunter2"), false},
		{"csr for another vm", enrollJSON(t, "vm-2", string(good), tok), false},
		{"tampered csr", enrollJSON(t, "vm-1", tamperedPEM, tok), false},
		{"two pem blocks", enrollJSON(t, "vm-1", string(good)+string(good), tok), false},
		{"certificate block", enrollJSON(t, "vm-1", strings.Replace(string(good), "CERTIFICATE REQUEST", "CERTIFICATE", 2), tok), false},
		{"no pem", enrollJSON(t, "vm-1", "hello", tok), false},
		{"csr asks for a dns name", enrollJSON(t, "vm-1", csrPEM(t, key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "vm-1"}, DNSNames: []string{"manager"}}), tok), false},
		{"p521 key", enrollJSON(t, "vm-1", csrPEM(t, p521, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "vm-1"}}), tok), false},
		{"rsa key", enrollJSON(t, "vm-1", csrPEM(t, rsaKey, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "vm-1"}}), tok), false},
		{"unknown field", strings.Replace(enrollJSON(t, "vm-1", string(good), tok), `"vm"`, `"admin":true,"vm"`, 1), false},
		{"two objects", enrollJSON(t, "vm-1", string(good), tok) + "{}", false},
		{"not json", "vm=vm-1", false},
		{"too large", enrollJSON(t, "vm-1", string(good), tok+strings.Repeat("a", MaxEnrollSize)), false},
		{"empty", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := ParseEnrollRequest(strings.NewReader(tt.body))
			if !tt.ok {
				if err == nil || !errors.Is(err, ErrEnroll) {
					t.Fatalf("err = %v, want ErrEnroll", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if e.VM != "vm-1" || e.JoinToken != tok || e.CSR == nil {
				t.Fatalf("parsed %+v", e)
			}
		})
	}
}

// The whole path: a VM's request, parsed by the manager, signed by the CA,
// names the VM and the VM's own key.
func TestEnrollRoundTrip(t *testing.T) {
	ca := newCA(t)
	key, _ := NewKey()
	csr, _ := NewCSR(key, "vm-9")
	e, err := ParseEnrollRequest(strings.NewReader(enrollJSON(t, "vm-9", string(csr), tok)))
	if err != nil {
		t.Fatal(err)
	}
	cert, _, err := ca.SignVM(e.CSR, e.VM, t0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if vm, err := VMFromCert(cert); err != nil || vm != "vm-9" || !publicEqual(cert.PublicKey, key.Public()) {
		t.Fatalf("VMFromCert = %q, %v", vm, err)
	}
}

func FuzzParseEnrollRequest(f *testing.F) {
	key, _ := NewKey()
	good, _ := NewCSR(key, "vm-1")
	f.Add(enrollJSON(f, "vm-1", string(good), tok))
	f.Add(enrollJSON(f, "vm-1", string(good)+string(good), tok))
	f.Add(`{"vm":"a","csr":"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n","join_token":"x"}`)
	f.Add(`{}`)
	f.Fuzz(func(t *testing.T, body string) {
		e, err := ParseEnrollRequest(strings.NewReader(body))
		if err != nil {
			if !errors.Is(err, ErrEnroll) {
				t.Fatalf("error does not wrap ErrEnroll: %v", err)
			}
			return
		}
		// Whatever is accepted is what the CA can sign for.
		if e.CSR.Subject.CommonName != e.VM || e.JoinToken == "" || len(body) > MaxEnrollSize {
			t.Fatalf("accepted %q: %+v", body, e)
		}
		if err := e.CSR.CheckSignature(); err != nil {
			t.Fatalf("accepted a CSR whose signature fails: %v", err)
		}
	})
}

func TestAcceptCertificate(t *testing.T) {
	ca, other := newCA(t), newCA(t)
	v := NewVerifier(ca.Cert, nil)
	v.Now = func() time.Time { return t0 }
	key, _ := NewKey()
	stranger, _ := NewKey()
	answer := func(c *CA, k crypto.Signer, vm string) string {
		_, p, err := c.SignVM(mustCSR(t, k, vm), vm, t0, 0)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(EnrollResponse{Certificate: string(p), CA: string(c.CertPEM)})
		return string(b)
	}
	tests := []struct {
		name, body string
		ok         bool
	}{
		{"good", answer(ca, key, "vm-1"), true},
		{"another VM's name", answer(ca, key, "vm-2"), false},
		{"another key", answer(ca, stranger, "vm-1"), false},
		{"another CA", answer(other, key, "vm-1"), false},
		{"garbage", `{"certificate":"x"}`, false},
		{"too large", `{"certificate":"` + strings.Repeat("a", 70<<10) + `"}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, p, err := v.AcceptCertificate(strings.NewReader(tt.body), key, "vm-1")
			if !tt.ok {
				if err == nil {
					t.Fatal("accepted")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if vm, _ := VMFromCert(c.Leaf); vm != "vm-1" || len(p) == 0 {
				t.Fatalf("got %q", vm)
			}
		})
	}
}

func renewJSON(t testing.TB, csr string) string {
	b, err := json.Marshal(api.RenewRequest{CSR: csr})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParseRenewRequest(t *testing.T) {
	key, _ := NewKey()
	good, err := NewCSR(key, "vm-1")
	if err != nil {
		t.Fatal(err)
	}
	other, _ := NewCSR(key, "vm-2")
	withSAN := csrPEM(t, key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "vm-1"}, DNSNames: []string{"evil.example"}})
	tests := []struct {
		name string
		body string
		ok   bool
	}{
		{"good", renewJSON(t, string(good)), true},
		{"another VM's name", renewJSON(t, string(other)), false},
		{"asks for names", renewJSON(t, withSAN), false},
		{"two CSRs", renewJSON(t, string(good)+string(good)), false},
		{"unknown field", `{"csr":"x","vm":"vm-1"}`, false},
		{"trailing data", renewJSON(t, string(good)) + "{}", false},
		{"empty", ``, false},
		{"too big", `{"csr":"` + strings.Repeat("A", MaxEnrollSize) + `"}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			csr, err := ParseRenewRequest(strings.NewReader(tt.body), "vm-1")
			if tt.ok != (err == nil) {
				t.Fatalf("ParseRenewRequest = %v, want ok %v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrEnroll) {
				t.Errorf("error does not wrap ErrEnroll: %v", err)
			}
			if err == nil && !publicEqual(csr.PublicKey, key.Public()) {
				t.Error("the parsed CSR is not for the request's key")
			}
		})
	}
}

func FuzzParseRenewRequest(f *testing.F) {
	key, _ := NewKey()
	good, _ := NewCSR(key, "vm-1")
	f.Add(renewJSON(f, string(good)))
	f.Add(renewJSON(f, string(good)+"\n"))
	f.Add(`{"csr":"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"}`)
	f.Add(`{}`)
	f.Fuzz(func(t *testing.T, body string) {
		csr, err := ParseRenewRequest(strings.NewReader(body), "vm-1")
		if err != nil {
			if !errors.Is(err, ErrEnroll) {
				t.Fatalf("error does not wrap ErrEnroll: %v", err)
			}
			return
		}
		if csr.Subject.CommonName != "vm-1" || len(body) > MaxEnrollSize {
			t.Fatalf("accepted %q for another VM", body)
		}
		if err := checkCSR(csr); err != nil {
			t.Fatalf("accepted a CSR the CA would refuse: %v", err)
		}
	})
}

func TestKeyID(t *testing.T) {
	a, _ := NewKey()
	b, _ := NewKey()
	ida, err := KeyID(a.Public())
	if err != nil {
		t.Fatal(err)
	}
	again, _ := KeyID(a.Public())
	idb, _ := KeyID(b.Public())
	if ida != again || ida == idb || len(ida) != 64 {
		t.Errorf("KeyID: %s, %s, %s", ida, again, idb)
	}
}
