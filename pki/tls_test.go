package pki

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"net/url"
	"testing"
	"time"
)

// vmCert enrolls vm with ca at now for ttl, the way a worker does.
func vmCert(t *testing.T, ca *CA, vm string, now time.Time, ttl time.Duration) tls.Certificate {
	t.Helper()
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := ca.SignVM(mustCSR(t, key, vm), vm, now, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: key, Leaf: c}
}

// selfSigned is a certificate that names vm by the naming rule but is
// signed by its own key.
func selfSigned(t *testing.T, vm string) tls.Certificate {
	t.Helper()
	key, _ := NewKey()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7),
		Subject:      pkix.Name{CommonName: vm},
		URIs:         []*url.URL{VMURI(vm)},
		NotBefore:    t0.Add(-time.Hour),
		NotAfter:     t0.Add(time.Hour),
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// handshake runs a real TLS handshake over an in-memory connection and
// returns the server's and the client's errors.
func handshake(t *testing.T, server, client *tls.Config) (serverErr, clientErr error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Loopback TCP, not net.Pipe: an unbuffered pipe deadlocks when one side
	// stops reading to send an alert in the middle of the other's flight.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	cc, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	s, c := tls.Server(sc, server), tls.Client(cc, client)
	done := make(chan error, 1)
	go func() {
		err := s.HandshakeContext(ctx)
		if err == nil {
			_, err = s.Write([]byte{1})
		}
		done <- err
	}()
	// In TLS 1.3 the client finishes its handshake before the server has
	// checked its certificate, and learns of a refusal from the alert it
	// reads next.
	clientErr = c.HandshakeContext(ctx)
	if clientErr == nil {
		_, clientErr = c.Read(make([]byte, 1))
	}
	c.Close()
	serverErr = <-done
	s.Close()
	return serverErr, clientErr
}

func TestPeerMutualTLS(t *testing.T) {
	ca := newCA(t)
	other := newCA(t)
	now := t0.Add(time.Hour)
	revoked := &Revocations{}
	parent := vmCert(t, ca, "parent", t0, 24*time.Hour)
	good := vmCert(t, ca, "child", t0, 24*time.Hour)
	gone := vmCert(t, ca, "child", t0, 24*time.Hour)
	revoked.Revoke(gone.Leaf)
	v := NewVerifier(ca.Cert, revoked)
	v.Now = func() time.Time { return now }

	tests := []struct {
		name       string
		client     *Keeper // nil: no certificate
		want       string  // the parent the client expects
		server     tls.Certificate
		serverRefs error // the error the server must report, nil to accept
		clientRefs error
	}{
		{"cluster VM", NewKeeper(good), "parent", parent, nil, nil},
		{"manager pushing", mustManager(t, ca, now), "parent", parent, nil, nil},
		{"no certificate", nil, "parent", parent, errAny, nil},
		{"other CA", NewKeeper(vmCert(t, other, "child", t0, 24*time.Hour)), "parent", parent, ErrChain, nil},
		{"self-signed", NewKeeper(selfSigned(t, "child")), "parent", parent, ErrChain, nil},
		{"expired", NewKeeper(vmCert(t, ca, "child", t0.Add(-3*time.Hour), time.Hour)), "parent", parent, ErrChain, nil},
		{"not yet valid", NewKeeper(vmCert(t, ca, "child", t0.Add(3*time.Hour), time.Hour)), "parent", parent, ErrChain, nil},
		{"revoked", NewKeeper(gone), "parent", parent, ErrRevoked, nil},
		{"server is another VM", NewKeeper(good), "parent", vmCert(t, ca, "impostor", t0, 24*time.Hour), errAny, ErrWrongID},
		{"server from other CA", NewKeeper(good), "parent", vmCert(t, other, "parent", t0, 24*time.Hour), errAny, ErrChain},
		{"server self-signed", NewKeeper(good), "parent", selfSigned(t, "parent"), errAny, ErrChain},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			scfg := v.PeerServer(NewKeeper(tt.server))
			var ccfg *tls.Config
			if tt.client == nil {
				ccfg = v.PeerClient(NewKeeper(tls.Certificate{}), tt.want)
				ccfg.GetClientCertificate = nil
			} else {
				ccfg = v.PeerClient(tt.client, tt.want)
			}
			serr, cerr := handshake(t, scfg, ccfg)
			check(t, "server", serr, tt.serverRefs)
			if tt.clientRefs != nil {
				check(t, "client", cerr, tt.clientRefs)
			} else if tt.serverRefs == nil && cerr != nil {
				t.Errorf("client: %v", cerr)
			}
		})
	}
}

func mustManager(t *testing.T, ca *CA, now time.Time) *Keeper {
	c, err := ca.IssueServer("127.0.0.1:1", nil, now, 0)
	if err != nil {
		t.Fatal(err)
	}
	return NewKeeper(c)
}

var errAny = errors.New("any error")

func check(t *testing.T, side string, got, want error) {
	t.Helper()
	switch {
	case want == nil && got != nil:
		t.Errorf("%s refused: %v", side, got)
	case want == errAny && got == nil, want != nil && want != errAny && !errors.Is(got, want):
		t.Errorf("%s: got %v, want %v", side, got, want)
	}
}

