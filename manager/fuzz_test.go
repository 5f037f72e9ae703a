package manager

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/manager/store"
)

// FuzzHandler sends arbitrary requests to a manager holding a small tree and
// checks that every answer is JSON, never a 5xx, and that the tree stays
// valid.
func FuzzHandler(f *testing.F) {
	seeds := []struct{ method, path, body string }{
		{"PUT", "/api/v1/vms/a", `{"addr":"127.0.0.1:1"}`},
		{"PUT", "/api/v1/vms/a", `{"addr":"127.0.0.1:1","capacity":{"functions":-3}}`},
		{"PUT", "/api/v1/vms/a", `{"addr":`},
		{"PUT", "/api/v1/functions/f", `{"image":"reg/x:1"}`},
		{"PUT", "/api/v1/functions/f", `{"image":"reg/x:1","spec":{"cmd":["a"]}}`},
		{"PUT", "/api/v1/functions/f", `{"image":"reg/x:1","stripes":3}`},
		{"PUT", "/api/v1/functions/s", `{"image":"reg/x:1","stripes":1}`},
		{"PUT", "/api/v1/functions/s", `{"image":"reg/x:1","stripes":-2}`},
		{"POST", "/api/v1/functions/s/scale", `{"count":1}`},
		{"DELETE", "/api/v1/functions/s/vms/v2", ``},
		{"GET", "/api/v1/functions/s/tree", ``},
		{"PUT", "/api/v1/functions/g", `{"image":"reg/x@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}`},
		{"POST", "/api/v1/functions/f/scale", `{"count":2}`},
		{"POST", "/api/v1/functions/f/scale", `{"vms":["v1","v1"]}`},
		{"POST", "/api/v1/functions/f/scale", `{"vms":["v9"]}{}`},
		{"POST", "/api/v1/functions/f/scale", `{"count":1e99}`},
		{"DELETE", "/api/v1/functions/f/vms/v1", ``},
		{"POST", "/api/v1/vms/v2/heartbeat", ``},
		{"POST", "/api/v1/vms/v2/heartbeat", `[]`},
		{"POST", "/api/v1/vms/v2/status", `{"functions":[{"function":"f","state":"ready"}],"images":["reg/x:1"]}`},
		{"DELETE", "/api/v1/vms/v3", ``},
		{"GET", "/api/v1/functions/f/tree", ``},
		{"PATCH", "/api/v1/functions/f/tree", ``},
		{"GET", "/nope", ``},
	}
	for _, s := range seeds {
		f.Add(s.method, s.path, s.body)
	}
	f.Fuzz(func(t *testing.T, method, path, body string) {
		if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \r\n\t#?%") || !httpToken(method) {
			return // not an HTTP request line a client could send
		}
		ctx := context.Background()
		m, err := New(ctx, store.NewMemory(), Options{VMTimeout: time.Hour, Pinner: fakePins})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		for _, vm := range []string{"v1", "v2", "v3", "v4"} {
			m.RegisterVM(ctx, vm, api.RegisterRequest{Addr: "127.0.0.1:9"})
		}
		m.PutFunction(ctx, "f", api.FunctionRequest{Image: "reg/x:1"})
		m.Scale(ctx, "f", api.ScaleRequest{VMs: []string{"v1", "v2", "v3"}})
		m.PutFunction(ctx, "s", api.FunctionRequest{Image: "reg/x:1", Stripes: 2})
		m.Scale(ctx, "s", api.ScaleRequest{VMs: []string{"v1", "v2", "v4"}})

		req, err := http.NewRequest(method, "http://manager"+path, strings.NewReader(body))
		if err != nil {
			return // not a URL a client could send
		}
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s %q: %d %s", method, path, body, rec.Code, rec.Body)
		}
		if path != "/metrics" && !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("%s %s %q: answer is not JSON: %q", method, path, body, rec.Body)
		}
		if rec.Code >= 400 && !strings.Contains(rec.Body.String(), `"error"`) {
			t.Fatalf("%s %s: error answer without an error field: %s", method, path, rec.Body)
		}
		m.mu.Lock()
		defer m.mu.Unlock()
		for name, fs := range m.fns {
			if err := fs.tree.Check(); err != nil {
				t.Fatalf("tree %s broken after %s %s %q: %v", name, method, path, body, err)
			}
		}
	})
}

