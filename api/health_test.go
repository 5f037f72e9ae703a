package api

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// A follower answers 307 with its leader's URL: the client sends the same
// request (method, body, token) to the leader, even on another host name,
// where Go's own redirects would drop the token; the leader becomes Base. A
// redirect to a leader that cannot be reached moves on to the next manager,
// since the follower did not act on the request.
func TestClientFollowsLeaderRedirect(t *testing.T) {
	type seen struct{ method, path, body, auth string }
	got := make(chan seen, 4)
	leader := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.URL.Path, string(b), r.Header.Get("Authorization")}
		w.Write([]byte(`{"function":"f","added":[]}`))
	}))
	defer leader.Close()
	// The leader by another name than the one the client was given.
	leaderURL := strings.Replace(leader.URL, "127.0.0.1", "localhost", 1)
	redirectTo := func(target string) *httptest.Server {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Location", target+r.URL.RequestURI())
			w.WriteHeader(http.StatusTemporaryRedirect)
		}))
		t.Cleanup(srv.Close)
		return srv
	}
	follower := redirectTo(leaderURL)

	c := NewClient(follower.URL)
	c.Token = "secret"
	if _, err := c.Scale(context.Background(), "f", ScaleRequest{Count: 2}); err != nil {
		t.Fatalf("Scale through a follower: %v", err)
	}
	want := seen{"POST", Prefix + "/functions/f/scale", `{"count":2}`, "Bearer secret"}
	if s := <-got; s != want {
		t.Errorf("the leader saw %+v, want %+v", s, want)
	}
	if c.Base != leaderURL {
		t.Errorf("Base = %s after the redirect, want the leader %s", c.Base, leaderURL)
	}

	stale := redirectTo("http://" + deadAddr(t))
	c = NewClient(stale.URL + "," + leader.URL)
	c.Token = "secret"
	if _, err := c.Scale(context.Background(), "f", ScaleRequest{Count: 1}); err != nil {
		t.Fatalf("Scale through a follower naming a dead leader: %v", err)
	}
	if s := <-got; s.body != `{"count":1}` {
		t.Errorf("the live manager saw %+v", s)
	}
	if c.Base != leader.URL {
		t.Errorf("Base = %s, want %s", c.Base, leader.URL)
	}

	loop := httptest.NewServer(nil)
	loop.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", loop.URL+r.URL.RequestURI())
		w.WriteHeader(http.StatusTemporaryRedirect)
	})
	defer loop.Close()
	if _, err := NewClient(loop.URL).VMs(context.Background()); err == nil || !strings.Contains(err.Error(), "307") {
		t.Errorf("a redirect loop = %v, want the 307 returned after %d hops", err, maxRedirects)
	}
}

func TestHealthOf(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != HealthPath {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(`{"status":"ok","role":"follower","leader":"https://m1:7070"}`))
	}))
	defer srv.Close()
	h, err := NewClient(srv.URL).HealthOf(context.Background(), srv.URL)
	if err != nil || h != (Health{Status: "ok", Role: RoleFollower, Leader: "https://m1:7070"}) {
		t.Fatalf("HealthOf = %+v, %v", h, err)
	}
}
