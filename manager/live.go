package manager

import (
	"net/http"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/token"
)

// sessionCookie holds the live view's read token: a browser's EventSource
// cannot send an Authorization header. HttpOnly keeps it from scripts,
// Secure off plain HTTP, SameSite=Strict off other sites' requests, and
// its path limits it to the events stream.
const sessionCookie = "faasnet_view"

// Snapshot is the live view's picture of every function now.
func (m *Manager) Snapshot() api.Snapshot {
	var s api.Snapshot
	for _, f := range m.Functions() {
		tree, err := m.Tree(f.Function)
		if err != nil {
			continue // deleted meanwhile
		}
		st, err := m.Status(f.Function)
		if err != nil {
			continue
		}
		for _, v := range st.VMs {
			s.RegistryBytes += v.BytesFromRegistry
			s.ReceivedBytes += v.BytesFetched
		}
		s.Functions = append(s.Functions, api.LiveFunction{Function: f.Function, Image: f.Image, Tree: tree, VMs: st.VMs})
	}
	return s
}

// handleEvents streams snapshots; HEAD only tells whether the caller may.
func (m *Manager) handleEvents(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodHead {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		return
	}
	m.live.ServeHTTP(w, r)
}

// handleUISession turns a read token, given once in the page's form, into
// the session cookie of the events stream.
func (m *Manager) handleUISession(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Token string `json:"token"`
	}
	if !decode(w, r, &req) {
		return
	}
	if m.trust == nil {
		w.WriteHeader(http.StatusNoContent) // nothing to check without security
		return
	}
	secret, err := token.ParseSecret(req.Token)
	if err == nil {
		var rec token.Record
		rec, err = m.trust.tokens.Authenticate(secret, m.opts.Now())
		if err == nil && !rec.Role.Allows(token.Read) {
			m.refuse(w, r, http.StatusForbidden, reasonRole, "a join token cannot watch; use a read or admin token", "token", rec.ID)
			return
		}
	}
	if err != nil {
		m.refuse(w, r, http.StatusUnauthorized, tokenReason(err), "the token is not accepted: "+err.Error())
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: secret, Path: api.Prefix + api.EventsPath,
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode,
		MaxAge: int((12 * time.Hour).Seconds()),
	})
	w.WriteHeader(http.StatusNoContent)
}
