package manager

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/digest"
	"github.com/faasnet/faasnet/manager/store"
	"github.com/faasnet/faasnet/pki"
	"github.com/faasnet/faasnet/token"
)

// secured is a manager with Security on a real bbolt store, served over
// TLS on loopback with the manager's own TLS settings, as the command runs
// it.
type secured struct {
	t     *testing.T
	dir   string
	clock *clock
	st    *store.Bolt
	m     *Manager
	srv   *httptest.Server
	base  string
}

// startSecured starts a manager whose data (CA, tokens, store) is in dir.
// Its clock starts at the wall clock, since clients check the manager's
// certificate against theirs.
func startSecured(t *testing.T, dir string, c *clock) *secured {
	t.Helper()
	if c == nil {
		c = &clock{now: time.Now()}
	}
	st, err := store.OpenBolt(filepath.Join(dir, "manager.db"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(context.Background(), st, Options{
		VMTimeout: time.Hour, Now: c.Now, Pinner: fakePins, Logger: slog.New(slog.DiscardHandler),
		Security: &Security{Dir: dir, Addr: "127.0.0.1:0", VMCertTTL: time.Hour, GrantTTL: 10 * time.Minute},
	})
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(m.Handler())
	srv.Listener = tls.NewListener(srv.Listener, m.TLSConfig())
	srv.Start()
	s := &secured{t: t, dir: dir, clock: c, st: st, m: m, srv: srv, base: "https://" + srv.Listener.Addr().String()}
	t.Cleanup(s.stop)
	return s
}

// stop shuts the manager down; stopping again does nothing.
func (s *secured) stop() {
	if s.srv == nil {
		return
	}
	s.srv.Close()
	s.m.Close()
	s.st.Close()
	s.srv = nil
}

func (s *secured) verifier() *pki.Verifier { return pki.NewVerifier(s.m.CA().Cert, nil) }

// operator returns a client that sends secret as its bearer token and
// presents no certificate.
func (s *secured) operator(secret string) *api.Client {
	return api.NewTLSClient(s.base, s.verifier().ManagerClient(nil), secret)
}

// asVM returns a client presenting k's certificate and no token.
func (s *secured) asVM(k *pki.Keeper) *api.Client {
	return api.NewTLSClient(s.base, s.verifier().ManagerClient(k), "")
}

func (s *secured) fileToken(name string) string {
	s.t.Helper()
	secret, err := token.ReadFile(filepath.Join(s.dir, name))
	if err != nil {
		s.t.Fatal(err)
	}
	return secret
}

func (s *secured) admin() *api.Client { return s.operator(s.fileToken(token.AdminFile)) }

// enroll enrolls vm with the join token in the data directory and returns
// a keeper holding its certificate.
func (s *secured) enroll(vm string) *pki.Keeper {
	s.t.Helper()
	k, err := s.tryEnroll(vm, s.fileToken(token.JoinFile))
	if err != nil {
		s.t.Fatalf("enrolling %s: %v", vm, err)
	}
	return k
}

func (s *secured) tryEnroll(vm, join string) (*pki.Keeper, error) {
	key, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	return s.enrollKey(vm, join, key)
}

func (s *secured) enrollKey(vm, join string, key crypto.Signer) (*pki.Keeper, error) {
	csr, err := pki.NewCSR(key, vm)
	if err != nil {
		return nil, err
	}
	resp, err := s.operator("").Enroll(context.Background(), api.EnrollRequest{VM: vm, CSR: string(csr), JoinToken: join})
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(resp)
	if err != nil {
		return nil, err
	}
	cert, _, err := s.verifier().AcceptCertificate(bytes.NewReader(b), key, vm)
	if err != nil {
		return nil, err
	}
	return pki.NewKeeper(cert), nil
}

// register enrolls and registers VMs named names at distinct loopback
// addresses and returns their keepers.
func (s *secured) register(names ...string) map[string]*pki.Keeper {
	s.t.Helper()
	out := map[string]*pki.Keeper{}
	for i, n := range names {
		k := s.enroll(n)
		if _, err := s.asVM(k).RegisterVM(context.Background(), n, fmt.Sprintf("127.0.0.1:%d", 20000+i), nil); err != nil {
			s.t.Fatalf("registering %s: %v", n, err)
		}
		out[n] = k
	}
	return out
}

// raw sends a request with an optional bearer token over client c's
// transport and returns the status, the header and the body.
func raw(t *testing.T, c *api.Client, method, path, bearer string, body any) (int, http.Header, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.Base+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, data
}

// statusOf returns the HTTP status of a client call's error (200 for nil,
// 0 for an error that is no answer, e.g. a refused handshake).
func statusOf(err error) int {
	if err == nil {
		return http.StatusOK
	}
	var se *api.StatusError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

// metricLine scrapes the manager's metrics and returns the line of series
// (name with labels) or "" if it is absent.
func (s *secured) metricLine(series string) string {
	s.t.Helper()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/metrics", nil)
	req.Header.Set("Authorization", "Bearer "+s.fileToken(token.AdminFile))
	s.m.Handler().ServeHTTP(rec, req)
	for _, l := range strings.Split(rec.Body.String(), "\n") {
		if strings.HasPrefix(l, series+" ") {
			return l
		}
	}
	return ""
}

func newTLSListener(l net.Listener, c *tls.Config) net.Listener { return tls.NewListener(l, c) }

func parseDigest(s string) (v1.Hash, error) { return digest.Parse(s) }
