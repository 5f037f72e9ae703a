package httprange

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestParseContentRange(t *testing.T) {
	tests := []struct {
		h       string
		want    ContentRange
		wantErr bool
	}{
		{h: "bytes 0-99/1000", want: ContentRange{0, 99, 1000}},
		{h: "bytes 999-999/1000", want: ContentRange{999, 999, 1000}},
		{h: "bytes 0-0/1", want: ContentRange{0, 0, 1}},
		{h: "bytes 0-99/*", want: ContentRange{0, 99, -1}},
		{h: "bytes */1000", want: ContentRange{-1, -1, 1000}},
		{h: "bytes */0", want: ContentRange{-1, -1, 0}},
		{h: "bytes 007-9/10", want: ContentRange{7, 9, 10}},
		{h: "bytes 0-9223372036854775806/9223372036854775807", want: ContentRange{0, 1<<63 - 2, 1<<63 - 1}},

		{h: "bytes 0-1000/1000", wantErr: true},                               // last == size
		{h: "bytes 0-0/0", wantErr: true},                                     // nothing to hold
		{h: "bytes 5-4/1000", wantErr: true},                                  // last < first
		{h: "bytes */*", wantErr: true},                                       // says nothing
		{h: "bytes 0-99", wantErr: true},                                      // no complete length
		{h: "bytes 7-9", wantErr: true},                                       // no complete length
		{h: "bytes=0-99/1000", wantErr: true},                                 // request syntax
		{h: "Bytes 0-99/1000", wantErr: true},                                 // unit spelled otherwise
		{h: "bytes  0-99/1000", wantErr: true},                                // two spaces
		{h: "bytes 0 - 99/1000", wantErr: true},                               // spaces inside
		{h: "bytes 0-99/1000 ", wantErr: true},                                // trailing space
		{h: "bytes -1-99/1000", wantErr: true},                                // negative
		{h: "bytes 0--1/1000", wantErr: true},                                 // negative last
		{h: "bytes 0-99/-1", wantErr: true},                                   // negative size
		{h: "bytes +0-99/1000", wantErr: true},                                // sign
		{h: "bytes 0-+99/1000", wantErr: true},                                // sign
		{h: "bytes 0x0-9/10", wantErr: true},                                  // hex
		{h: "bytes 0-99/", wantErr: true},                                     // empty size
		{h: "bytes -99/1000", wantErr: true},                                  // empty first
		{h: "bytes 0-/1000", wantErr: true},                                   // empty last
		{h: "bytes 0-9/10/10", wantErr: true},                                 // two slashes
		{h: "bytes 0-1-2/10", wantErr: true},                                  // two dashes
		{h: "bytes 0-99999999999999999999/*", wantErr: true},                  // overflow
		{h: "bytes 0-1/99999999999999999999", wantErr: true},                  // overflow
		{h: "bytes 99999999999999999999-1/5", wantErr: true},                  // overflow
		{h: "bytes 0-9223372036854775807/9223372036854775807", wantErr: true}, // last == size
		{h: "bytes 0-1,3-4/10", wantErr: true},
		{h: "", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseContentRange(tt.h)
		if tt.wantErr {
			if err == nil {
				t.Errorf("ParseContentRange(%q) = %+v; want error", tt.h, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseContentRange(%q) = %+v, %v; want %+v", tt.h, got, err, tt.want)
		}
		if s := got.String(); err == nil && s != strings.Replace(tt.h, "007", "7", 1) {
			t.Errorf("ParseContentRange(%q).String() = %q", tt.h, s)
		}
	}
}

func TestContentRangeLen(t *testing.T) {
	for _, tt := range []struct {
		c    ContentRange
		want int64
	}{
		{ContentRange{0, 0, 1}, 1},
		{ContentRange{100, 199, -1}, 100},
		{ContentRange{-1, -1, 10}, 0},
	} {
		if got := tt.c.Len(); got != tt.want {
			t.Errorf("%v.Len() = %d, want %d", tt.c, got, tt.want)
		}
	}
}

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
		{"bytes= 1 - 2", 10, 1, 2, false},
		{"bytes=10-", 10, 0, 0, true},
		{"bytes=10-10", 10, 0, 0, true},
		{"bytes=-0", 10, 0, 0, true},
		{"bytes=-1", 0, 0, 0, true},
		{"bytes=0-", 0, 0, 0, true},
		{"bytes=2-1", 10, 0, 0, true},
		{"bytes=0-1,3-4", 10, 0, 0, true},
		{"bytes=0-1, 5-", 10, 0, 0, true},
		{"bytes=-1,-2", 10, 0, 0, true},
		{"bytes=20-30,0-1", 10, 0, 0, true},
		{"bytes=", 10, 0, 0, true},
		{"bytes=-", 10, 0, 0, true},
		{"bytes=1", 10, 0, 0, true},
		{"bytes=-1-2", 10, 0, 0, true},
		{"bytes=1--2", 10, 0, 0, true},
		{"bytes=+1-2", 10, 0, 0, true},
		{"Bytes=0-1", 10, 0, 0, true},
		{"bytes 0-1", 10, 0, 0, true},
		{"items=0-1", 10, 0, 0, true},
		{"bytes=0x1-2", 10, 0, 0, true},
		{"bytes=9223372036854775807-", 10, 0, 0, true},
		{"bytes=0-9223372036854775807", 10, 0, 10, false},
		{"bytes=0-99999999999999999999", 10, 0, 0, true},
		{"bytes=-99999999999999999999", 10, 0, 0, true},
	}
	for _, tt := range tests {
		off, n, err := ParseRange(tt.h, tt.size)
		if tt.wantErr {
			if !errors.Is(err, ErrUnsatisfiable) {
				t.Errorf("ParseRange(%q, %d) = %d, %d, %v; want unsatisfiable", tt.h, tt.size, off, n, err)
			}
			// A server answers several ranges 400, not 416: it must
			// tell them apart.
			if multi := strings.Contains(tt.h, ","); errors.Is(err, ErrMultipleRanges) != multi {
				t.Errorf("ParseRange(%q, %d): error %v; several ranges: %v", tt.h, tt.size, err, multi)
			}
			continue
		}
		if err != nil || off != tt.off || n != tt.n {
			t.Errorf("ParseRange(%q, %d) = %d, %d, %v; want %d, %d", tt.h, tt.size, off, n, err, tt.off, tt.n)
		}
	}
}

func TestHeader(t *testing.T) {
	tests := []struct {
		off, n  int64
		want    string
		wantErr bool
	}{
		{0, -1, "", false},
		{5, -1, "bytes=5-", false},
		{0, 1, "bytes=0-0", false},
		{100, 100, "bytes=100-199", false},
		{1<<63 - 2, 1, "bytes=9223372036854775806-9223372036854775806", false},
		{1<<63 - 1, 1, "bytes=9223372036854775807-9223372036854775807", false},
		{1<<63 - 1, 2, "", true},
		{-1, 1, "", true},
		{0, 0, "", true},
	}
	for _, tt := range tests {
		got, err := Header(tt.off, tt.n)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("Header(%d, %d) = %q, %v; want %q, error %v", tt.off, tt.n, got, err, tt.want, tt.wantErr)
		}
	}
}

