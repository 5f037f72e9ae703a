package manager

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/token"
)

// The live view's stream takes a read token, as a bearer token or in the
// session cookie the page gets for one; the cookie is HttpOnly, Secure,
// SameSite=Strict, good for the stream only, and a join token gets none.
func TestLiveViewAccess(t *testing.T) {
	ctx := context.Background()
	s := startSecured(t, t.TempDir(), nil)
	admin := s.admin()
	if _, err := admin.PutFunction(ctx, "f", api.FunctionRequest{Image: "reg/f:1"}); err != nil {
		t.Fatal(err)
	}
	read, err := admin.CreateToken(ctx, api.TokenRequest{Role: "read"})
	if err != nil {
		t.Fatal(err)
	}
	hc := s.operator("").HTTP
	session := func(tok string) *http.Response {
		t.Helper()
		body, _ := json.Marshal(map[string]string{"token": tok})
		resp, err := hc.Post(s.base+api.Prefix+"/ui/session", "application/json", strings.NewReader(string(body)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if r := session(s.fileToken(token.JoinFile)); r.StatusCode != http.StatusForbidden {
		t.Errorf("a join token got a session: %d", r.StatusCode)
	}
	if r := session(strings.Repeat("A", token.SecretLen)); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("an unknown token got a session: %d", r.StatusCode)
	}
	r := session(read.Token)
	if r.StatusCode != http.StatusNoContent || len(r.Cookies()) != 1 {
		t.Fatalf("session for a read token: %d %v", r.StatusCode, r.Cookies())
	}
	c := r.Cookies()[0]
	if !c.HttpOnly || !c.Secure || c.SameSite != http.SameSiteStrictMode || c.Path != api.Prefix+api.EventsPath {
		t.Errorf("session cookie %+v: want HttpOnly, Secure, SameSite=Strict, the stream's path", c)
	}

	get := func(path string, cookie *http.Cookie) (*http.Response, context.CancelFunc) {
		t.Helper()
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.base+path, nil)
		if cookie != nil {
			req.AddCookie(cookie)
		}
		resp, err := hc.Do(req)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		return resp, cancel
	}
	// The cookie opens the stream, whose first event shows f.
	resp, cancel := get(api.Prefix+api.EventsPath, c)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events with the cookie: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	snap := firstSnapshot(t, resp)
	cancel()
	if len(snap.Functions) != 1 || snap.Functions[0].Function != "f" {
		t.Errorf("first snapshot %+v, want function f", snap)
	}
	// It is no credential anywhere else.
	resp, cancel = get(api.Prefix+"/functions", c)
	resp.Body.Close()
	cancel()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("GET /functions with the session cookie: %d, want 401", resp.StatusCode)
	}
	// Revoking the token ends the session.
	if err := admin.RevokeToken(ctx, read.ID); err != nil {
		t.Fatal(err)
	}
	resp, cancel = get(api.Prefix+api.EventsPath, c)
	resp.Body.Close()
	cancel()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("events with a revoked token's cookie: %d, want 401", resp.StatusCode)
	}
}

// firstSnapshot reads a stream up to its first snapshot event.
func firstSnapshot(t *testing.T, resp *http.Response) api.Snapshot {
	t.Helper()
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			var s api.Snapshot
			if err := json.Unmarshal([]byte(data), &s); err != nil {
				t.Fatal(err)
			}
			return s
		}
	}
	t.Fatalf("the stream ended without a snapshot: %v", sc.Err())
	return api.Snapshot{}
}
