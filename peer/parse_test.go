package peer

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func FuzzDecodeDescriptor(f *testing.F) {
	f.Add([]byte(`{"digest":"sha256:` + strings.Repeat("a", 64) + `","size":1,"mediaType":"m"}`))
	f.Add([]byte(`{"digest":"sha256:x","size":-1}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := decodeDescriptor(data)
		if err != nil {
			return
		}
		if d.validate() != nil {
			t.Fatalf("decodeDescriptor accepted invalid %+v", d)
		}
		again, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		if d2, err := decodeDescriptor(again); err != nil || d2 != d {
			t.Fatalf("descriptor %+v does not round-trip: %+v, %v", d, d2, err)
		}
	})
}

func FuzzRetryAfter(f *testing.F) {
	for _, h := range []string{"1", "0", "-1", "+1", "61", "99999999999999999999", "Wed, 21 Oct 2015 07:28:00 GMT", ""} {
		f.Add(h)
	}
	f.Fuzz(func(t *testing.T, h string) {
		d := retryAfter(h)
		if d < 0 || d > maxRetryAfter || d%time.Second != 0 {
			t.Fatalf("retryAfter(%q) = %v", h, d)
		}
		if d > 0 && strings.TrimLeft(h, "0123456789") != "" {
			t.Fatalf("retryAfter(%q) = %v from a non-number", h, d)
		}
	})
}

// FuzzErrorMessage checks that a peer's error answer, whatever it holds,
// becomes a bounded, printable message.
func FuzzErrorMessage(f *testing.F) {
	f.Add([]byte(`{"error":"blob gone"}`))
	f.Add([]byte("plain text\n"))
	f.Add([]byte{0xff, 0xfe, 'x'})
	f.Fuzz(func(t *testing.T, body []byte) {
		msg := errorMessage(bytes.NewReader(body))
		if !utf8.ValidString(msg) {
			t.Fatalf("errorMessage(%q) = %q, not UTF-8", body, msg)
		}
		// Each byte of the answer becomes at most one replacement rune
		// (3 bytes); JSON escapes shrink, never grow.
		if len(msg) > 3*maxErrorBody {
			t.Fatalf("errorMessage of %d bytes is %d bytes long", len(body), len(msg))
		}
	})
}
