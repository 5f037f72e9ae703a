// Package grant holds the proof a worker checks before it serves a blob to
// another VM: a grant, signed by the manager with the cluster CA's key,
// saying that a VM may fetch the blobs of one function's image until a
// given time.
//
// Threat model: any enrolled VM can reach any worker's peer listener, and
// mutual TLS only says which VM is asking, not what it may read. Images may
// be private, so a parent serves a blob only to a VM the manager made a
// member of a function whose pinned image holds that blob. The parent must
// decide offline (the manager is not on the data path) and at once (a
// refusal is never held): hence a short-lived statement signed by the CA
// key, whose public half every worker holds. A grant names the VM, so a
// stolen grant is useless without that VM's key, and it names digests, not
// tags, so it cannot be stretched to another image. Refusals are typed
// errors with a stable Reason, for metrics labels and logs.
//
// Wire form (fits an HTTP header, see Header): base64url(payload) "."
// base64url(signature), both unpadded; the payload is a JSON object, and the
// signature covers a fixed context string followed by the payload bytes, so
// it cannot be replayed as any other signed object.
package grant

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/digest"
)

// Header is the HTTP header a child sends its grant in.
const Header = "Faasnet-Grant"

// Limits of a grant. MaxLen keeps a grant under common header size limits;
// MaxDigests bounds what a grant names (name a manifest's blobs, or, for
// images with more, let the server check blobs against a granted manifest).
const (
	MaxLen      = 8 << 10
	MaxDigests  = 64
	MaxLifetime = 24 * time.Hour
	DefaultTTL  = time.Hour
	// backdate covers workers whose clocks run a little behind the manager's.
	backdate = time.Minute
)

const sigContext = "faasnet grant v1\n"

// Refusal reasons; Reason maps an error to a stable label.
var (
	ErrMalformed   = errors.New("malformed grant")
	ErrSignature   = errors.New("grant signature does not verify")
	ErrExpired     = errors.New("grant expired")
	ErrNotYetValid = errors.New("grant not yet valid")
	ErrWrongVM     = errors.New("grant is for another VM")
	ErrWrongDigest = errors.New("grant does not cover the digest")
)

// Reason returns a short stable label for a refusal from Verify or Parse
// ("malformed", "signature", "expired", "not_yet_valid", "wrong_vm",
// "wrong_digest"), or "other". A request without a grant is the caller's
// to label.
func Reason(err error) string {
	for _, r := range []struct {
		err   error
		label string
	}{
		{ErrMalformed, "malformed"},
		{ErrSignature, "signature"},
		{ErrExpired, "expired"},
		{ErrNotYetValid, "not_yet_valid"},
		{ErrWrongVM, "wrong_vm"},
		{ErrWrongDigest, "wrong_digest"},
	} {
		if errors.Is(err, r.err) {
			return r.label
		}
	}
	return "other"
}

// Grant says VM may fetch the blobs named by Digests for Function, from
// NotBefore until Expires.
type Grant struct {
	VM        string
	Function  string
	Digests   []v1.Hash
	NotBefore time.Time
	Expires   time.Time
}

// New returns a grant valid from now (backdated a minute for clock skew)
// for ttl (DefaultTTL if 0).
func New(vm, function string, digests []v1.Hash, now time.Time, ttl time.Duration) Grant {
	if ttl == 0 {
		ttl = DefaultTTL
	}
	return Grant{VM: vm, Function: function, Digests: digests, NotBefore: now.Add(-backdate), Expires: now.Add(ttl)}
}

// wire is a grant's JSON payload; times are Unix seconds.
type wire struct {
	V         int      `json:"v"`
	VM        string   `json:"vm"`
	Function  string   `json:"fn"`
	Digests   []string `json:"d"`
	NotBefore int64    `json:"nbf"`
	Expires   int64    `json:"exp"`
}

func (g Grant) check() error {
	if err := api.ValidName("vm", g.VM); err != nil {
		return err
	}
	if err := api.ValidName("function", g.Function); err != nil {
		return err
	}
	if len(g.Digests) == 0 || len(g.Digests) > MaxDigests {
		return fmt.Errorf("grant names %d digests, want 1 to %d", len(g.Digests), MaxDigests)
	}
	for _, d := range g.Digests {
		if err := digest.Check(d); err != nil {
			return err
		}
	}
	if !g.Expires.After(g.NotBefore) {
		return fmt.Errorf("grant expires (%s) before it starts (%s)", g.Expires.Format(time.RFC3339), g.NotBefore.Format(time.RFC3339))
	}
	if life := g.Expires.Sub(g.NotBefore); life > MaxLifetime+backdate {
		return fmt.Errorf("grant lifetime %s exceeds %s", life, MaxLifetime)
	}
	return nil
}

