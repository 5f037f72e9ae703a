package manager

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/faasnet/faasnet/pki"
	"github.com/faasnet/faasnet/token"
)

// access is who may make a call; Handler's route table gives every route
// one.
//
// A VM is identified by its certificate only and an operator by a bearer
// token only: a VM certificate is no operator credential, and a token never
// acts as a VM, so a stolen one of either kind is worth only what it is.
type access uint8

const (
	// open: anyone (/healthz, which tells nothing secret, and enrollment,
	// which carries its join token in the body).
	open access = iota
	// vmSelf: the certificate of the VM the path names.
	vmSelf
	// reader: a read or admin token.
	reader
	// admin: an admin token.
	admin
	// adminOrVMSelf: an admin token, or the named VM's certificate (a VM
	// leaving). A request with an Authorization header is judged by its
	// token.
	adminOrVMSelf
	// viewer: a read or admin token, as a bearer token or, for the live
	// view's events stream (a browser's EventSource sends no headers), in
	// the live view's session cookie.
	viewer
)

// Refusal reasons, the label values of faasnet_manager_auth_refusals_total.
const (
	reasonNoToken        = "no_token"
	reasonMalformedToken = "malformed_token"
	reasonUnknownToken   = "unknown_token"
	reasonExpiredToken   = "expired_token"
	reasonRevokedToken   = "revoked_token"
	reasonRole           = "role"
	reasonNoCert         = "no_cert"
	reasonBadCert        = "bad_cert"
	reasonRevokedCert    = "revoked_cert"
	reasonWrongVM        = "wrong_vm"
	reasonJoinToken      = "join_token"
)

// authorize wraps h so that it runs only for callers need admits. Without
// Security every call is admitted.
func (m *Manager) authorize(need access, h http.HandlerFunc) http.HandlerFunc {
	if m.trust == nil || need == open {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if m.admit(w, r, need) {
			h(w, r)
		}
	}
}

// admit checks r against need and answers the refusal itself.
func (m *Manager) admit(w http.ResponseWriter, r *http.Request, need access) bool {
	switch need {
	case vmSelf:
		return m.admitVM(w, r)
	case reader:
		return m.admitToken(w, r, token.Read, false)
	case viewer:
		return m.admitToken(w, r, token.Read, true)
	case admin:
		return m.admitToken(w, r, token.Admin, false)
	case adminOrVMSelf:
		if len(r.Header.Values("Authorization")) == 0 && r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			return m.admitVM(w, r)
		}
		return m.admitToken(w, r, token.Admin, false)
	}
	m.refuse(w, r, http.StatusForbidden, "other", "this call is not allowed")
	return false
}

// admitVM admits a request made with the certificate of the VM the path
// names, checked again for expiry and revocation: a kept-alive connection
// outlives its handshake.
func (m *Manager) admitVM(w http.ResponseWriter, r *http.Request) bool {
	vm := r.PathValue("vm")
	id, err := m.trust.verifier.Peer(r.TLS)
	switch {
	case errors.Is(err, pki.ErrNoCert):
		m.refuse(w, r, http.StatusUnauthorized, reasonNoCert, fmt.Sprintf("this call must be made with VM %s's certificate", vm))
	case errors.Is(err, pki.ErrRevoked):
		m.refuse(w, r, http.StatusUnauthorized, reasonRevokedCert, fmt.Sprintf("the client certificate is revoked: %v", err))
	case err != nil:
		m.refuse(w, r, http.StatusUnauthorized, reasonBadCert, fmt.Sprintf("the client certificate is not accepted: %v", err))
	case id.Manager || id.VM != vm:
		m.refuse(w, r, http.StatusForbidden, reasonWrongVM, fmt.Sprintf("the client certificate names %s, not VM %s", id, vm))
	default:
		return true
	}
	return false
}

// admitToken admits a request whose bearer token (or, with cookie and no
// Authorization header, session cookie) is live and allows need.
func (m *Manager) admitToken(w http.ResponseWriter, r *http.Request, need token.Role, cookie bool) bool {
	secret, err := token.FromRequest(r)
	if c, cerr := r.Cookie(sessionCookie); cookie && errors.Is(err, token.ErrMissing) && cerr == nil {
		secret, err = token.ParseSecret(c.Value)
	}
	if err != nil {
		reason := reasonMalformedToken
		if errors.Is(err, token.ErrMissing) {
			reason = reasonNoToken
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="faasnet"`)
		m.refuse(w, r, http.StatusUnauthorized, reason, "this call needs an operator token (Authorization: Bearer TOKEN): "+err.Error())
		return false
	}
	rec, err := m.trust.tokens.Authenticate(secret, m.opts.Now())
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="faasnet", error="invalid_token"`)
		m.refuse(w, r, http.StatusUnauthorized, tokenReason(err), "the bearer token is not accepted: "+err.Error())
		return false
	}
	if !rec.Role.Allows(need) {
		m.refuse(w, r, http.StatusForbidden, reasonRole, fmt.Sprintf("token %s has role %s; this call needs %s", rec.ID, rec.Role, need), "token", rec.ID)
		return false
	}
	return true
}

func tokenReason(err error) string {
	switch {
	case errors.Is(err, token.ErrExpired):
		return reasonExpiredToken
	case errors.Is(err, token.ErrRevoked):
		return reasonRevokedToken
	case errors.Is(err, token.ErrUnknown):
		return reasonUnknownToken
	}
	return reasonMalformedToken
}

// refuse answers a refused call, counts it and logs it. msg and the log
// attributes never hold a secret: token errors name a token by its id.
func (m *Manager) refuse(w http.ResponseWriter, r *http.Request, code int, reason, msg string, attrs ...any) {
	m.metrics.refusals.WithLabelValues(reason).Inc()
	level := slog.LevelWarn
	if reason == reasonNoToken || reason == reasonNoCert {
		level = slog.LevelInfo // a client without credentials: a mistake more often than an attack
	}
	if ok, dropped := m.refusalLog.Allow(reason, time.Now()); ok {
		attrs = append([]any{"method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr, "reason", reason, "code", code, "not_logged_before", dropped}, attrs...)
		m.log.Log(r.Context(), level, "refused a call", attrs...)
	}
	writeError(w, code, msg)
}
