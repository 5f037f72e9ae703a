// Package token holds the bearer tokens operators and joining VMs present
// to the manager.
//
// Threat model: a token travels in a header over TLS and sits in a 0600
// file on the operator's machine; the manager's store may be read by
// someone who should not gain access from it. So a token is 32 random bytes
// (unguessable), the manager keeps only its SHA-256 with a role, an expiry
// and an id (a leaked store grants nothing, and an id names a token in logs
// and for revocation without revealing it), presented secrets are compared
// in constant time, and the header parser accepts one exact form.
package token

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// Role is what a token may do.
type Role string

const (
	Admin Role = "admin" // everything
	Read  Role = "read"  // read-only operator calls
	Join  Role = "join"  // enrolling a VM, nothing else
)

// Valid reports why r is not a known role.
func (r Role) Valid() error {
	switch r {
	case Admin, Read, Join:
		return nil
	}
	return fmt.Errorf("role %.40q: want admin, read or join", string(r))
}

// Allows reports whether a token of role r may make a call that needs
// role need. Admin allows everything; the other roles only themselves.
func (r Role) Allows(need Role) bool { return r == Admin || r == need }

const (
	secretBytes = 32
	// SecretLen is the length of an encoded token: 32 bytes in unpadded
	// base64url.
	SecretLen = 43
)

// Errors, so a server can tell 401 (no such token) from 400 and count both.
var (
	ErrMissing   = errors.New("no bearer token")
	ErrMalformed = errors.New("malformed token")
	ErrUnknown   = errors.New("unknown token")
	ErrExpired   = errors.New("token expired")
	ErrRevoked   = errors.New("token revoked")
)

// Record is what the manager keeps of a token: never the secret.
type Record struct {
	ID      string    `json:"id"`
	Role    Role      `json:"role"`
	Hash    string    `json:"hash"` // hex SHA-256 of the encoded secret
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires,omitzero"` // zero: never
	Revoked time.Time `json:"revoked,omitzero"` // zero: live
}

func (r Record) check() error {
	if len(r.ID) != 16 {
		return fmt.Errorf("token record id %.40q: want 16 hex digits", r.ID)
	}
	if _, err := hex.DecodeString(r.ID); err != nil {
		return fmt.Errorf("token record id %.40q: %w", r.ID, err)
	}
	if err := r.Role.Valid(); err != nil {
		return fmt.Errorf("token record %s: %w", r.ID, err)
	}
	if b, err := hex.DecodeString(r.Hash); err != nil || len(b) != sha256.Size {
		return fmt.Errorf("token record %s: hash is not hex SHA-256", r.ID)
	}
	return nil
}

// New makes a token of role valid for ttl from now (0: no expiry) and
// returns its secret, to hand out once, and its record, to keep.
func New(role Role, now time.Time, ttl time.Duration) (string, Record, error) {
	if err := role.Valid(); err != nil {
		return "", Record{}, err
	}
	if ttl < 0 {
		return "", Record{}, fmt.Errorf("token lifetime %s is negative", ttl)
	}
	var b [secretBytes + 8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", Record{}, fmt.Errorf("new token: %w", err)
	}
	secret := base64.RawURLEncoding.EncodeToString(b[:secretBytes])
	r := Record{ID: hex.EncodeToString(b[secretBytes:]), Role: role, Hash: hash(secret), Created: now.UTC()}
	if ttl > 0 {
		r.Expires = now.Add(ttl).UTC()
	}
	return secret, r, nil
}

func hash(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// ParseSecret checks that s is an encoded token: exactly SecretLen
// characters of unpadded base64url in canonical form.
func ParseSecret(s string) (string, error) {
	if len(s) != SecretLen {
		return "", fmt.Errorf("%w: %d characters, want %d", ErrMalformed, len(s), SecretLen)
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil || len(b) != secretBytes {
		return "", fmt.Errorf("%w: not base64url", ErrMalformed)
	}
	return s, nil
}

// ParseBearer returns the token of an Authorization header value of the
// one form "Bearer TOKEN" (the scheme in any case, RFC 9110): one space, no
// other parameters, nothing around it.
func ParseBearer(header string) (string, error) {
	scheme, tok, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", fmt.Errorf("%w: Authorization header is not \"Bearer TOKEN\"", ErrMalformed)
	}
	return ParseSecret(tok)
}

