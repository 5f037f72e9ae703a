package peer

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestParseRange(t *testing.T) {
	tests := []struct {
		h       string
		size    int64
		off, n  int64
		wantErr bool
	}{
		{"bytes=0-0", 10, 0, 1, false},
		{"bytes=0-9", 10, 0, 10, false},
		{"bytes=0-100", 10, 0, 10, false},
		{"bytes=3-", 10, 3, 7, false},
		{"bytes=9-", 10, 9, 1, false},
		{"bytes=-1", 10, 9, 1, false},
		{"bytes=-10", 10, 0, 10, false},
		{"bytes=-11", 10, 0, 10, false},
		{"bytes=10-", 10, 0, 0, true},
		{"bytes=10-10", 10, 0, 0, true},
		{"bytes=-0", 10, 0, 0, true},
		{"bytes=-1", 0, 0, 0, true},
		{"bytes=0-", 0, 0, 0, true},
		{"bytes=2-1", 10, 0, 0, true},
		{"bytes=0-1,3-4", 10, 0, 0, true},
		{"bytes=", 10, 0, 0, true},
		{"bytes=-", 10, 0, 0, true},
		{"bytes=1", 10, 0, 0, true},
		{"bytes=-1-2", 10, 0, 0, true},
		{"bytes=1--2", 10, 0, 0, true},
		{"Bytes=0-1", 10, 0, 0, true},
		{"bytes 0-1", 10, 0, 0, true},
		{"bytes=0x1-2", 10, 0, 0, true},
		{"bytes=9223372036854775807-", 10, 0, 0, true},
		{"bytes=0-9223372036854775807", 10, 0, 10, false},
		{"bytes=0-99999999999999999999", 10, 0, 0, true},
	}
	for _, tt := range tests {
		off, n, err := parseRange(tt.h, tt.size)
		if tt.wantErr {
			if err == nil || !errors.Is(err, errUnsatisfiable) {
				t.Errorf("parseRange(%q, %d) = %d, %d, %v; want unsatisfiable", tt.h, tt.size, off, n, err)
			}
			continue
		}
		if err != nil || off != tt.off || n != tt.n {
			t.Errorf("parseRange(%q, %d) = %d, %d, %v; want %d, %d", tt.h, tt.size, off, n, err, tt.off, tt.n)
		}
	}
}

func TestParseContentRange(t *testing.T) {
	tests := []struct {
		h                 string
		first, last, size int64
		wantErr           bool
	}{
		{"bytes 0-99/1000", 0, 99, 1000, false},
		{"bytes 999-999/1000", 999, 999, 1000, false},
		{"bytes 0-99/*", 0, 99, -1, false},
		{"bytes 0-1000/1000", 0, 0, 0, true},
		{"bytes 5-4/1000", 0, 0, 0, true},
		{"bytes */1000", 0, 0, 0, true},
		{"bytes 0-99", 0, 0, 0, true},
		{"bytes=0-99/1000", 0, 0, 0, true},
		{"bytes -1-99/1000", 0, 0, 0, true},
		{"bytes 0-+99/1000", 0, 0, 0, true},
		{"bytes 0-99/", 0, 0, 0, true},
		{"", 0, 0, 0, true},
	}
	for _, tt := range tests {
		first, last, size, err := parseContentRange(tt.h)
		if tt.wantErr {
			if err == nil {
				t.Errorf("parseContentRange(%q) = %d, %d, %d; want error", tt.h, first, last, size)
			}
			continue
		}
		if err != nil || first != tt.first || last != tt.last || size != tt.size {
			t.Errorf("parseContentRange(%q) = %d, %d, %d, %v", tt.h, first, last, size, err)
		}
	}
}

func TestCheckDigest(t *testing.T) {
	tests := []struct {
		d  string
		ok bool
	}{
		{"sha256:" + strings.Repeat("0123456789abcdef", 4), true},
		{"sha512:" + strings.Repeat("0123456789abcdef", 8), true},
		{"sha256:" + strings.Repeat("0123456789ABCDEF", 4), false},
		{"sha256:" + strings.Repeat("a", 63), false},
		{"sha256:" + strings.Repeat("a", 65), false},
		{"sha512:" + strings.Repeat("a", 64), false},
		{"md5:" + strings.Repeat("a", 32), false},
		{"sha256:" + strings.Repeat("a", 63) + "g", false},
		{"sha256:" + strings.Repeat("a", 63) + "/", false},
		{strings.Repeat("a", 64), false},
		{"", false},
		{"sha256:", false},
	}
	for _, tt := range tests {
		if err := checkDigest(tt.d); (err == nil) != tt.ok {
			t.Errorf("checkDigest(%q) = %v, want ok %v", tt.d, err, tt.ok)
		}
	}
}

func FuzzParseRange(f *testing.F) {
	for _, h := range []string{"bytes=0-99", "bytes=5-", "bytes=-5", "bytes=0-1,2-3", "bytes= 1 - 2", "bytes=-0", "items=1-2", "bytes=99999999999999999999-"} {
		f.Add(h, int64(100))
	}
	f.Add("bytes=0-", int64(0))
	f.Fuzz(func(t *testing.T, h string, size int64) {
		if size < 0 {
			return // sizes come from the Source, never negative
		}
		off, n, err := parseRange(h, size)
		if err != nil {
			if !errors.Is(err, errUnsatisfiable) {
				t.Fatalf("parseRange(%q, %d): error %v is not errUnsatisfiable", h, size, err)
			}
			return
		}
		if off < 0 || n <= 0 || off > size-n {
			t.Fatalf("parseRange(%q, %d) = [%d, %d+%d) outside the blob", h, size, off, off, n)
		}
		// What the server answers, the client must accept as that range.
		cr := fmt.Sprintf("bytes %d-%d/%d", off, off+n-1, size)
		first, last, total, err := parseContentRange(cr)
		if err != nil || first != off || last != off+n-1 || total != size {
			t.Fatalf("Content-Range %q of parseRange(%q, %d) reads back as %d, %d, %d, %v", cr, h, size, first, last, total, err)
		}
	})
}

func FuzzParseContentRange(f *testing.F) {
	for _, h := range []string{"bytes 0-99/1000", "bytes 0-99/*", "bytes */1000", "bytes 5-4/10", "bytes 0-9/10"} {
		f.Add(h)
	}
	f.Fuzz(func(t *testing.T, h string) {
		first, last, size, err := parseContentRange(h)
		if err != nil {
			return
		}
		if first < 0 || last < first || size < -1 || size >= 0 && last >= size {
			t.Fatalf("parseContentRange(%q) = %d, %d, %d: inconsistent", h, first, last, size)
		}
	})
}

func FuzzCheckDigest(f *testing.F) {
	f.Add("sha256:" + strings.Repeat("a", 64))
	f.Add("sha512:" + strings.Repeat("0", 128))
	f.Add("sha256:../../etc/passwd")
	f.Fuzz(func(t *testing.T, d string) {
		if checkDigest(d) != nil {
			return
		}
		// An accepted digest is safe in a URL path, a file name and a log.
		if strings.ContainsAny(d, "/?#% \x00\\") || len(d) != len("sha256:")+64 && len(d) != len("sha512:")+128 {
			t.Fatalf("checkDigest accepted %q", d)
		}
	})
}

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
