package manager

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/token"
)

// Bounds of a token request: the body is a few dozen bytes, and no token
// outlives what an operator could mean.
const (
	maxTokenRequest = 4 << 10
	MaxTokenTTL     = 10 * 365 * 24 * time.Hour
)

// ErrTokenRequest is wrapped by every error ParseTokenRequest returns.
var ErrTokenRequest = errors.New("bad token request")

// ParseTokenRequest reads the body of POST /tokens: at most 4 KiB, one JSON
// object with only the fields of api.TokenRequest and nothing after it; a
// role of "read" or "admin" (join tokens are made only by rotation, one at
// a time, into the manager's data directory); a lifetime that is empty (no
// expiry) or a Go duration from one second to MaxTokenTTL.
func ParseTokenRequest(r io.Reader) (token.Role, time.Duration, error) {
	body, err := io.ReadAll(io.LimitReader(r, maxTokenRequest+1))
	if err != nil {
		return "", 0, fmt.Errorf("%w: read: %w", ErrTokenRequest, err)
	}
	if len(body) > maxTokenRequest {
		return "", 0, fmt.Errorf("%w: more than %d bytes", ErrTokenRequest, maxTokenRequest)
	}
	var req api.TokenRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return "", 0, fmt.Errorf("%w: %w", ErrTokenRequest, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return "", 0, fmt.Errorf("%w: data after the JSON object", ErrTokenRequest)
	}
	role := token.Role(req.Role)
	if role != token.Read && role != token.Admin {
		return "", 0, fmt.Errorf("%w: role %.40q: want read or admin", ErrTokenRequest, req.Role)
	}
	if req.TTL == "" {
		return role, 0, nil
	}
	ttl, err := time.ParseDuration(req.TTL)
	if err != nil {
		return "", 0, fmt.Errorf("%w: ttl: %w", ErrTokenRequest, err)
	}
	if ttl < time.Second || ttl > MaxTokenTTL {
		return "", 0, fmt.Errorf("%w: ttl %s is not between 1s and %s", ErrTokenRequest, ttl, MaxTokenTTL)
	}
	return role, ttl, nil
}

func tokenInfo(r token.Record) api.TokenInfo {
	info := api.TokenInfo{ID: r.ID, Role: string(r.Role), Created: r.Created}
	if !r.Expires.IsZero() {
		e := r.Expires
		info.Expires = &e
	}
	if !r.Revoked.IsZero() {
		v := r.Revoked
		info.Revoked = &v
	}
	return info
}

// CreateToken makes an operator token of role valid for ttl (0: no
// expiry). The secret is in the answer only; the manager keeps its hash.
func (m *Manager) CreateToken(ctx context.Context, role token.Role, ttl time.Duration) (api.NewToken, error) {
	if m.trust == nil {
		return api.NewToken{}, errNoSecurity
	}
	secret, rec, err := token.New(role, m.opts.Now(), ttl)
	if err != nil {
		return api.NewToken{}, badRequest("%v", err)
	}
	err = m.commit(ctx, "create-token", func(tx *txn) error {
		tx.batch.PutTokens = []token.Record{rec}
		tx.onCommit(func() { m.addToken(rec) })
		return nil
	})
	if err != nil {
		return api.NewToken{}, err
	}
	m.log.Info("created a token", "id", rec.ID, "role", rec.Role, "expires", rec.Expires)
	return api.NewToken{TokenInfo: tokenInfo(rec), Token: secret}, nil
}

func (m *Manager) addToken(r token.Record) {
	if err := m.trust.tokens.Add(r); err != nil {
		// The store holds it; a restart loads it.
		m.log.Error("adding a stored token", "id", r.ID, "err", err)
	}
}

// Tokens lists every token, revoked and expired ones too, without secrets.
func (m *Manager) Tokens() ([]api.TokenInfo, error) {
	if m.trust == nil {
		return nil, errNoSecurity
	}
	out := []api.TokenInfo{}
	for _, r := range m.trust.tokens.Records() {
		out = append(out, tokenInfo(r))
	}
	return out, nil
}

// RevokeToken ends the token with the given id. Revoking a bootstrap
// token leaves its file useless until the next start, which writes a new
// one.
func (m *Manager) RevokeToken(ctx context.Context, id string) error {
	if m.trust == nil {
		return errNoSecurity
	}
	return m.commit(ctx, "revoke-token", func(tx *txn) error {
		rec, ok := m.tokenRecord(id)
		if !ok {
			return notFound("no token has id %.40q", id)
		}
		if !rec.Revoked.IsZero() {
			return nil
		}
		now := m.opts.Now()
		rec.Revoked = now.UTC()
		tx.batch.PutTokens = []token.Record{rec}
		tx.onCommit(func() {
			m.trust.tokens.Revoke(id, now)
			m.log.Warn("revoked a token", "id", id, "role", rec.Role)
		})
		return nil
	})
}

func (m *Manager) tokenRecord(id string) (token.Record, bool) {
	for _, r := range m.trust.tokens.Records() {
		if r.ID == id {
			return r, true
		}
	}
	return token.Record{}, false
}

// RotateJoinToken makes a new join token, revokes every other one and
// writes the new one to the join token file. VMs enrolled already keep
// their certificates.
func (m *Manager) RotateJoinToken(ctx context.Context) (api.NewToken, error) {
	if m.trust == nil {
		return api.NewToken{}, errNoSecurity
	}
	// One rotation at a time, so the file ends with the last token made.
	m.trust.rotateMu.Lock()
	defer m.trust.rotateMu.Unlock()
	now := m.opts.Now()
	secret, rec, err := token.New(token.Join, now, 0)
	if err != nil {
		return api.NewToken{}, &Error{500, err.Error()}
	}
	err = m.commit(ctx, "rotate-join-token", func(tx *txn) error {
		var old []string
		for _, r := range m.trust.tokens.Records() {
			if r.Role == token.Join && r.Revoked.IsZero() {
				r.Revoked = now.UTC()
				tx.batch.PutTokens = append(tx.batch.PutTokens, r)
				old = append(old, r.ID)
			}
		}
		tx.batch.PutTokens = append(tx.batch.PutTokens, rec)
		tx.onCommit(func() {
			for _, id := range old {
				m.trust.tokens.Revoke(id, now)
			}
			m.addToken(rec)
		})
		return nil
	})
	if err != nil {
		return api.NewToken{}, err
	}
	// The store first: should writing the file fail, the old token is
	// revoked all the same (fail closed), and the operator rotates again.
	path := filepath.Join(m.trust.sec.Dir, token.JoinFile)
	if err := token.WriteFile(path, secret); err != nil {
		return api.NewToken{}, &Error{500, fmt.Sprintf("the join token was rotated, but writing it to %s failed (rotate again): %v", path, err)}
	}
	if save := m.opts.SaveClusterFiles; save != nil {
		if err := save(ctx); err != nil {
			return api.NewToken{}, &Error{503, fmt.Sprintf("the join token was rotated and written to %s, but storing it for the other managers failed (rotate again): %v", path, err)}
		}
	}
	m.log.Warn("rotated the join token", "id", rec.ID, "file", path)
	return api.NewToken{TokenInfo: tokenInfo(rec), Token: secret}, nil
}
