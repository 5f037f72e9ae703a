package blobcache

import (
	"errors"
	"strings"
	"testing"
)

func TestParseDigest(t *testing.T) {
	hex64 := strings.Repeat("0123456789abcdef", 4)
	hex128 := hex64 + hex64
	tests := []struct {
		in   string
		want digest
		ok   bool
	}{
		{"sha256:" + hex64, digest{"sha256", hex64}, true},
		{"sha512:" + hex128, digest{"sha512", hex128}, true},
		{"", digest{}, false},
		{hex64, digest{}, false},
		{"sha256:", digest{}, false},
		{"sha256:" + hex64[:63], digest{}, false},
		{"sha256:" + hex64 + "0", digest{}, false},
		{"sha256:" + strings.ToUpper(hex64), digest{}, false},
		{"sha256:" + hex64[:63] + "g", digest{}, false},
		{"SHA256:" + hex64, digest{}, false},
		{"sha384:" + hex64, digest{}, false},
		{"sha512:" + hex64, digest{}, false},
		{"sha256:" + hex64[:60] + "/../", digest{}, false},
		{"sha256::" + hex64[1:], digest{}, false},
		{"sha256+b64:" + hex64, digest{}, false},
		{" sha256:" + hex64, digest{}, false},
	}
	for _, tt := range tests {
		got, err := parseDigest(tt.in)
		if tt.ok {
			if err != nil || got != tt.want {
				t.Errorf("parseDigest(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
			if got.String() != tt.in {
				t.Errorf("parseDigest(%q).String() = %q", tt.in, got.String())
			}
			continue
		}
		if !errors.Is(err, ErrInvalidDigest) {
			t.Errorf("parseDigest(%q) = %v, %v; want ErrInvalidDigest", tt.in, got, err)
		}
	}
}

// FuzzParseDigest checks that parseDigest never panics and accepts only
// strings that are safe as path elements and print back unchanged.
func FuzzParseDigest(f *testing.F) {
	hex64 := strings.Repeat("ab", 32)
	for _, s := range []string{
		"sha256:" + hex64, "sha512:" + hex64 + hex64, "", ":", "sha256:", "sha256:../" + hex64[3:],
		"sha256:" + strings.ToUpper(hex64), "md5:" + hex64[:32], "sha256:" + hex64 + "\x00",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseDigest(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidDigest) {
				t.Fatalf("parseDigest(%q): error %v does not wrap ErrInvalidDigest", s, err)
			}
			return
		}
		if d.String() != s {
			t.Fatalf("parseDigest(%q).String() = %q", s, d.String())
		}
		if strings.ContainsAny(d.algo+d.hex, "/\\.\x00") || d.hex == "" {
			t.Fatalf("parseDigest(%q) = %+v: unsafe as a path element", s, d)
		}
		if len(d.hex) != algorithms[d.algo].hexLen {
			t.Fatalf("parseDigest(%q): hex length %d for %s", s, len(d.hex), d.algo)
		}
	})
}
