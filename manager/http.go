package manager

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/liveview"
	"github.com/faasnet/faasnet/pki"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// maxBody bounds a request body: requests are small JSON documents.
const maxBody = 1 << 20

// Handler returns the manager's HTTP API. With Options.Security it must be
// served over TLS with TLSConfig, and every route admits only the callers
// its access says (see access): the one table of who may do what.
func (m *Manager) Handler() http.Handler {
	mux := http.NewServeMux()
	for _, rt := range m.routes() {
		mux.HandleFunc(rt.pattern, m.authorize(rt.need, rt.h))
	}
	// The mux answers unknown paths and wrong methods in plain text; the
	// contract says errors are JSON.
	return m.followers(jsonErrors(mux))
}

type route struct {
	pattern string
	need    access
	h       http.HandlerFunc
}

// routes is the API: every route with who may call it.
func (m *Manager) routes() []route {
	p := api.Prefix
	return []route{
		{"GET /healthz", open, m.handleHealth},
		{"POST " + p + api.EnrollPath, open, m.handleEnroll},

		{"PUT " + p + "/vms/{vm}", vmSelf, m.handleRegister},
		{"POST " + p + "/vms/{vm}/heartbeat", vmSelf, m.handleHeartbeat},
		{"POST " + p + "/vms/{vm}/status", vmSelf, m.handleReport},
		{"POST " + p + "/vms/{vm}/certificate", vmSelf, m.handleRenew},
		{"DELETE " + p + "/vms/{vm}", adminOrVMSelf, m.handleLeave},

		{"GET " + p + "/vms", reader, func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, map[string]any{"vms": m.VMs()})
		}},
		{"GET " + p + "/functions", reader, func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, map[string]any{"functions": m.Functions()})
		}},
		{"GET " + p + "/functions/{fn}/tree", reader, m.handleTree},
		{"GET " + p + "/functions/{fn}/status", reader, m.handleStatus},
		{"GET /metrics", reader, promhttp.HandlerFor(m.metrics.reg, promhttp.HandlerOpts{}).ServeHTTP},

		{"GET /ui/", open, liveview.UI("/ui/").ServeHTTP},
		{"POST " + p + "/ui/session", open, m.handleUISession},
		{"GET " + p + api.EventsPath, viewer, m.handleEvents},

		{"PUT " + p + "/functions/{fn}", admin, m.handlePutFunction},
		{"DELETE " + p + "/functions/{fn}", admin, m.handleDeleteFunction},
		{"POST " + p + "/functions/{fn}/scale", admin, m.handleScale},
		{"DELETE " + p + "/functions/{fn}/vms/{vm}", admin, m.handleRelease},
		{"POST " + p + "/tokens", admin, m.handleCreateToken},
		{"GET " + p + "/tokens", admin, m.handleTokens},
		{"DELETE " + p + "/tokens/{id}", admin, m.handleRevokeToken},
		{"POST " + p + "/join-token", admin, m.handleRotateJoin},
	}
}

func (m *Manager) handleRegister(w http.ResponseWriter, r *http.Request) {
	var req api.RegisterRequest
	if !decode(w, r, &req) {
		return
	}
	out, err := m.RegisterVM(r.Context(), r.PathValue("vm"), req)
	reply(w, out, err)
}

func (m *Manager) handleLeave(w http.ResponseWriter, r *http.Request) {
	err := m.LeaveVM(r.Context(), r.PathValue("vm"))
	reply(w, map[string]string{"vm": r.PathValue("vm"), "result": "removed"}, err)
}

func (m *Manager) handleHeartbeat(w http.ResponseWriter, r *http.Request) {
	// The body may be empty or {}; anything else must still be JSON.
	var ignored map[string]any
	if !decodeOptional(w, r, &ignored) {
		return
	}
	out, err := m.Heartbeat(r.PathValue("vm"))
	reply(w, out, err)
}

func (m *Manager) handleReport(w http.ResponseWriter, r *http.Request) {
	var req api.StatusReport
	if !decode(w, r, &req) {
		return
	}
	err := m.ReportStatus(r.Context(), r.PathValue("vm"), req)
	reply(w, map[string]string{"result": "recorded"}, err)
}

func (m *Manager) handlePutFunction(w http.ResponseWriter, r *http.Request) {
	var req api.FunctionRequest
	if !decode(w, r, &req) {
		return
	}
	out, err := m.PutFunction(r.Context(), r.PathValue("fn"), req)
	reply(w, out, err)
}

func (m *Manager) handleDeleteFunction(w http.ResponseWriter, r *http.Request) {
	err := m.DeleteFunction(r.Context(), r.PathValue("fn"))
	reply(w, map[string]string{"function": r.PathValue("fn"), "result": "deleted"}, err)
}

func (m *Manager) handleScale(w http.ResponseWriter, r *http.Request) {
	var req api.ScaleRequest
	if !decode(w, r, &req) {
		return
	}
	out, err := m.Scale(r.Context(), r.PathValue("fn"), req)
	reply(w, out, err)
}