// FuzzParseContentRange checks that what ParseContentRange accepts is
// consistent and prints back to a header that parses to the same range.
func FuzzParseContentRange(f *testing.F) {
	for _, h := range []string{"bytes 0-99/1000", "bytes 0-99/*", "bytes */1000", "bytes */*", "bytes 5-4/10",
		"bytes 0-9/10", "bytes 00-9/10", "bytes 0-99999999999999999999/*", "bytes -1-2/3"} {
		f.Add(h)
	}
	f.Fuzz(func(t *testing.T, h string) {
		c, err := ParseContentRange(h)
		if err != nil {
			if c != (ContentRange{}) {
				t.Fatalf("ParseContentRange(%q) = %+v with error %v", h, c, err)
			}
			return
		}
		switch {
		case c.Size < -1:
			t.Fatalf("ParseContentRange(%q): size %d", h, c.Size)
		case c.Unsatisfied():
			if c.First != -1 || c.Last != -1 || c.Size < 0 {
				t.Fatalf("ParseContentRange(%q) = %+v: inconsistent unsatisfied range", h, c)
			}
		case c.First < 0 || c.Last < c.First || c.Size >= 0 && c.Last >= c.Size || c.Len() <= 0:
			t.Fatalf("ParseContentRange(%q) = %+v: inconsistent", h, c)
		}
		if again, err := ParseContentRange(c.String()); err != nil || again != c {
			t.Fatalf("%+v from %q prints as %q, which parses to %+v, %v", c, h, c.String(), again, err)
		}
	})
}

