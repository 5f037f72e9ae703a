package peer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/faasnet/faasnet/enroll/enrolltest"
	"github.com/faasnet/faasnet/grant"
	"github.com/faasnet/faasnet/pki"
)

// recordingAuthorizer refuses every request without the grant "let-me",
// and records the grants it was shown.
type recordingAuthorizer struct {
	mu     sync.Mutex
	grants []string
}

func (a *recordingAuthorizer) check(r *http.Request) error {
	a.mu.Lock()
	a.grants = append(a.grants, r.Header.Get(grant.Header))
	a.mu.Unlock()
	if r.Header.Get(grant.Header) != "let-me" {
		return fmt.Errorf("%w: no good grant", ErrForbidden)
	}
	return nil
}

func (a *recordingAuthorizer) AuthorizeBlob(r *http.Request, _ string) error    { return a.check(r) }
func (a *recordingAuthorizer) AuthorizeResolve(r *http.Request, _ string) error { return a.check(r) }
func (a *recordingAuthorizer) AuthorizeManifest(r *http.Request, _ Descriptor) error {
	return a.check(r)
}

type fixedResolver Descriptor

func (f fixedResolver) Resolve(context.Context, string) (Descriptor, error) {
	return Descriptor(f), nil
}

// startTLSServer serves s over mutual TLS as VM vm with a certificate of
// m's CA, and returns its address.
func startTLSServer(t *testing.T, m *enrolltest.Manager, vm string, s *Server) string {
	t.Helper()
	v := pki.NewVerifier(m.CA.Cert, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(PathPrefix, s)
	mux.HandleFunc("GET /healthz", func(http.ResponseWriter, *http.Request) {})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: testTimeout, ErrorLog: log.New(io.Discard, "", 0)}
	go srv.Serve(tls.NewListener(ln, v.PeerServer(pki.NewKeeper(m.Issue(t, vm, time.Now(), time.Hour)))))
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// A TLS client sends the grant of its context with every kind of request,
// and the server's Authorizer refuses with 403 before the Source is asked.
func TestTLSClientSendsGrantAndServerAuthorizes(t *testing.T) {
	m := enrolltest.New(t)
	src := newMemSource()
	src.opened = make(chan string, 10)
	d, _ := src.add(randomBytes(3, 1000), 1000)
	authz := &recordingAuthorizer{}
	srv := newServer(src, ServerOptions{Authorizer: authz, Resolver: fixedResolver{Digest: d, Size: 1000, MediaType: "application/vnd.oci.image.manifest.v1+json"}})
	addr := startTLSServer(t, m, "parent", srv)
	v := pki.NewVerifier(m.CA.Cert, nil)
	child := pki.NewKeeper(m.Issue(t, "child", time.Now(), time.Hour))
	c := NewTLSClient(func(vm string) *tls.Config { return v.PeerClient(child, vm) }, nil)
	ctx := testContext(t)

	calls := map[string]func(ctx context.Context) error{
		"GET": func(ctx context.Context) error {
			rc, err := c.Open(ctx, addr, d, 0, -1)
			if err == nil {
				rc.Close()
			}
			return err
		},
		"HEAD":    func(ctx context.Context) error { _, err := c.Stat(ctx, addr, d); return err },
		"resolve": func(ctx context.Context) error { _, err := c.Resolve(ctx, addr, "example.com/app:v1"); return err },
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			err := call(WithAuth(ctx, Auth{ServerVM: "parent", Grant: "not-this"}))
			var se *StatusError
			if !errors.As(err, &se) || se.StatusCode != http.StatusForbidden || !errors.Is(err, ErrForbidden) {
				t.Fatalf("with a bad grant: %v, want a 403 matching ErrForbidden", err)
			}
			select {
			case got := <-src.opened:
				t.Fatalf("the source opened %s for a refused request", got)
			default:
			}
			if err := call(WithAuth(ctx, Auth{ServerVM: "parent", Grant: "let-me"})); err != nil {
				t.Fatalf("with the grant: %v", err)
			}
			if name != "resolve" {
				<-src.opened
			}
		})
	}
	authz.mu.Lock()
	defer authz.mu.Unlock()
	for _, g := range authz.grants {
		if g != "let-me" && g != "not-this" {
			t.Errorf("the server saw grant %q", g)
		}
	}
	// resolve asks twice when allowed (before and after resolving).
	if len(authz.grants) != 7 {
		t.Errorf("the authorizer was asked %d times, want 7", len(authz.grants))
	}
	if s := srv.Stats(); s.Forbidden != 3 {
		t.Errorf("Stats.Forbidden = %d, want 3", s.Forbidden)
	}
}

// A TLS client talks only to the VM it expects: it refuses to dial without
// one, and refuses a server whose certificate names another VM, or comes
// from another CA.
func TestTLSClientChecksTheServer(t *testing.T) {
	m := enrolltest.New(t)
	other := enrolltest.New(t)
	addr := startTLSServer(t, m, "impostor", newServer(newMemSource(), ServerOptions{}))
	foreign := startTLSServer(t, other, "parent", newServer(newMemSource(), ServerOptions{}))
	v := pki.NewVerifier(m.CA.Cert, nil)
	child := pki.NewKeeper(m.Issue(t, "child", time.Now(), time.Hour))
	c := NewTLSClient(func(vm string) *tls.Config { return v.PeerClient(child, vm) }, nil)
	ctx := testContext(t)
	tests := []struct {
		name string
		ctx  context.Context
		addr string
		want error // nil: any error
	}{
		{"no expected VM", ctx, addr, nil},
		{"another VM", WithAuth(ctx, Auth{ServerVM: "parent"}), addr, pki.ErrWrongID},
		{"another CA", WithAuth(ctx, Auth{ServerVM: "parent"}), foreign, pki.ErrChain},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := c.Healthy(tt.ctx, tt.addr)
			if err == nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("Healthy = %v, want %v", err, tt.want)
			}
		})
	}
	if err := c.Healthy(WithAuth(ctx, Auth{ServerVM: "impostor"}), addr); err != nil {
		t.Fatalf("the VM the server is: %v", err)
	}
}
