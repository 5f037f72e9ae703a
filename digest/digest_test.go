package digest

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	hex64 := strings.Repeat("0a", 32)
	tests := []struct {
		in string
		ok bool
	}{
		{"sha256:" + hex64, true},
		{"sha512:" + hex64 + hex64, true},
		{"sha256:" + strings.ToUpper(hex64), false},
		{"SHA256:" + hex64, false},
		{"sha256:" + hex64[1:], false},
		{"sha256:" + hex64 + "0", false},
		{"sha384:" + hex64, false},
		{"sha256" + hex64, false},
		{"sha256:../" + hex64[3:], false},
		{"sha512:" + hex64, false},
		{"", false},
	}
	for _, tt := range tests {
		h, err := Parse(tt.in)
		if tt.ok != (err == nil) {
			t.Errorf("Parse(%q) = %v, %v; want ok %v", tt.in, h, err, tt.ok)
			continue
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("Parse(%q): %v does not wrap ErrInvalid", tt.in, err)
		}
		if err == nil && h.String() != tt.in {
			t.Errorf("Parse(%q).String() = %q", tt.in, h.String())
		}
	}
}

func TestOf(t *testing.T) {
	want := "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
	if got := Of([]byte("hello")).String(); got != want {
		t.Errorf("Of(hello) = %s, want %s", got, want)
	}
	h := Of([]byte("hello"))
	hs := Hasher(h)
	hs.Write([]byte("hello"))
	if got := fmt.Sprintf("%x", hs.Sum(nil)); got != h.Hex {
		t.Errorf("Hasher(%v) summed hello to %s", h, got)
	}
}

// FuzzParse checks that whatever Parse accepts is canonical: it prints back
// to the same string and holds only safe path characters.
func FuzzParse(f *testing.F) {
	f.Add("sha256:" + strings.Repeat("a", 64))
	f.Add("sha512:" + strings.Repeat("f", 128))
	f.Add("sha256:../../etc/passwd")
	f.Fuzz(func(t *testing.T, s string) {
		h, err := Parse(s)
		if err != nil {
			return
		}
		if h.String() != s || strings.ContainsAny(s, "/\\. ") || s != strings.ToLower(s) {
			t.Fatalf("Parse accepted %q as %v", s, h)
		}
	})
}