// FuzzParseRange checks that ParseRange returns a range inside the
// content, and that the Content-Range a server answers it with reads back
// as that range.
func FuzzParseRange(f *testing.F) {
	for _, h := range []string{"bytes=0-99", "bytes=5-", "bytes=-5", "bytes=0-1,2-3", "bytes= 1 - 2", "bytes=-0", "items=1-2", "bytes=99999999999999999999-"} {
		f.Add(h, int64(100))
	}
	f.Add("bytes=0-", int64(0))
	f.Fuzz(func(t *testing.T, h string, size int64) {
		if size < 0 {
			return // sizes come from the server's content, never negative
		}
		off, n, err := ParseRange(h, size)
		if err != nil {
			if !errors.Is(err, ErrUnsatisfiable) {
				t.Fatalf("ParseRange(%q, %d): error %v is not ErrUnsatisfiable", h, size, err)
			}
			multi := strings.HasPrefix(h, "bytes=") && strings.Contains(h, ",")
			if errors.Is(err, ErrMultipleRanges) != multi {
				t.Fatalf("ParseRange(%q, %d): error %v; several ranges: %v", h, size, err, multi)
			}
			return
		}
		if off < 0 || n <= 0 || off > size-n {
			t.Fatalf("ParseRange(%q, %d) = [%d, %d+%d) outside the content", h, size, off, off, n)
		}
		cr := ContentRange{First: off, Last: off + n - 1, Size: size}
		if got, err := ParseContentRange(cr.String()); err != nil || got != cr {
			t.Fatalf("Content-Range %q of ParseRange(%q, %d) reads back as %+v, %v", cr, h, size, got, err)
		}
	})
}

// FuzzHeader checks that a server's reading of the Range header a client
// sends is the range the client asked for.
func FuzzHeader(f *testing.F) {
	f.Add(int64(0), int64(-1), int64(10))
	f.Add(int64(3), int64(4), int64(10))
	f.Add(int64(9), int64(-1), int64(10))
	f.Fuzz(func(t *testing.T, off, n, size int64) {
		h, err := Header(off, n)
		if err != nil || h == "" || size < 0 {
			return
		}
		gotOff, gotN, err := ParseRange(h, size)
		want := n
		if n < 0 || n > size-off {
			want = size - off
		}
		switch {
		case off >= size:
			if err == nil {
				t.Fatalf("ParseRange(%q, %d) = %d, %d; want unsatisfiable", h, size, gotOff, gotN)
			}
		case err != nil || gotOff != off || gotN != want:
			t.Fatalf("Header(%d, %d) = %q, read for %d bytes as %d, %d, %v", off, n, h, size, gotOff, gotN, err)
		}
	})
}

func ExampleContentRange_String() {
	fmt.Println(ContentRange{First: 0, Last: 99, Size: 1000})
	fmt.Println(ContentRange{First: -1, Last: -1, Size: 1000})
	// Output:
	// bytes 0-99/1000
	// bytes */1000
}
