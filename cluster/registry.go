package cluster

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/faasnet/faasnet/bwlimit"
	"github.com/faasnet/faasnet/imagegen"
	"github.com/faasnet/faasnet/internal/httpserver"
	"github.com/google/go-containerregistry/pkg/registry"
)

// RegistryOptions configures an in-process registry.
type RegistryOptions struct {
	// Host is the loopback IP the registry listens on; default 127.0.0.1.
	Host string
	// Egress limits the bytes per second of all response bodies together,
	// the registry's uplink; 0 means unlimited.
	Egress int64
	// OnEgress, if set, is called with the size of every piece of a
	// response body as the piece leaves the limiter, so that tests can
	// check the limit over time windows.
	OnEgress func(n int)
}

// Registry is an OCI registry (go-containerregistry's in-memory one) on a
// loopback listener. Its egress, every response body byte, passes through
// one limiter and is counted: the count is what "registry egress" means in
// results.
//
// A second listener serves the same content without limit or count: the
// registry's back end, for a component that stands in for the registry
// (the swarm's origin), whose own uplink is then what is limited.
type Registry struct {
	addr     string
	srv      *http.Server
	backend  *http.Server
	bAddr    string
	served   sync.WaitGroup
	limit    *bwlimit.Limiter
	onEgress func(int)
	egress   atomic.Int64
}

// StartRegistry starts a registry; Close stops it.
func StartRegistry(opts RegistryOptions) (*Registry, error) {
	host := opts.Host
	if host == "" {
		host = "127.0.0.1"
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return nil, fmt.Errorf("registry: listening on %s: %w", host, err)
	}
	bln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("registry: listening on %s: %w", host, err)
	}
	r := &Registry{
		addr:     ln.Addr().String(),
		bAddr:    bln.Addr().String(),
		limit:    bwlimit.New(opts.Egress),
		onEgress: opts.OnEgress,
	}
	h := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	r.srv = httpserver.New(r.wrap(h), httpserver.Options{})
	r.backend = httpserver.New(h, httpserver.Options{})
	r.served.Go(func() { r.srv.Serve(httpserver.Listener(ln, httpserver.Options{})) })
	r.served.Go(func() { r.backend.Serve(httpserver.Listener(bln, httpserver.Options{})) })
	return r, nil
}

// Backend returns a transport that reaches the registry's back end, without
// limit or count, whatever registry address a request names.
func (r *Registry) Backend() *http.Transport {
	return &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, r.bAddr)
		},
		MaxIdleConnsPerHost: 16,
		DisableCompression:  true,
	}
}

// Addr is the registry's host:port.
func (r *Registry) Addr() string { return r.addr }

// Limiter returns the limiter of the registry's egress, for a component
// that stands in for the registry and must share its uplink.
func (r *Registry) Limiter() *bwlimit.Limiter { return r.limit }

// Egress returns the response body bytes sent since the last ResetEgress.
func (r *Registry) Egress() int64 { return r.egress.Load() }

// ResetEgress starts counting egress from zero.
func (r *Registry) ResetEgress() { r.egress.Store(0) }

// Close stops the registry and waits for its servers to return.
func (r *Registry) Close() error {
	err := r.srv.Close()
	r.backend.Close()
	r.served.Wait()
	return err
}

// Push generates the image spec describes and pushes it as repo:tag.
func (r *Registry) Push(ctx context.Context, spec imagegen.Spec, repo, tag string) (Image, error) {
	img, err := imagegen.Image(spec)
	if err != nil {
		return Image{}, fmt.Errorf("generating image %s: %w", repo, err)
	}
	ref := r.addr + "/" + repo + ":" + tag
	if err := imagegen.Push(ctx, img, ref); err != nil {
		return Image{}, err
	}
	return describe(ref, repo, tag, img)
}

// wrap limits and counts every response body of h.
func (r *Registry) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		cw := &countingWriter{w: w, r: r}
		lw := bwlimit.NewWriter(req.Context(), cw, r.limit)
		h.ServeHTTP(&egressWriter{ResponseWriter: w, body: lw}, req)
	})
}

// egressWriter sends a response body through the limiter.
type egressWriter struct {
	http.ResponseWriter
	body io.Writer
}

func (e *egressWriter) Write(p []byte) (int, error) { return e.body.Write(p) }

// countingWriter counts the pieces the limiter lets through, as they go out.
type countingWriter struct {
	w http.ResponseWriter
	r *Registry
}

func (c *countingWriter) Write(p []byte) (int, error) {
	// Counted before the write, and what did not go out taken back after:
	// a client may read the last piece and finish, and a run read Egress,
	// before a count made after the write.
	c.r.egress.Add(int64(len(p)))
	n, err := c.w.Write(p)
	c.r.egress.Add(int64(n - len(p)))
	if c.r.onEgress != nil && n > 0 {
		c.r.onEgress(n)
	}
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	return n, err
}
