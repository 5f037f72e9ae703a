package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// StatusError is an error answer of the manager.
type StatusError struct {
	Code    int    // HTTP status
	Message string // the "error" field
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("manager: %d %s: %s", e.Code, http.StatusText(e.Code), e.Message)
}

// IsNotFound reports whether err is a 404 answer.
func IsNotFound(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Code == http.StatusNotFound
}

// Client talks to a manager.
type Client struct {
	Base string       // e.g. "https://127.0.0.1:7070"
	HTTP *http.Client // nil: a client with a 30 s timeout
	// Token is an operator's bearer token, sent with every call; empty
	// for VMs, which are identified by their certificate (HTTP's TLS
	// settings).
	Token string
	// Others are further managers of the same cluster. A call that
	// cannot connect to Base goes to the next one, which then becomes
	// Base. Only a failed connection moves on: a request that reached a
	// manager may have taken effect, and is not sent twice.
	Others []string

	mu sync.Mutex // guards Base and Others while calls move between managers
}

// NewClient returns a client for the manager at base, which may omit the
// scheme ("127.0.0.1:7070" means https), or for several managers,
// comma-separated.
func NewClient(base string) *Client {
	urls := SplitManagers(base)
	c := &Client{Base: urls[0]}
	c.Others = urls[1:]
	return c
}

// SplitManagers splits a comma-separated list of manager URLs, adding the
// https scheme where it is missing and dropping trailing slashes.
func SplitManagers(list string) []string {
	var out []string
	for _, u := range strings.Split(list, ",") {
		u = strings.TrimSpace(u)
		if u == "" && len(out) > 0 {
			continue
		}
		if !strings.Contains(u, "://") {
			u = "https://" + u
		}
		out = append(out, strings.TrimRight(u, "/"))
	}
	return out
}

// bases returns the managers to try, Base first.
func (c *Client) bases() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string{c.Base}, c.Others...)
}

// use makes base the one tried first from now on.
func (c *Client) use(base string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if base == c.Base {
		return
	}
	others := []string{c.Base}
	for _, o := range c.Others {
		if o != base {
			others = append(others, o)
		}
	}
	c.Base, c.Others = base, others
}

// notConnected reports whether err means the request never reached a
// server: the dial failed.
func notConnected(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// NewTLSClient returns a client for the manager at base that checks the
// manager's certificate with tlsConfig (which may also carry the VM's
// certificate) and sends token, if not empty, as a bearer token.
func NewTLSClient(base string, tlsConfig *tls.Config, token string) *Client {
	c := NewClient(base)
	c.Token = token
	c.HTTP = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig:     tlsConfig,
		Proxy:               http.ProxyFromEnvironment,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
	}}
	return c
}

var defaultHTTP = &http.Client{Timeout: 30 * time.Second}

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return defaultHTTP
}

// do sends in (if not nil) as JSON and decodes the answer into out (if not
// nil), to the first manager it can connect to.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var payload []byte
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode %s %s: %w", method, path, err)
		}
		payload = b
	}
	var resp *http.Response
	var err error
	for _, base := range c.bases() {
		var at string
		resp, at, err = c.follow(ctx, base, method, path, payload, in != nil)
		if err == nil {
			c.use(at)
			break
		}
		if !notConnected(err) || ctx.Err() != nil {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("%s %s: reading answer: %w", method, path, err)
	}
	if resp.StatusCode >= 300 {
		var e Error
		if json.Unmarshal(data, &e) != nil || e.Message == "" {
			e.Message = strings.TrimSpace(string(data))
		}
		return &StatusError{Code: resp.StatusCode, Message: e.Message}
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("%s %s: decoding answer: %w", method, path, err)
		}
	}
	return nil
}

// maxRedirects bounds the redirects one call follows: followers send
// callers to their leader, and one hop is enough unless the leadership
// moves meanwhile.
const maxRedirects = 4

// follow sends the request to base and, while the answer is a redirect to
// another manager (a follower naming its leader), to that one; it returns
// the answer and the manager that gave it. A redirect means the request
// took no effect where it was refused, so sending it again is safe; the
// token goes with it, which Go's own redirects drop between hosts.
func (c *Client) follow(ctx context.Context, base, method, path string, payload []byte, hasBody bool) (*http.Response, string, error) {
	for hop := 0; ; hop++ {
		resp, err := c.send(ctx, base, method, path, payload, hasBody)
		if err != nil || hop == maxRedirects {
			return resp, base, err
		}
		next, ok := redirectBase(resp)
		if !ok {
			return resp, base, nil
		}
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		base = next
	}
}

// redirectBase returns the manager a 307 or 308 answer sends the caller to:
// the scheme and host of its Location.
func redirectBase(resp *http.Response) (string, bool) {
	if resp.StatusCode != http.StatusTemporaryRedirect && resp.StatusCode != http.StatusPermanentRedirect {
		return "", false
	}
	u, err := resp.Location()
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return "", false
	}
	return u.Scheme + "://" + u.Host, true
}

// noRedirect returns the HTTP client with redirects left to the caller.
func (c *Client) noRedirect() *http.Client {
	hc := *c.http()
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &hc
}