// Sign encodes g and signs it with key (the cluster CA's key: ECDSA or
// Ed25519).
func Sign(key crypto.Signer, g Grant) (string, error) {
	g.NotBefore, g.Expires = g.NotBefore.Truncate(time.Second), g.Expires.Truncate(time.Second)
	if err := g.check(); err != nil {
		return "", fmt.Errorf("sign grant for %s/%s: %w", g.VM, g.Function, err)
	}
	w := wire{V: 1, VM: g.VM, Function: g.Function, NotBefore: g.NotBefore.Unix(), Expires: g.Expires.Unix()}
	for _, d := range g.Digests {
		w.Digests = append(w.Digests, d.String())
	}
	payload, err := json.Marshal(w)
	if err != nil {
		return "", fmt.Errorf("encode grant: %w", err)
	}
	msg := append([]byte(sigContext), payload...)
	var sig []byte
	switch key.Public().(type) {
	case *ecdsa.PublicKey:
		h := sha256.Sum256(msg)
		sig, err = key.Sign(rand.Reader, h[:], crypto.SHA256)
	case ed25519.PublicKey:
		sig, err = key.Sign(rand.Reader, msg, crypto.Hash(0))
	default:
		return "", fmt.Errorf("sign grant: key type %T is not supported", key.Public())
	}
	if err != nil {
		return "", fmt.Errorf("sign grant: %w", err)
	}
	raw := base64.RawURLEncoding.EncodeToString(payload) + "." + base64.RawURLEncoding.EncodeToString(sig)
	if len(raw) > MaxLen {
		return "", fmt.Errorf("grant for %s/%s is %d bytes, the limit is %d", g.VM, g.Function, len(raw), MaxLen)
	}
	return raw, nil
}

// Parse checks raw's form and signature against pub and returns the grant,
// without judging its time, VM or digests (Verify does).
func Parse(raw string, pub crypto.PublicKey) (Grant, error) {
	if len(raw) > MaxLen {
		return Grant{}, fmt.Errorf("%w: %d bytes, the limit is %d", ErrMalformed, len(raw), MaxLen)
	}
	p64, s64, ok := strings.Cut(raw, ".")
	if !ok || strings.Contains(s64, ".") {
		return Grant{}, fmt.Errorf("%w: want PAYLOAD.SIGNATURE", ErrMalformed)
	}
	enc := base64.RawURLEncoding.Strict()
	payload, err := enc.DecodeString(p64)
	if err != nil {
		return Grant{}, fmt.Errorf("%w: payload: %w", ErrMalformed, err)
	}
	sig, err := enc.DecodeString(s64)
	if err != nil {
		return Grant{}, fmt.Errorf("%w: signature: %w", ErrMalformed, err)
	}
	// The signature first: nothing an outsider wrote is interpreted.
	if err := verifySig(pub, append([]byte(sigContext), payload...), sig); err != nil {
		return Grant{}, err
	}
	return decode(payload)
}

func verifySig(pub crypto.PublicKey, msg, sig []byte) error {
	switch pub := pub.(type) {
	case *ecdsa.PublicKey:
		h := sha256.Sum256(msg)
		if !ecdsa.VerifyASN1(pub, h[:], sig) {
			return ErrSignature
		}
	case ed25519.PublicKey:
		if len(pub) != ed25519.PublicKeySize || !ed25519.Verify(pub, msg, sig) {
			return ErrSignature
		}
	default:
		return fmt.Errorf("%w: key type %T is not supported", ErrSignature, pub)
	}
	return nil
}

func decode(payload []byte) (Grant, error) {
	var w wire
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return Grant{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return Grant{}, fmt.Errorf("%w: data after the JSON object", ErrMalformed)
	}
	if w.V != 1 {
		return Grant{}, fmt.Errorf("%w: version %d, want 1", ErrMalformed, w.V)
	}
	g := Grant{VM: w.VM, Function: w.Function, NotBefore: time.Unix(w.NotBefore, 0), Expires: time.Unix(w.Expires, 0)}
	if len(w.Digests) > MaxDigests {
		return Grant{}, fmt.Errorf("%w: %d digests, the limit is %d", ErrMalformed, len(w.Digests), MaxDigests)
	}
	for _, s := range w.Digests {
		d, err := digest.Parse(s)
		if err != nil {
			return Grant{}, fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		g.Digests = append(g.Digests, d)
	}
	if err := g.check(); err != nil {
		return Grant{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return g, nil
}

// Verify checks that raw is a grant signed with the key of pub, valid at
// now, for VM vm, naming digest d, and returns it. The error wraps one of
// the Err values; Reason labels it.
func Verify(raw string, pub crypto.PublicKey, now time.Time, vm string, d v1.Hash) (Grant, error) {
	g, err := Check(raw, pub, now, vm)
	if err != nil {
		return g, err
	}
	if !g.Covers(d) {
		return g, fmt.Errorf("%w: %s is not in %s's grant for %s", ErrWrongDigest, d, g.VM, g.Function)
	}
	return g, nil
}

// Check is Verify without the digest, for a server that decides itself what
// the granted digests cover (the blobs a granted manifest references).
func Check(raw string, pub crypto.PublicKey, now time.Time, vm string) (Grant, error) {
	g, err := Parse(raw, pub)
	if err != nil {
		return Grant{}, err
	}
	switch {
	case now.Before(g.NotBefore):
		return g, fmt.Errorf("%w: %s/%s from %s", ErrNotYetValid, g.VM, g.Function, g.NotBefore.UTC().Format(time.RFC3339))
	case !now.Before(g.Expires):
		return g, fmt.Errorf("%w: %s/%s at %s", ErrExpired, g.VM, g.Function, g.Expires.UTC().Format(time.RFC3339))
	case g.VM != vm:
		return g, fmt.Errorf("%w: grant names %s, the caller is %s", ErrWrongVM, g.VM, vm)
	}
	return g, nil
}

// Covers reports whether g names d.
func (g Grant) Covers(d v1.Hash) bool { return slices.Contains(g.Digests, d) }
