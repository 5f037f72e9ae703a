package grant

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/faasnet/faasnet/digest"
	"github.com/faasnet/faasnet/pki"
)

var t0 = time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)

var (
	manifest = digest.Of([]byte("manifest"))
	layer    = digest.Of([]byte("layer"))
	other    = digest.Of([]byte("another image's layer"))
)

func newCA(t testing.TB) *pki.CA {
	t.Helper()
	ca, err := pki.Init(t.TempDir(), t0)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func sign(t testing.TB, ca *pki.CA, g Grant) string {
	t.Helper()
	raw, err := Sign(ca.Signer(), g)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestVerify(t *testing.T) {
	ca, otherCA := newCA(t), newCA(t)
	g := New("child", "fn", []v1.Hash{manifest, layer}, t0, time.Hour)
	good := sign(t, ca, g)
	p64, s64, _ := strings.Cut(good, ".")

	// A payload edited to name another VM, with the original signature.
	var w wire
	b, _ := base64.RawURLEncoding.DecodeString(p64)
	json.Unmarshal(b, &w)
	w.VM = "rogue"
	edited, _ := json.Marshal(w)
	tamperedPayload := base64.RawURLEncoding.EncodeToString(edited) + "." + s64
	sig, _ := base64.RawURLEncoding.DecodeString(s64)
	sig[len(sig)-1] ^= 1
	tamperedSig := p64 + "." + base64.RawURLEncoding.EncodeToString(sig)

	tests := []struct {
		name string
		raw  string
		now  time.Time
		vm   string
		d    v1.Hash
		want error
	}{
		{"good manifest", good, t0, "child", manifest, nil},
		{"good layer", good, t0.Add(59 * time.Minute), "child", layer, nil},
		{"backdated for skew", good, t0.Add(-30 * time.Second), "child", layer, nil},
		{"expired", good, t0.Add(time.Hour), "child", layer, ErrExpired},
		{"not yet valid", good, t0.Add(-2 * time.Minute), "child", layer, ErrNotYetValid},
		{"wrong VM", good, t0, "neighbour", layer, ErrWrongVM},
		{"wrong digest", good, t0, "child", other, ErrWrongDigest},
		{"signed by another CA", sign(t, otherCA, g), t0, "child", layer, ErrSignature},
		{"tampered payload", tamperedPayload, t0, "child", layer, ErrSignature},
		{"tampered signature", tamperedSig, t0, "child", layer, ErrSignature},
		{"no signature", p64, t0, "child", layer, ErrMalformed},
		{"two dots", good + ".x", t0, "child", layer, ErrMalformed},
		{"padded", good + "=", t0, "child", layer, ErrMalformed},
		{"too long", strings.Repeat("A", MaxLen+1), t0, "child", layer, ErrMalformed},
		{"empty", "", t0, "child", layer, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Check judges all but the digest, which Covers then does.
			g, err := Check(tt.raw, ca.Public(), tt.now, tt.vm)
			switch wantCheck := tt.want; {
			case wantCheck == nil || wantCheck == ErrWrongDigest:
				if err != nil || g.Covers(tt.d) != (wantCheck == nil) {
					t.Errorf("Check = %v, Covers = %v", err, g.Covers(tt.d))
				}
			case !errors.Is(err, wantCheck):
				t.Errorf("Check = %v, want %v", err, wantCheck)
			}
			got, err := Verify(tt.raw, ca.Public(), tt.now, tt.vm, tt.d)
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				if got.VM != "child" || got.Function != "fn" || len(got.Digests) != 2 {
					t.Fatalf("Verify = %+v", got)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify = %v, want %v", err, tt.want)
			}
			if Reason(err) == "other" {
				t.Errorf("Reason(%v) = other", err)
			}
		})
	}
}

// A payload the CA itself signed but that breaks the rules is refused as
// malformed: Parse does not trust the signer to be right.
func TestParseRefusesSignedNonsense(t *testing.T) {
	ca := newCA(t)
	key := ca.Signer()
	signRaw := func(payload string) string {
		h := sha256.Sum256(append([]byte(sigContext), payload...))
		sig, err := key.Sign(rand.Reader, h[:], crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString([]byte(payload)) + "." + base64.RawURLEncoding.EncodeToString(sig)
	}
	d := `"` + layer.String() + `"`
	tests := []struct{ name, payload string }{
		{"version 2", `{"v":2,"vm":"a","fn":"f","d":[` + d + `],"nbf":1,"exp":2}`},
		{"no version", `{"vm":"a","fn":"f","d":[` + d + `],"nbf":1,"exp":2}`},
		{"unknown field", `{"v":1,"vm":"a","fn":"f","d":[` + d + `],"nbf":1,"exp":2,"admin":true}`},
		{"bad vm", `{"v":1,"vm":"../a","fn":"f","d":[` + d + `],"nbf":1,"exp":2}`},
		{"bad digest", `{"v":1,"vm":"a","fn":"f","d":["sha256:ABC"],"nbf":1,"exp":2}`},
		{"no digests", `{"v":1,"vm":"a","fn":"f","d":[],"nbf":1,"exp":2}`},
		{"ends before it starts", `{"v":1,"vm":"a","fn":"f","d":[` + d + `],"nbf":3,"exp":2}`},
		{"lives too long", `{"v":1,"vm":"a","fn":"f","d":[` + d + `],"nbf":0,"exp":90000}`},
		{"trailing data", `{"v":1,"vm":"a","fn":"f","d":[` + d + `],"nbf":1,"exp":2}{}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Parse(signRaw(tt.payload), ca.Public()); !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse = %v, want ErrMalformed", err)
			}
		})
	}
	// The same signer and form with a valid payload is accepted, so the
	// cases above fail for their payload alone.
	if _, err := Parse(signRaw(`{"v":1,"vm":"a","fn":"f","d":[`+d+`],"nbf":1,"exp":2}`), ca.Public()); err != nil {
		t.Fatalf("valid hand-signed grant: %v", err)
	}
}

func TestSignRefuses(t *testing.T) {
	ca := newCA(t)
	many := make([]v1.Hash, MaxDigests+1)
	for i := range many {
		many[i] = digest.Of([]byte{byte(i)})
	}
	for _, tt := range []struct {
		name string
		g    Grant
	}{
		{"bad vm", New("a/b", "fn", []v1.Hash{layer}, t0, 0)},
		{"bad function", New("vm", "", []v1.Hash{layer}, t0, 0)},
		{"no digests", New("vm", "fn", nil, t0, 0)},
		{"too many digests", New("vm", "fn", many, t0, 0)},
		{"bad digest", New("vm", "fn", []v1.Hash{{Algorithm: "md5", Hex: "00"}}, t0, 0)},
		{"lives too long", New("vm", "fn", []v1.Hash{layer}, t0, MaxLifetime+time.Minute)},
	} {
		if _, err := Sign(ca.Signer(), tt.g); err == nil {
			t.Errorf("%s: signed", tt.name)
		}
	}
	if _, err := Sign(ca.Signer(), New("vm", "fn", []v1.Hash{layer}, t0, MaxLifetime)); err != nil {
		t.Errorf("grant of MaxLifetime: %v", err)
	}
	// MaxDigests digests fit in MaxLen.
	if _, err := Sign(ca.Signer(), New(strings.Repeat("v", 128), strings.Repeat("f", 128), many[:MaxDigests], t0, 0)); err != nil {
		t.Errorf("largest grant: %v", err)
	}
}

func TestEd25519(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	raw, err := Sign(key, New("vm", "fn", []v1.Hash{layer}, t0, 0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(raw, pub, t0, "vm", layer); err != nil {
		t.Fatal(err)
	}
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, err := Verify(raw, &ec.PublicKey, t0, "vm", layer); !errors.Is(err, ErrSignature) {
		t.Fatalf("verified with the wrong key type: %v", err)
	}
}

func FuzzVerify(f *testing.F) {
	ca := newCA(f)
	good := sign(f, ca, New("child", "fn", []v1.Hash{manifest, layer}, t0, time.Hour))
	f.Add(good)
	f.Add(good + ".")
	f.Add(strings.Replace(good, ".", "", 1))
	f.Add("e30.AAAA")
	f.Fuzz(func(t *testing.T, raw string) {
		g, err := Verify(raw, ca.Public(), t0, "child", layer)
		if err != nil {
			if Reason(err) == "other" {
				t.Fatalf("untyped refusal: %v", err)
			}
			return
		}
		// Only what the CA signed gets through: the payload signed above
		// (an ECDSA signature can be altered into another valid one, but only
		// over the same payload).
		if g.VM != "child" || g.Function != "fn" || len(raw) > MaxLen {
			t.Fatalf("accepted %q: %+v", raw, g)
		}
	})
}