// send makes one request to the manager at base.
func (c *Client) send(ctx context.Context, base, method, path string, payload []byte, hasBody bool) (*http.Response, error) {
	var body io.Reader
	if hasBody {
		body = bytes.NewReader(payload)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+Prefix+path, body)
	if err != nil {
		return nil, err
	}
	if hasBody {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	return c.noRedirect().Do(req)
}

func esc(s string) string { return url.PathEscape(s) }

// RegisterVM registers or refreshes a VM. A nil capacity keeps the old one.
func (c *Client) RegisterVM(ctx context.Context, vm, addr string, capacity *Capacity) (VM, error) {
	var out VM
	err := c.do(ctx, http.MethodPut, "/vms/"+esc(vm), RegisterRequest{Addr: addr, Capacity: capacity}, &out)
	return out, err
}

// Heartbeat tells the manager vm is alive and returns its desired state.
func (c *Client) Heartbeat(ctx context.Context, vm string) (Assignments, error) {
	var out Assignments
	err := c.do(ctx, http.MethodPost, "/vms/"+esc(vm)+"/heartbeat", struct{}{}, &out)
	return out, err
}

// LeaveVM removes a VM from every tree and the pool.
func (c *Client) LeaveVM(ctx context.Context, vm string) error {
	return c.do(ctx, http.MethodDelete, "/vms/"+esc(vm), nil, nil)
}

// ReportStatus sends a VM's status report.
func (c *Client) ReportStatus(ctx context.Context, vm string, r StatusReport) error {
	return c.do(ctx, http.MethodPost, "/vms/"+esc(vm)+"/status", r, nil)
}

// PutFunction defines or updates a function.
func (c *Client) PutFunction(ctx context.Context, fn string, r FunctionRequest) (Function, error) {
	var out Function
	err := c.do(ctx, http.MethodPut, "/functions/"+esc(fn), r, &out)
	return out, err
}

// Scale adds VMs to a function's tree, all or nothing.
func (c *Client) Scale(ctx context.Context, fn string, r ScaleRequest) (ScaleResponse, error) {
	var out ScaleResponse
	err := c.do(ctx, http.MethodPost, "/functions/"+esc(fn)+"/scale", r, &out)
	return out, err
}

// Release removes one VM from a function's tree.
func (c *Client) Release(ctx context.Context, fn, vm string) error {
	return c.do(ctx, http.MethodDelete, "/functions/"+esc(fn)+"/vms/"+esc(vm), nil, nil)
}

// Tree returns a function's tree.
func (c *Client) Tree(ctx context.Context, fn string) (Tree, error) {
	var out Tree
	err := c.do(ctx, http.MethodGet, "/functions/"+esc(fn)+"/tree", nil, &out)
	return out, err
}

// Status returns the state of every VM of a function.
func (c *Client) Status(ctx context.Context, fn string) (Status, error) {
	var out Status
	err := c.do(ctx, http.MethodGet, "/functions/"+esc(fn)+"/status", nil, &out)
	return out, err
}

// VMs lists the registered VMs.
func (c *Client) VMs(ctx context.Context) ([]VM, error) {
	var out struct {
		VMs []VM `json:"vms"`
	}
	err := c.do(ctx, http.MethodGet, "/vms", nil, &out)
	return out.VMs, err
}

// Functions lists the defined functions.
func (c *Client) Functions(ctx context.Context) ([]Function, error) {
	var out struct {
		Functions []Function `json:"functions"`
	}
	err := c.do(ctx, http.MethodGet, "/functions", nil, &out)
	return out.Functions, err
}

// Enroll sends a VM's enrollment request (no certificate needed: the join
// token is in the body).
func (c *Client) Enroll(ctx context.Context, r EnrollRequest) (EnrollResponse, error) {
	var out EnrollResponse
	err := c.do(ctx, http.MethodPost, EnrollPath, r, &out)
	return out, err
}

// RenewCertificate asks for a new certificate for vm; the call must be made
// with vm's current certificate.
func (c *Client) RenewCertificate(ctx context.Context, vm string, r RenewRequest) (EnrollResponse, error) {
	var out EnrollResponse
	err := c.do(ctx, http.MethodPost, "/vms/"+esc(vm)+"/certificate", r, &out)
	return out, err
}

// CreateToken makes an operator token (admin only).
func (c *Client) CreateToken(ctx context.Context, r TokenRequest) (NewToken, error) {
	var out NewToken
	err := c.do(ctx, http.MethodPost, "/tokens", r, &out)
	return out, err
}

// Tokens lists the tokens, without their secrets (admin only).
func (c *Client) Tokens(ctx context.Context) ([]TokenInfo, error) {
	var out struct {
		Tokens []TokenInfo `json:"tokens"`
	}
	err := c.do(ctx, http.MethodGet, "/tokens", nil, &out)
	return out.Tokens, err
}

// RevokeToken ends the token with the given id (admin only).
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/tokens/"+esc(id), nil, nil)
}

// RotateJoinToken replaces the join token (admin only): the old one stops
// working, and the manager also writes the new one to its data directory.
func (c *Client) RotateJoinToken(ctx context.Context) (NewToken, error) {
	var out NewToken
	err := c.do(ctx, http.MethodPost, "/join-token", struct{}{}, &out)
	return out, err
}
