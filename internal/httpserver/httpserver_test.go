package httpserver

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// serve runs h with o on a loopback listener until the test ends.
func serve(t *testing.T, h http.Handler, o Options) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := New(h, o)
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(Listener(ln, o)) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return ln.Addr().String()
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedWithin reads from c until the server closes it, and fails unless
// that happens within d (and not before min).
func closedWithin(t *testing.T, c net.Conn, min, d time.Duration) {
	t.Helper()
	start := time.Now()
	c.SetReadDeadline(start.Add(d))
	_, err := io.Copy(io.Discard, c)
	took := time.Since(start)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("connection still open after %v", d)
	}
	if took < min {
		t.Fatalf("connection closed after %v, before %v", took, min)
	}
}

var short = Options{
	ReadHeaderTimeout: 200 * time.Millisecond,
	ReadTimeout:       300 * time.Millisecond,
	WriteTimeout:      300 * time.Millisecond,
	IdleTimeout:       400 * time.Millisecond,
	MaxHeaderBytes:    4 << 10,
	MaxConns:          8,
}

func TestSlowClientsAreDropped(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		io.WriteString(w, "ok")
	})
	addr := serve(t, ok, short)
	tests := []struct {
		name string
		send string
		min  time.Duration
	}{
		{"silent", "", short.ReadHeaderTimeout / 2},
		{"half headers", "GET / HTTP/1.1\r\nHost: x\r\n", short.ReadHeaderTimeout / 2},
		{"half body", "PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc", short.ReadTimeout / 2},
		{"idle after a request", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", short.IdleTimeout / 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := dial(t, addr)
			io.WriteString(c, tt.send)
			closedWithin(t, c, tt.min, 5*time.Second)
		})
	}
}

func TestHeaderLimit(t *testing.T) {
	addr := serve(t, http.NotFoundHandler(), short)
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
	req.Header.Set("X-Big", strings.Repeat("a", 2*short.MaxHeaderBytes))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("status %d, want 431", resp.StatusCode)
	}
}

// A response that trickles for many write timeouts, as a cut-through
// stream does while its source is slow, must go through whole, with its
// request context alive past the read timeout.
func TestSlowStreamSurvives(t *testing.T) {
	const pieces = 10
	gap := short.WriteTimeout / 3
	addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		tick := time.NewTicker(gap)
		defer tick.Stop()
		for i := range pieces {
			select {
			case <-tick.C:
			case <-r.Context().Done():
				return
			}
			fmt.Fprintf(w, "%d\n", i)
			if err := rc.Flush(); err != nil {
				return
			}
		}
	}), short)
	resp, err := http.Get("http://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	n := 0
	for sc := bufio.NewScanner(resp.Body); sc.Scan(); n++ {
	}
	if n != pieces {
		t.Errorf("got %d pieces over %v, want %d", n, pieces*gap, pieces)
	}
}

// A reader that stops reading fails the handler's writes within the write
// timeout, so whatever the handler holds (an upload slot) is freed.
func TestStalledReaderFailsWrites(t *testing.T) {
	failed := make(chan time.Duration, 1)
	addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 64<<10)
		start := time.Now()
		for range 1 << 10 { // 64 MiB: more than loopback buffers hold
			if _, err := w.Write(buf); err != nil {
				failed <- time.Since(start)
				return
			}
		}
		failed <- -1
	}), short)
	c := dial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	select {
	case took := <-failed:
		if took < 0 {
			t.Fatal("the handler wrote 64 MiB to a reader that reads nothing")
		}
	case <-ctx.Done():
		t.Fatal("the handler is still writing to a reader that stopped")
	}
}

// Beyond MaxConns a connection waits until one closes.
func TestConnectionLimit(t *testing.T) {
	o := short
	o.MaxConns = 2
	o.ReadHeaderTimeout = time.Minute
	addr := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}), o)
	held := []net.Conn{dial(t, addr), dial(t, addr)}
	c := dial(t, addr)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a third connection was served past a limit of 2: %v", err)
	}
	held[0].Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("the waiting connection was not served after one closed: %v", err)
	}
	resp.Body.Close()
}