func TestManagerTLS(t *testing.T) {
	ca := newCA(t)
	other := newCA(t)
	now := t0.Add(time.Hour)
	revoked := &Revocations{}
	gone := vmCert(t, ca, "vm-2", t0, 24*time.Hour)
	revoked.Revoke(gone.Leaf)
	v := NewVerifier(ca.Cert, revoked)
	v.Now = func() time.Time { return now }
	srv := mustManager(t, ca, now)

	tests := []struct {
		name    string
		client  *Keeper
		refused error
		want    Identity // what Peer reports on the server when accepted
	}{
		{"operator without certificate", nil, nil, Identity{}},
		{"VM", NewKeeper(vmCert(t, ca, "vm-1", t0, 24*time.Hour)), nil, Identity{VM: "vm-1"}},
		{"other CA", NewKeeper(vmCert(t, other, "vm-1", t0, 24*time.Hour)), ErrChain, Identity{}},
		{"self-signed", NewKeeper(selfSigned(t, "vm-1")), ErrChain, Identity{}},
		{"expired", NewKeeper(vmCert(t, ca, "vm-1", t0.Add(-3*time.Hour), time.Hour)), ErrChain, Identity{}},
		{"revoked", NewKeeper(gone), ErrRevoked, Identity{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			scfg := v.ManagerServer(srv)
			var got Identity
			var peerErr error
			scfg.VerifyConnection = chain(scfg.VerifyConnection, func(cs tls.ConnectionState) error {
				got, peerErr = v.Peer(&cs)
				return nil
			})
			ccfg := v.ManagerClient(tt.client)
			ccfg.ServerName = "127.0.0.1"
			serr, cerr := handshake(t, scfg, ccfg)
			check(t, "server", serr, tt.refused)
			if tt.refused != nil {
				return
			}
			if cerr != nil {
				t.Fatalf("client: %v", cerr)
			}
			if tt.client == nil {
				if !errors.Is(peerErr, ErrNoCert) {
					t.Errorf("Peer without certificate: %v, want ErrNoCert", peerErr)
				}
				return
			}
			if peerErr != nil || got != tt.want {
				t.Errorf("Peer = %v, %v; want %v", got, peerErr, tt.want)
			}
		})
	}
}

// A VM holds a valid cluster certificate, but it is no manager: a client
// calling the manager must refuse it even if it answers on the manager's
// address, and a manager certificate for another host is refused too.
func TestManagerClientRefusesImpostor(t *testing.T) {
	ca := newCA(t)
	now := t0.Add(time.Hour)
	v := NewVerifier(ca.Cert, nil)
	v.Now = func() time.Time { return now }
	vm := vmCert(t, ca, "vm-1", t0, 24*time.Hour)
	ccfg := v.ManagerClient(nil)
	ccfg.ServerName = "127.0.0.1"
	_, cerr := handshake(t, &tls.Config{Certificates: []tls.Certificate{vm}}, ccfg)
	if cerr == nil {
		t.Fatal("client accepted a VM certificate as the manager")
	}
	ccfg = v.ManagerClient(nil)
	ccfg.ServerName = "manager.elsewhere"
	_, cerr = handshake(t, v.ManagerServer(mustManager(t, ca, now)), ccfg)
	if cerr == nil {
		t.Fatal("client accepted a manager certificate for another host")
	}
}

// A VM revoked while its connection is open is refused on its next request.
func TestPeerRechecksRevocation(t *testing.T) {
	ca := newCA(t)
	revoked := &Revocations{}
	v := NewVerifier(ca.Cert, revoked)
	v.Now = func() time.Time { return t0 }
	c := vmCert(t, ca, "vm-1", t0, time.Hour)
	cs := &tls.ConnectionState{PeerCertificates: []*x509.Certificate{c.Leaf}}
	if id, err := v.Peer(cs); err != nil || id.VM != "vm-1" {
		t.Fatalf("Peer = %v, %v", id, err)
	}
	revoked.Revoke(c.Leaf)
	if _, err := v.Peer(cs); !errors.Is(err, ErrRevoked) {
		t.Fatalf("Peer after revocation = %v, want ErrRevoked", err)
	}
	saved := NewRevocations(revoked.Serials())
	if !saved.Revoked(c.Leaf.SerialNumber) {
		t.Error("revocation lost through Serials/NewRevocations")
	}
	saved.Prune(t0.Add(2 * time.Hour))
	if saved.Revoked(c.Leaf.SerialNumber) {
		t.Error("Prune kept an expired certificate's entry")
	}
}

func chain(a, b func(tls.ConnectionState) error) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if err := a(cs); err != nil {
			return err
		}
		return b(cs)
	}
}

// A renewed certificate set on a live Keeper is what the next handshake
// presents: renewal needs no listener restart.
func TestKeeperRenewal(t *testing.T) {
	ca := newCA(t)
	v := NewVerifier(ca.Cert, nil)
	v.Now = func() time.Time { return t0.Add(time.Hour) }
	first := vmCert(t, ca, "child", t0, 24*time.Hour)
	k := NewKeeper(first)
	var seen *big.Int
	scfg := v.PeerServer(NewKeeper(vmCert(t, ca, "parent", t0, 24*time.Hour)))
	scfg.VerifyConnection = chain(scfg.VerifyConnection, func(cs tls.ConnectionState) error {
		seen = cs.PeerCertificates[0].SerialNumber
		return nil
	})
	scfg.SessionTicketsDisabled = true
	if serr, cerr := handshake(t, scfg, v.PeerClient(k, "parent")); serr != nil || cerr != nil {
		t.Fatal(serr, cerr)
	}
	if seen.Cmp(first.Leaf.SerialNumber) != 0 {
		t.Fatal("server saw another certificate than the first")
	}
	second := vmCert(t, ca, "child", t0.Add(time.Hour), 24*time.Hour)
	k.Set(second)
	if serr, cerr := handshake(t, scfg, v.PeerClient(k, "parent")); serr != nil || cerr != nil {
		t.Fatal(serr, cerr)
	}
	if seen.Cmp(second.Leaf.SerialNumber) != 0 {
		t.Fatal("server did not see the renewed certificate")
	}
}