// Set is the manager's tokens. It is safe for concurrent use; the caller
// persists Records after each change.
type Set struct {
	mu   sync.RWMutex
	recs map[string]Record // by ID
}

// NewSet returns a set holding recs, which must be well formed and have
// distinct ids and hashes.
func NewSet(recs []Record) (*Set, error) {
	s := &Set{recs: make(map[string]Record, len(recs))}
	for _, r := range recs {
		if err := s.Add(r); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Add adds a record.
func (s *Set) Add(r Record) error {
	if err := r.check(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.recs == nil {
		s.recs = make(map[string]Record)
	}
	if _, ok := s.recs[r.ID]; ok {
		return fmt.Errorf("token %s exists already", r.ID)
	}
	if _, ok := s.byHash(r.Hash); ok {
		return fmt.Errorf("token %s: the same secret is stored already", r.ID)
	}
	s.recs[r.ID] = r
	return nil
}

// Create makes a new token (New) and adds it.
func (s *Set) Create(role Role, now time.Time, ttl time.Duration) (string, Record, error) {
	secret, r, err := New(role, now, ttl)
	if err != nil {
		return "", Record{}, err
	}
	if err := s.Add(r); err != nil {
		return "", Record{}, err
	}
	return secret, r, nil
}

// Revoke ends token id at now. Its record stays, so a revoked secret is
// recognised as revoked (and a bootstrap file holding it is replaced).
func (s *Set) Revoke(id string, now time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.recs[id]
	if !ok {
		return fmt.Errorf("%w: no token has id %.40q", ErrUnknown, id)
	}
	if r.Revoked.IsZero() {
		r.Revoked = now.UTC()
		s.recs[id] = r
	}
	return nil
}

// Authenticate returns the record of a live token whose secret is secret.
func (s *Set) Authenticate(secret string, now time.Time) (Record, error) {
	if _, err := ParseSecret(secret); err != nil {
		return Record{}, err
	}
	s.mu.RLock()
	r, ok := s.byHash(hash(secret))
	s.mu.RUnlock()
	switch {
	case !ok:
		return Record{}, ErrUnknown
	case !r.Revoked.IsZero():
		return Record{}, fmt.Errorf("%w: token %s at %s", ErrRevoked, r.ID, r.Revoked.Format(time.RFC3339))
	case !r.Expires.IsZero() && !now.Before(r.Expires):
		return Record{}, fmt.Errorf("%w: token %s at %s", ErrExpired, r.ID, r.Expires.Format(time.RFC3339))
	}
	return r, nil
}

// byHash finds the record with hash h, comparing against every record in
// constant time so timing says nothing about stored hashes. s.mu is held.
func (s *Set) byHash(h string) (Record, bool) {
	var found Record
	ok := false
	for _, r := range s.recs {
		if subtle.ConstantTimeCompare([]byte(r.Hash), []byte(h)) == 1 {
			found, ok = r, true
		}
	}
	return found, ok
}

// Records returns every record, oldest first, for persisting and listing.
func (s *Set) Records() []Record {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]Record, 0, len(s.recs))
	for _, r := range s.recs {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Record) int {
		if c := a.Created.Compare(b.Created); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// FromRequest returns the bearer token of r: exactly one Authorization
// header, in the form ParseBearer accepts. ErrMissing means there was none
// (401 with a challenge); other errors wrap ErrMalformed (400).
func FromRequest(r *http.Request) (string, error) {
	vals := r.Header.Values("Authorization")
	switch len(vals) {
	case 0:
		return "", ErrMissing
	case 1:
		return ParseBearer(vals[0])
	default:
		return "", fmt.Errorf("%w: %d Authorization headers", ErrMalformed, len(vals))
	}
}