func (m *Manager) handleRelease(w http.ResponseWriter, r *http.Request) {
	err := m.Release(r.Context(), r.PathValue("fn"), r.PathValue("vm"))
	reply(w, map[string]string{"function": r.PathValue("fn"), "vm": r.PathValue("vm"), "result": "released"}, err)
}

func (m *Manager) handleEnroll(w http.ResponseWriter, r *http.Request) {
	e, err := pki.ParseEnrollRequest(r.Body)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	out, err := m.Enroll(r.Context(), e)
	if StatusCode(err) == http.StatusUnauthorized {
		m.refuse(w, r, http.StatusUnauthorized, reasonJoinToken, err.Error(), "vm", e.VM)
		return
	}
	reply(w, out, err)
}

func (m *Manager) handleRenew(w http.ResponseWriter, r *http.Request) {
	vm := r.PathValue("vm")
	csr, err := pki.ParseRenewRequest(r.Body, vm)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	out, err := m.RenewCertificate(r.Context(), vm, csr)
	reply(w, out, err)
}

func (m *Manager) handleCreateToken(w http.ResponseWriter, r *http.Request) {
	role, ttl, err := ParseTokenRequest(r.Body)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	out, err := m.CreateToken(r.Context(), role, ttl)
	reply(w, out, err)
}

func (m *Manager) handleTokens(w http.ResponseWriter, r *http.Request) {
	out, err := m.Tokens()
	reply(w, map[string]any{"tokens": out}, err)
}

func (m *Manager) handleRevokeToken(w http.ResponseWriter, r *http.Request) {
	err := m.RevokeToken(r.Context(), r.PathValue("id"))
	reply(w, map[string]string{"id": r.PathValue("id"), "result": "revoked"}, err)
}

func (m *Manager) handleRotateJoin(w http.ResponseWriter, r *http.Request) {
	var ignored map[string]any
	if !decodeOptional(w, r, &ignored) {
		return
	}
	out, err := m.RotateJoinToken(r.Context())
	reply(w, out, err)
}

func (m *Manager) handleTree(w http.ResponseWriter, r *http.Request) {
	out, err := m.Tree(r.PathValue("fn"))
	reply(w, out, err)
}

func (m *Manager) handleStatus(w http.ResponseWriter, r *http.Request) {
	out, err := m.Status(r.PathValue("fn"))
	reply(w, out, err)
}

// DecodeRequest decodes one JSON document from body into v, refusing
// oversized bodies and trailing data. It is the only parser of request
// bodies (and so what the fuzz test drives).
func DecodeRequest(body io.Reader, v any) error {
	data, err := io.ReadAll(io.LimitReader(body, maxBody+1))
	if err != nil {
		return fmt.Errorf("reading the request body: %w", err)
	}
	if len(data) > maxBody {
		return fmt.Errorf("request body is larger than %d bytes", maxBody)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("request body is empty; a JSON object is expected")
		}
		return fmt.Errorf("request body is not valid JSON for this request: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("request body has data after the JSON object")
	}
	return nil
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := DecodeRequest(r.Body, v); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return false
	}
	return true
}

// decodeOptional is decode for bodies that may be empty.
func decodeOptional(w http.ResponseWriter, r *http.Request, v any) bool {
	data, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil || len(data) > maxBody {
		writeError(w, http.StatusBadRequest, "request body is unreadable or too large")
		return false
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return true
	}
	if err := DecodeRequest(bytes.NewReader(data), v); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return false
	}
	return true
}

func reply(w http.ResponseWriter, v any, err error) {
	if err != nil {
		writeError(w, StatusCode(err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code, b = http.StatusInternalServerError, []byte(`{"error":"encoding the answer failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, api.Error{Message: msg})
}

// jsonErrors turns the mux's plain-text 404 and 405 answers into JSON errors.
func jsonErrors(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := mux.Handler(r)
		if pattern != "" {
			mux.ServeHTTP(w, r) // sets the path values, which Handler does not
			return
		}
		// No route: find out whether the path exists with another method.
		rec := &statusRecorder{header: http.Header{}}
		h.ServeHTTP(rec, r)
		switch rec.code {
		case http.StatusMethodNotAllowed:
			if allow := rec.header.Get("Allow"); allow != "" {
				w.Header().Set("Allow", allow)
			}
			writeError(w, rec.code, fmt.Sprintf("method %s is not allowed on %s", r.Method, r.URL.Path))
		default:
			writeError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path))
		}
	})
}

// statusRecorder captures what the mux's fallback handler answers.
type statusRecorder struct {
	header http.Header
	code   int
}

func (s *statusRecorder) Header() http.Header { return s.header }
func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return len(b), nil
}
func (s *statusRecorder) WriteHeader(code int) { s.code = code }
