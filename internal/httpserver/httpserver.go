// Package httpserver holds the limits every faasnet HTTP server runs with,
// so that slow, idle or half-sent connections cannot exhaust a server.
package httpserver

import (
	"log/slog"
	"net"
	"net/http"
	"time"

	"golang.org/x/net/netutil"
)

// Options are a server's limits. A zero field takes the value of Defaults.
type Options struct {
	// ReadHeaderTimeout bounds reading a request's headers, and so how long
	// a new connection may stay silent.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, body included. net/http
	// clears the read deadline once the body is read, so it does not cut
	// a long response.
	ReadTimeout time.Duration
	// WriteTimeout bounds each write of a response, not the whole of it:
	// the peer protocol streams blobs for as long as their source takes
	// (cut-through), and must lose only a reader that stopped reading.
	WriteTimeout time.Duration
	// IdleTimeout bounds how long a kept-alive connection waits for its
	// next request.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's headers.
	MaxHeaderBytes int
	// MaxConns bounds the connections served at once; beyond it, new ones
	// wait in the listen backlog.
	MaxConns int
}

// Defaults suit production: generous for a slow network, but a silent or
// stalled peer is dropped within a minute.
var Defaults = Options{
	ReadHeaderTimeout: 10 * time.Second,
	ReadTimeout:       30 * time.Second,
	WriteTimeout:      30 * time.Second,
	IdleTimeout:       60 * time.Second,
	MaxHeaderBytes:    64 << 10,
	MaxConns:          4096,
}

// WithDefaults returns o with every zero field set from Defaults.
func (o Options) WithDefaults() Options {
	d := Defaults
	set := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	set(&o.ReadHeaderTimeout, d.ReadHeaderTimeout)
	set(&o.ReadTimeout, d.ReadTimeout)
	set(&o.WriteTimeout, d.WriteTimeout)
	set(&o.IdleTimeout, d.IdleTimeout)
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = d.MaxHeaderBytes
	}
	if o.MaxConns <= 0 {
		o.MaxConns = d.MaxConns
	}
	return o
}

// New returns a server of h with o's limits (Listener applies MaxConns).
func New(h http.Handler, o Options) *http.Server {
	o = o.WithDefaults()
	return &http.Server{
		Handler:           writeDeadlines(h, o.WriteTimeout),
		ReadHeaderTimeout: o.ReadHeaderTimeout,
		ReadTimeout:       o.ReadTimeout,
		IdleTimeout:       o.IdleTimeout,
		MaxHeaderBytes:    o.MaxHeaderBytes,
		// net/http's own lines (a refused TLS handshake, a broken
		// connection) go through slog like every other line, at debug:
		// anyone on the network can cause them, and the servers count
		// the refusals that matter themselves.
		ErrorLog: slog.NewLogLogger(slog.Default().Handler(), slog.LevelDebug),
	}
}

// Listener limits ln to o.MaxConns connections at once.
func Listener(ln net.Listener, o Options) net.Listener {
	return netutil.LimitListener(ln, o.WithDefaults().MaxConns)
}

// writeDeadlines gives every write of h's responses d to complete, and the
// server's own last flush after h returns too. http.Server's WriteTimeout
// would instead bound the whole response.
func writeDeadlines(h http.Handler, d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dw := &deadlineWriter{ResponseWriter: w, rc: http.NewResponseController(w), d: d}
		dw.extend()
		defer dw.extend()
		h.ServeHTTP(dw, r)
	})
}

// deadlineWriter moves the connection's write deadline before each write.
// It has no ReadFrom on purpose: one ReadFrom may copy a whole file, and
// would then run under a single deadline.
type deadlineWriter struct {
	http.ResponseWriter
	rc *http.ResponseController
	d  time.Duration
}

func (w *deadlineWriter) extend() {
	// A writer without deadlines (ErrNotSupported, e.g. in a test
	// recorder) goes without.
	w.rc.SetWriteDeadline(time.Now().Add(w.d))
}

func (w *deadlineWriter) WriteHeader(code int) {
	w.extend()
	w.ResponseWriter.WriteHeader(code)
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	w.extend()
	return w.ResponseWriter.Write(p)
}

func (w *deadlineWriter) Flush() { w.FlushError() }

func (w *deadlineWriter) FlushError() error {
	w.extend()
	return w.rc.Flush()
}

// Unwrap lets http.ResponseController reach the connection.
func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
