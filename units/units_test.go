package units

import (
	"math"
	"math/rand"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"4096", 4096},
		{"12B", 12},
		{"1K", 1000},
		{"1KB", 1000},
		{"1kb", -1}, // lower-case b is a bit
		{"1KiB", 1024},
		{"1ki", 1024},
		{"512KiB", 512 << 10},
		{"512 KiB", 512 << 10},
		{" 16MiB ", 16 << 20},
		{"16M", 16e6},
		{"16MB", 16e6},
		{"1.5GiB", 3 << 29},
		{"1.5 GiB", 3 << 29},
		{"2G", 2e9},
		{"1T", 1e12},
		{"1TiB", 1 << 40},
		{"1PiB", 1 << 50},
		{"3bytes", 3},
		{"2Kbytes", 2000},
		{".5KiB", 512},
		{"1.", 1},
		{"0.1KiB", 102},    // 102.4 rounds down
		{"0.5B", 1},        // half rounds up
		{"1.0005KB", 1001}, // 1000.5 rounds up
		{"8191PiB", 8191 << 50},
		{"8192PiB", -1}, // out of range
		{"7EiB", 7 << 60},
		{"8EiB", -1},
		{"9.3EB", -1},
		{"", -1},
		{"KiB", -1},
		{"-1", -1},
		{"+1", -1},
		{"1e3", -1},
		{"1..5", -1},
		{"1.5.5", -1},
		{"12XB", -1},
		{"1 2", -1},
		{"1Mbit", -1},
		{"1MiB/s", -1},
		{"0x10", -1},
		{strings.Repeat("1", 65), -1},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if tt.want < 0 {
			if err == nil {
				t.Errorf("ParseSize(%q) = %d, want error", tt.in, got)
			} else if !strings.Contains(err.Error(), "invalid size") {
				t.Errorf("ParseSize(%q) error %q does not say what failed", tt.in, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestParseSizeMax(t *testing.T) {
	got, err := ParseSize("9223372036854775807")
	if err != nil || got != math.MaxInt64 {
		t.Errorf("ParseSize(MaxInt64) = %d, %v", got, err)
	}
	if _, err := ParseSize("9223372036854775808"); err == nil {
		t.Error("ParseSize(MaxInt64+1) succeeded")
	}
}

func TestParseSizeErrorMessage(t *testing.T) {
	_, err := ParseSize("12XB")
	want := `invalid size "12XB": unknown unit XB`
	if err == nil || err.Error() != want {
		t.Errorf("ParseSize(12XB) error = %v, want %s", err, want)
	}
}

func TestParseRate(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"", 0},
		{"0", 0},
		{"0MiB/s", 0},
		{"0.0Gbps", 0},
		{"unlimited", 0},
		{"Unlimited", 0},
		{"4MiB/s", 4 << 20},
		{"4 MiB/s", 4 << 20},
		{"4MiB/sec", 4 << 20},
		{"16MiB", 16 << 20},
		{"16MB/s", 16e6},
		{"10MBps", 10e6},
		{"1Gbps", 125e6},
		{"1gbps", 125e6},
		{"1Gb/s", 125e6},
		{"1Gbit/s", 125e6},
		{"1Gbits/s", 125e6},
		{"100Mbit/s", 12.5e6},
		{"100Mbps", 12.5e6},
		{"800kb/s", 100e3},
		{"1Kibps", 128},
		{"800bps", 100},
		{"1bps", 1},    // 0.125 B/s must not become unlimited
		{"0.001", 1},   // nor a tiny byte rate
		{"12bps", 2},   // 1.5 rounds up
		{"1000", 1000}, // bytes per second implied
		{"1.5GiB/s", 3 << 29},
		{"-1", -1},
		{"Mbps", -1},
		{"1Mps", -1},
		{"1Mbps/s", -1},
		{"1XB/s", -1},
		{"1MiB/m", -1},
		{"fast", -1},
		{"2000000PB/s", -1},
	}
	for _, tt := range tests {
		got, err := ParseRate(tt.in)
		if tt.want < 0 {
			if err == nil {
				t.Errorf("ParseRate(%q) = %d, want error", tt.in, got)
			} else if !strings.Contains(err.Error(), "invalid rate") {
				t.Errorf("ParseRate(%q) error %q does not say what failed", tt.in, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseRate(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestFormatBytes(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{0, "0 B"},
		{1, "1 B"},
		{1023, "1023 B"},
		{1024, "1 KiB"},
		{1536, "1.5 KiB"},
		{3 << 19, "1.5 MiB"},
		{512 << 10, "512 KiB"},
		{758e6, "723 MiB"},
		{12_345_678_901, "11.5 GiB"},
		{1<<30 + 1<<20*10, "1.01 GiB"},
		{-1536, "-1.5 KiB"},
		{math.MaxInt64, "8 EiB"},
		{math.MinInt64, "-8 EiB"},
	}
	for _, tt := range tests {
		if got := FormatBytes(tt.in); got != tt.want {
			t.Errorf("FormatBytes(%d) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestFormatRate(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{0, "unlimited"},
		{4 << 20, "4 MiB/s"},
		{125e6, "119 MiB/s"},
		{100, "100 B/s"},
	}
	for _, tt := range tests {
		if got := FormatRate(tt.in); got != tt.want {
			t.Errorf("FormatRate(%d) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// FormatBytes must read back through ParseSize to within its rounding: three
// significant digits.
func TestFormatBytesParsesBack(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for range 10000 {
		n := rng.Int63n(1 << uint(rng.Intn(62)+1))
		s := FormatBytes(n)
		got, err := ParseSize(s)
		if err != nil {
			t.Fatalf("ParseSize(FormatBytes(%d) = %q): %v", n, s, err)
		}
		if diff := math.Abs(float64(got-n)) / float64(max(n, 1)); diff > 0.005 {
			t.Fatalf("ParseSize(FormatBytes(%d) = %q) = %d, off by %.2f%%", n, s, got, diff*100)
		}
	}
}

// The flag types' String must read back exactly through Set, as pflag
// relies on for defaults.
func TestFlagRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	mults := []int64{1, 1000, 1 << 10, 1e6, 1 << 20, 1 << 30}
	for range 10000 {
		n := rng.Int63n(1<<20) * mults[rng.Intn(len(mults))]
		var z Size
		if err := z.Set(Size(n).String()); err != nil || int64(z) != n {
			t.Fatalf("Size(%d).String() = %q reads back as %d, %v", n, Size(n).String(), z, err)
		}
		var r Rate
		if err := r.Set(Rate(n).String()); err != nil || int64(r) != n {
			t.Fatalf("Rate(%d).String() = %q reads back as %d, %v", n, Rate(n).String(), r, err)
		}
	}
}

func TestFlagString(t *testing.T) {
	tests := []struct {
		n          int64
		size, rate string
	}{
		{0, "0", "unlimited"},
		{1500, "1500B", "1500B/s"},
		{512 << 10, "512KiB", "512KiB/s"},
		{125e6, "125MB", "125MB/s"},
		{1e15, "1PB", "1PB/s"},
		{2000 << 10, "2000KiB", "2000KiB/s"},
		{1 << 30, "1GiB", "1GiB/s"},
	}
	for _, tt := range tests {
		if got := Size(tt.n).String(); got != tt.size {
			t.Errorf("Size(%d).String() = %q, want %q", tt.n, got, tt.size)
		}
		if got := Rate(tt.n).String(); got != tt.rate {
			t.Errorf("Rate(%d).String() = %q, want %q", tt.n, got, tt.rate)
		}
	}
	if Size(0).Type() != "size" || Rate(0).Type() != "rate" {
		t.Error("flag type names changed")
	}
}

func TestFlagSetErrorKeepsValue(t *testing.T) {
	z, r := Size(7), Rate(7)
	if z.Set("7XB") == nil || r.Set("fast") == nil {
		t.Fatal("Set accepted garbage")
	}
	if z != 7 || r != 7 {
		t.Errorf("failed Set changed the value: %d, %d", z, r)
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"0", "512KiB", "1.5 GiB", "12XB", "1Mbit", ".5", "9223372036854775807", "1e3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("ParseSize(%q) = %d < 0", s, n)
		}
		// An accepted size must survive the exact flag form.
		var z Size
		if err := z.Set(Size(n).String()); err != nil || int64(z) != n {
			t.Fatalf("ParseSize(%q) = %d does not round-trip via %q: %d, %v", s, n, Size(n).String(), z, err)
		}
	})
}

func FuzzParseRate(f *testing.F) {
	for _, s := range []string{"", "0", "unlimited", "4MiB/s", "1Gbps", "100Mbit/s", "16MiB", "1bps", "1Mbps/s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseRate(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("ParseRate(%q) = %d < 0", s, n)
		}
		var r Rate
		if err := r.Set(Rate(n).String()); err != nil || int64(r) != n {
			t.Fatalf("ParseRate(%q) = %d does not round-trip via %q: %d, %v", s, n, Rate(n).String(), r, err)
		}
		// Units hold no digits, so an accepted rate is unlimited exactly
		// when its number has no non-zero digit.
		if hasNonZeroDigit(s) != (n > 0) {
			t.Fatalf("ParseRate(%q) = %d: zero-ness disagrees with its digits", s, n)
		}
	})
}

func hasNonZeroDigit(s string) bool {
	return strings.ContainsAny(s, "123456789")
}

func TestPflag(t *testing.T) {
	fs := pflag.NewFlagSet("worker", pflag.ContinueOnError)
	size, rate := Size(1<<30), Rate(0)
	fs.Var(&size, "cache-size", "cache size")
	fs.Var(&rate, "upload-limit", "upload limit")
	if err := fs.Parse([]string{"--cache-size", "512KiB", "--upload-limit=1Gbps"}); err != nil {
		t.Fatal(err)
	}
	if size != 512<<10 || rate != 125e6 {
		t.Errorf("parsed --cache-size %d --upload-limit %d", size, rate)
	}
	if err := fs.Parse([]string{"--cache-size", "12XB"}); err == nil || !strings.Contains(err.Error(), "unknown unit XB") {
		t.Errorf("bad flag value error = %v", err)
	}
}
