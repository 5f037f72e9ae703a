package worker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"

	"github.com/faasnet/faasnet/internal/httpserver"
	"github.com/faasnet/faasnet/ociserve"
)

// ErrNotLoopback is returned by ListenOCI for an address other hosts could
// reach when public listening was not asked for.
var ErrNotLoopback = errors.New("not a loopback address")

// ListenOCI opens the listener of the local runtime endpoint, the read side
// of the OCI distribution API that containerd or skopeo on this VM pull
// from. addr is host:port, "unix:PATH" or a path (anything with a "/"), for
// a unix socket; "" or "none" means no endpoint (nil listener, nil error).
//
// The endpoint has no authentication: it is meant for this VM only, so a
// TCP address must be loopback unless public is set. A unix socket is
// created with mode 0660, replacing a stale socket at PATH.
func ListenOCI(ctx context.Context, addr string, public bool) (net.Listener, error) {
	if addr == "" || addr == "none" {
		return nil, nil
	}
	if path, ok := socketPath(addr); ok {
		return listenUnix(path)
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("OCI endpoint address %q: %w", addr, err)
	}
	if !public {
		if err := checkLoopback(ctx, host); err != nil {
			return nil, fmt.Errorf("OCI endpoint address %q: %w", addr, err)
		}
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("OCI endpoint: %w", err)
	}
	return ln, nil
}

// socketPath tells whether addr names a unix socket, and its path.
func socketPath(addr string) (string, bool) {
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		return p, true
	}
	return addr, strings.Contains(addr, "/")
}

// checkLoopback fails unless every address host stands for is loopback. An
// empty host (every interface) is not.
func checkLoopback(ctx context.Context, host string) error {
	if host == "" {
		return fmt.Errorf("every interface: %w", ErrNotLoopback)
	}
	if ip := net.ParseIP(host); ip != nil {
		if !ip.IsLoopback() {
			return ErrNotLoopback
		}
		return nil
	}
	ips, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil {
		return fmt.Errorf("resolving %s: %w", host, err)
	}
	for _, ip := range ips {
		if !ip.IP.IsLoopback() {
			return fmt.Errorf("%s is %s: %w", host, ip.IP, ErrNotLoopback)
		}
	}
	return nil
}

// listenUnix listens on a unix socket at path, removing a socket left by a
// previous run (but nothing else, and no socket still answering).
func listenUnix(path string) (net.Listener, error) {
	if path == "" {
		return nil, errors.New("OCI endpoint: empty unix socket path")
	}
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSocket != 0 {
		if c, err := net.Dial("unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("OCI endpoint: unix socket %s is in use", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("OCI endpoint: removing stale socket: %w", err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("OCI endpoint: %w", err)
	}
	// Owner and group only: whoever can connect can read every image here.
	if err := os.Chmod(path, 0o660); err != nil {
		ln.Close()
		return nil, fmt.Errorf("OCI endpoint: %w", err)
	}
	return ln, nil
}

// OCIHandler serves the local runtime endpoint (/v2/): the images of the
// functions on this VM, read-only. It is what Config.OCI serves; tests and
// in-process harnesses may call it directly.
func (w *Worker) OCIHandler() http.Handler { return w.ociHandler }

// OCIAddr is the address of the local runtime endpoint: host:port,
// "unix:PATH", or "" if there is none.
func (w *Worker) OCIAddr() string {
	if w.cfg.OCI == nil {
		return ""
	}
	a := w.cfg.OCI.Addr()
	if a.Network() == "unix" {
		return "unix:" + a.String()
	}
	return a.String()
}

func newOCIHandler(w *Worker) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/v2/", ociserve.NewHandler(newRangeContent(w), w.log))
	return mux
}

// serveOCI serves the local runtime endpoint on Config.OCI, if any, with
// the limits of the peer server peer, and cancels fail if serving fails.
// stop shuts it down and waits for it.
func (w *Worker) serveOCI(peer *http.Server, fail context.CancelFunc) (stop func(context.Context)) {
	if w.cfg.OCI == nil {
		return func(context.Context) {}
	}
	// The same limits as the peer server: a local client is no more trusted.
	srv := httpserver.New(w.tracked(w.ociHandler), w.cfg.HTTP)
	srv.BaseContext, srv.ErrorLog = peer.BaseContext, peer.ErrorLog
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := srv.Serve(httpserver.Listener(w.cfg.OCI, w.cfg.HTTP)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			w.log.Error("serving the local runtime", "err", err)
			fail()
		}
	})
	w.log.Info("worker serving the local runtime", "oci", w.OCIAddr())
	return func(ctx context.Context) {
		srv.Shutdown(ctx)
		srv.Close()
		wg.Wait()
	}
}
