package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// A chain verified once is not verified again: only its validity period
// and revocation are. The test empties the roots after the first check
// (which a Verifier's user must not do) to see which checks still run.
func TestVerifierRemembersChains(t *testing.T) {
	ca := newCA(t)
	revoked := &Revocations{}
	v := NewVerifier(ca.Cert, revoked)
	now := t0.Add(time.Hour)
	v.Now = func() time.Time { return now }
	c := vmCert(t, ca, "vm-1", t0, 2*time.Hour)
	chain := []*x509.Certificate{c.Leaf}
	if _, err := v.Verify(chain, x509.ExtKeyUsageClientAuth); err != nil {
		t.Fatalf("first check: %v", err)
	}
	other := vmCert(t, ca, "vm-2", t0, 2*time.Hour)
	v.Roots = x509.NewCertPool()

	if id, err := v.Verify(chain, x509.ExtKeyUsageClientAuth); err != nil || id.VM != "vm-1" {
		t.Errorf("remembered chain: %v, %v; want vm-1 without checking the signature again", id, err)
	}
	if _, err := v.Verify(chain, x509.ExtKeyUsageServerAuth); !errors.Is(err, ErrChain) {
		t.Errorf("same leaf for another usage: %v; want a full check, failing without roots", err)
	}
	if _, err := v.Verify([]*x509.Certificate{other.Leaf}, x509.ExtKeyUsageClientAuth); !errors.Is(err, ErrChain) {
		t.Errorf("a leaf never verified: %v; want a full check, failing without roots", err)
	}
	for _, at := range []time.Time{t0.Add(3 * time.Hour), t0.Add(-24 * time.Hour)} {
		now = at
		if _, err := v.Verify(chain, x509.ExtKeyUsageClientAuth); !errors.Is(err, ErrChain) {
			t.Errorf("remembered chain at %v, outside its validity: %v; want ErrChain", at, err)
		}
	}
	now = t0.Add(time.Hour)
	revoked.Revoke(c.Leaf)
	if _, err := v.Verify(chain, x509.ExtKeyUsageClientAuth); !errors.Is(err, ErrRevoked) {
		t.Errorf("remembered chain, revoked since: %v; want ErrRevoked", err)
	}
}

// A child's later connections to its parent resume the TLS session, and
// a resumed connection is checked like a new one: the server's VM id on
// the client, the client's revocation on the server. After a renewal the
// client presents its new certificate rather than resuming with the old.
func TestPeerSessionsResume(t *testing.T) {
	ca := newCA(t)
	now := t0.Add(time.Hour)
	clock := func() time.Time { return now }
	revoked := &Revocations{}
	v := NewVerifier(ca.Cert, revoked)
	v.Now = clock
	child := NewKeeper(vmCert(t, ca, "child", t0, 24*time.Hour))

	scfg := v.PeerServer(NewKeeper(vmCert(t, ca, "parent", t0, 24*time.Hour)))
	scfg.Time = clock // Go checks a session's certificates against its own clock
	var resumed bool
	var seen *big.Int
	scfg.VerifyConnection = chain(func(cs tls.ConnectionState) error {
		resumed, seen = cs.DidResume, cs.PeerCertificates[0].SerialNumber
		return nil
	}, scfg.VerifyConnection)
	dial := func(want string) (serverErr, clientErr error) {
		ccfg := v.PeerClient(child, want)
		ccfg.Time = clock
		ccfg.ServerName = "parent" // the session key: each handshake has its own port here
		return handshake(t, scfg, ccfg)
	}
	step := func(name, want string, wantResumed bool, serverRefs, clientRefs error) {
		t.Helper()
		serr, cerr := dial(want)
		check(t, name+": server", serr, serverRefs)
		check(t, name+": client", cerr, clientRefs)
		if resumed != wantResumed {
			t.Errorf("%s: resumed %v, want %v", name, resumed, wantResumed)
		}
	}

	step("first", "parent", false, nil, nil)
	step("second", "parent", true, nil, nil)

	renewed := vmCert(t, ca, "child", t0.Add(time.Hour), 24*time.Hour)
	child.Set(renewed)
	step("after renewal", "parent", false, nil, nil)
	if seen.Cmp(renewed.Leaf.SerialNumber) != 0 {
		t.Error("after renewal the server saw the old certificate")
	}
	step("renewed, again", "parent", true, nil, nil)

	// crypto/tls forgets a session whose resumption failed.
	step("server is not the VM expected", "impostor", true, errAny, ErrWrongID)
	step("after a refused resumption", "parent", false, nil, nil)

	revoked.Revoke(renewed.Leaf)
	step("revoked", "parent", true, ErrRevoked, errAny)
}

// A parent's first records on a connection are full-sized: crypto/tls
// would otherwise send the first 128 KiB in records of about 1 KB, a
// system call each.
func TestPeerRecordsAreFullSized(t *testing.T) {
	ca := newCA(t)
	now := t0.Add(time.Hour)
	v := NewVerifier(ca.Cert, nil)
	v.Now = func() time.Time { return now }
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const size = 64 << 10
	got := make(chan error, 1)
	go func() {
		cc, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			got <- err
			return
		}
		c := tls.Client(cc, v.PeerClient(NewKeeper(vmCert(t, ca, "child", t0, 24*time.Hour)), "parent"))
		defer c.Close()
		_, err = io.ReadFull(c, make([]byte, size))
		got <- err
	}()
	raw, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	counted := &countingConn{Conn: raw}
	s := tls.Server(counted, v.PeerServer(NewKeeper(vmCert(t, ca, "parent", t0, 24*time.Hour))))
	defer s.Close()
	if err := s.Handshake(); err != nil {
		t.Fatal(err)
	}
	counted.writes.Store(0)
	if _, err := s.Write(make([]byte, size)); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	// 64 KiB in records of 16 KiB: 4 writes (a fifth for the session
	// ticket if it went after the handshake).
	if n := counted.writes.Load(); n > 5 {
		t.Errorf("64 KiB at a connection's start took %d writes, want at most 5", n)
	}
}

type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}