// FuzzDecodeRequest drives the request-body parser with every request type.
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{`{}`, `{"addr":"h:1"}`, `{"vms":["a"],"count":2}`, `{"image":"x","spec":[1,2]}`, `{"functions":[{"state":"ready"}]}`, `nul`, `{} {}`, `{} }`, `{}]`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, v := range []any{&api.RegisterRequest{}, &api.FunctionRequest{}, &api.ScaleRequest{}, &api.StatusReport{}} {
			err := DecodeRequest(strings.NewReader(string(b)), v)
			if err == nil && !json.Valid(b) {
				t.Fatalf("accepted invalid JSON %q", b)
			}
		}
	})
}

func TestWrongMethodAndUnknownPathAreJSON(t *testing.T) {
	m, err := New(context.Background(), store.NewMemory(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, c := range []struct {
		method, path string
		code         int
	}{
		{"PATCH", "/api/v1/functions/f/tree", http.StatusMethodNotAllowed},
		{"GET", "/api/v1/nothing", http.StatusNotFound},
		{"GET", "/healthz", http.StatusOK},
	} {
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest(c.method, c.path, nil))
		if rec.Code != c.code || !json.Valid(rec.Body.Bytes()) {
			t.Errorf("%s %s: %d %q, want %d and JSON", c.method, c.path, rec.Code, rec.Body, c.code)
		}
	}
}

// httpToken reports whether s is a valid HTTP method (an RFC 9110 token).
func httpToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c > 127 || !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("!#$%&'*+-.^_`|~", c)) {
			return false
		}
	}
	return true
}

// FuzzSecuredHandlerWithoutCredentials sends arbitrary requests without a
// certificate or a token to a manager with Security: none may succeed
// (but /healthz) or change anything. Enrollment is open, but its join
// token cannot be guessed.
func FuzzSecuredHandlerWithoutCredentials(f *testing.F) {
	for _, s := range []struct{ method, path, body string }{
		{"PUT", "/api/v1/vms/a", `{"addr":"127.0.0.1:1"}`},
		{"POST", "/api/v1/vms/v1/heartbeat", ``},
		{"POST", "/api/v1/vms/v1/status", `{"images":["reg/x:1"]}`},
		{"DELETE", "/api/v1/vms/v1", ``},
		{"POST", "/api/v1/vms/v1/certificate", `{"csr":""}`},
		{"PUT", "/api/v1/functions/f", `{"image":"reg/x:1"}`},
		{"POST", "/api/v1/functions/f/scale", `{"count":1}`},
		{"POST", "/api/v1/tokens", `{"role":"admin"}`},
		{"POST", "/api/v1/join-token", `{}`},
		{"DELETE", "/api/v1/tokens/0000000000000000", ``},
		{"POST", "/api/v1/enroll", `{"vm":"x","csr":"","join_token":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}`},
		{"GET", "/metrics", ``},
		{"GET", "/healthz", ``},
	} {
		f.Add(s.method, s.path, s.body)
	}
	ctx := context.Background()
	m, err := New(ctx, store.NewMemory(), Options{VMTimeout: time.Hour, Pinner: fakePins, Logger: slog.New(slog.DiscardHandler),
		Security: &Security{Dir: f.TempDir(), Addr: "127.0.0.1:0"}})
	if err != nil {
		f.Fatal(err)
	}
	defer m.Close()
	m.RegisterVM(ctx, "v1", api.RegisterRequest{Addr: "127.0.0.1:9"})
	m.PutFunction(ctx, "f", api.FunctionRequest{Image: "reg/x:1"})
	snapshot := func() string {
		m.mu.Lock()
		certs := len(m.trust.certs)
		m.mu.Unlock()
		return js([]any{m.VMs(), m.Functions(), m.trust.tokens.Records(), certs, m.revision})
	}
	before := snapshot()
	h := m.Handler()
	f.Fuzz(func(t *testing.T, method, path, body string) {
		if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \r\n\t#?%") || !httpToken(method) {
			return
		}
		req, err := http.NewRequest(method, "https://manager"+path, strings.NewReader(body))
		if err != nil {
			return
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code < 300 && !(method == "GET" || method == "HEAD") || rec.Code < 300 && path != "/healthz" {
			t.Fatalf("%s %s %q without credentials: %d %s", method, path, body, rec.Code, rec.Body)
		}
		if rec.Code >= 500 {
			t.Fatalf("%s %s %q: %d %s", method, path, body, rec.Code, rec.Body)
		}
		if after := snapshot(); after != before {
			t.Fatalf("%s %s %q without credentials changed the state", method, path, body)
		}
	})
}
