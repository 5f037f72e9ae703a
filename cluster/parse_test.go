package cluster

import (
	"fmt"
	"testing"
)

func TestParseCounter(t *testing.T) {
	text := []byte("# HELP x_total Things.\n# TYPE x_total counter\nx_total 1.6777216e+07\nx_total_other 5\ny{a=\"b\"} 3\n")
	tests := []struct {
		name string
		want int64
	}{
		{"x_total", 16777216},
		{"x_total_other", 5},
		{"y", 0}, // labelled: not ours
		{"missing", 0},
	}
	for _, tt := range tests {
		if got := parseCounter(text, tt.name); got != tt.want {
			t.Errorf("parseCounter(%q) = %d, want %d", tt.name, got, tt.want)
		}
	}
}

func FuzzParseCounter(f *testing.F) {
	f.Add([]byte("x_total 12\n"), int64(12))
	f.Add([]byte("x_total NaN\n"), int64(0))
	f.Add([]byte("x_total -1\nx_total 3\n"), int64(0))
	f.Add([]byte("x_total 1e300\n"), int64(0))
	f.Fuzz(func(t *testing.T, text []byte, n int64) {
		if got := parseCounter(text, "x_total"); got < 0 {
			t.Fatalf("negative counter %d from %q", got, text)
		}
		if n >= 0 && n < 1<<53 { // exact in a float64
			if got := parseCounter(fmt.Appendf(nil, "x_total %d\n", n), "x_total"); got != n {
				t.Fatalf("x_total %d read as %d", n, got)
			}
		}
	})
}

func TestParseProcStat(t *testing.T) {
	tests := []struct {
		in          string
		busy, total uint64
		ok          bool
	}{
		{"cpu  100 5 50 800 20 3 2 1 7 0\ncpu0 1 2 3 4\n", 161, 981, true},
		{"cpu 1 2 3 4\n", 6, 10, true}, // old kernels: four fields
		{"cpu0 1 2 3 4 5\n", 0, 0, false},
		{"cpu 1 x 3 4 5\n", 0, 0, false},
		{"", 0, 0, false},
	}
	for _, tt := range tests {
		busy, total, ok := parseProcStat([]byte(tt.in))
		if busy != tt.busy || total != tt.total || ok != tt.ok {
			t.Errorf("parseProcStat(%q) = %d, %d, %v; want %d, %d, %v", tt.in, busy, total, ok, tt.busy, tt.total, tt.ok)
		}
	}
}

func FuzzParseProcStat(f *testing.F) {
	f.Add([]byte("cpu  100 5 50 800 20 3 2 1 7 0\n"))
	f.Add([]byte("cpu 1 2 3 4\n"))
	f.Add([]byte("cpu 18446744073709551615 1 1 1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		busy, total, ok := parseProcStat(b)
		if ok && busy > total && total >= busy-total { // busy > total only through overflow
			t.Fatalf("busy %d > total %d from %q", busy, total, b)
		}
	})
}
