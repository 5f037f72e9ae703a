package report

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteJSON(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.json")
	if err := WriteJSON(path, map[string]any{"vms": 3, "strategy": "faasnet"}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := "{\n  \"strategy\": \"faasnet\",\n  \"vms\": 3\n}\n"; string(b) != want {
		t.Errorf("wrote %q, want %q", b, want)
	}
	if err := WriteJSON(path, func() {}); err == nil {
		t.Error("encoding a func did not fail")
	}
	if err := WriteJSON(filepath.Join(t.TempDir(), "none", "r.json"), 1); err == nil {
		t.Error("writing into a missing directory did not fail")
	}
}

// checkSVG checks that b is well-formed XML, an SVG, holding the texts.
func checkSVG(t *testing.T, b []byte, texts ...string) {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(b))
	for {
		if _, err := d.Token(); err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatalf("not well-formed: %v", err)
			}
			break
		}
	}
	if !bytes.Contains(b, []byte("<svg")) {
		t.Fatalf("not an SVG: %.100q", b)
	}
	for _, s := range texts {
		if !bytes.Contains(b, []byte(s)) {
			t.Errorf("the SVG lacks %q", s)
		}
	}
}

func TestCDF(t *testing.T) {
	series := []Series{{Name: "faasnet", Values: []float64{1, 1.5, 2}}, {Name: "registry", Values: []float64{5, 6}, Total: 3}, {Name: "empty"}}
	tests := []struct {
		name    string
		axes    Axes
		series  []Series
		wantErr bool
	}{
		{name: "linear", axes: Axes{Title: "Ready times", X: "seconds", Y: "fraction ready"}, series: series},
		{name: "log", axes: Axes{Title: "Starts", X: "seconds", Y: "fraction started", LogX: true}, series: series},
		{name: "log of a zero", axes: Axes{LogX: true}, series: []Series{{Name: "a", Values: []float64{0, 1}}}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := CDF(tt.axes, tt.series)
			if tt.wantErr {
				if err == nil {
					t.Fatal("no error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), "cdf.svg")
			if err := WriteSVGFile(path, p, p); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			checkSVG(t, b, tt.axes.Title, tt.axes.X, "faasnet", "registry")
			if strings.Contains(string(b), "empty") {
				t.Error("an empty series is in the legend")
			}
		})
	}
}

func TestCDFPoints(t *testing.T) {
	tests := []struct {
		name     string
		s        Series
		maxLen   int
		wantLast [2]float64
	}{
		{name: "thinned", s: Series{Values: descending(100_000)}, maxLen: cdfPoints + 3, wantLast: [2]float64{100_000, 1}},
		{name: "some never came", s: Series{Values: []float64{3, 1, 2}, Total: 4}, maxLen: 4, wantLast: [2]float64{3, 0.75}},
		{name: "one", s: Series{Values: []float64{2}}, maxLen: 2, wantLast: [2]float64{2, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pts := cdf(tt.s)
			if len(pts) > tt.maxLen {
				t.Errorf("%d points, want at most %d", len(pts), tt.maxLen)
			}
			if pts[0].Y != 0 {
				t.Errorf("starts at %v, want fraction 0", pts[0])
			}
			for i := 1; i < len(pts); i++ {
				if pts[i].X < pts[i-1].X || pts[i].Y < pts[i-1].Y {
					t.Fatalf("not monotone at %d: %v, %v", i, pts[i-1], pts[i])
				}
			}
			if last := pts[len(pts)-1]; last.X != tt.wantLast[0] || last.Y != tt.wantLast[1] {
				t.Errorf("ends at %v, want %v", last, tt.wantLast)
			}
		})
	}
}

func descending(n int) []float64 {
	xs := make([]float64, n)
	for i := range xs {
		xs[i] = float64(n - i)
	}
	return xs
}

// TestWriteJSONRoundTrip: what WriteJSON writes reads back as the value.
func TestWriteJSONRoundTrip(t *testing.T) {
	type row struct {
		Strategy string    `json:"strategy"`
		ReadyS   []float64 `json:"ready_s"`
	}
	in := []row{{"faasnet", []float64{1.5, -1}}}
	path := filepath.Join(t.TempDir(), "rows.json")
	if err := WriteJSON(path, in); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	var out []row
	if err := json.Unmarshal(b, &out); err != nil || len(out) != 1 || out[0].Strategy != "faasnet" || out[0].ReadyS[1] != -1 {
		t.Errorf("read back %+v, %v", out, err)
	}
}
