package sim

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func smallResults(t *testing.T) []*Result {
	t.Helper()
	var rs []*Result
	for _, n := range []int{4, 8} {
		for _, s := range []Strategy{FaaSNet, Registry} {
			c := DefaultConfig()
			c.VMs, c.ImageSize = n, 10_000_000
			r, err := ScaleOut(c, s)
			if err != nil {
				t.Fatal(err)
			}
			rs = append(rs, r)
		}
	}
	return rs
}

func TestWriteTable(t *testing.T) {
	rs := smallResults(t)
	var b bytes.Buffer
	if err := WriteTable(&b, rs); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 1+len(rs) || !strings.Contains(lines[1], "faasnet") || !strings.Contains(lines[2], "registry") {
		t.Errorf("table:\n%s", b.String())
	}
	if _, err := json.Marshal(rs); err != nil {
		t.Errorf("results do not encode as JSON: %v", err)
	}
}

func TestWriteReplayTable(t *testing.T) {
	tr, rc := syntheticReplay(t)
	r, err := Replay(tr, rc, FaaSNet)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := WriteReplayTable(&b, []*ReplayResult{r}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "faasnet") || strings.Count(b.String(), "\n") != 2 {
		t.Errorf("table:\n%s", b.String())
	}
}

func TestPlots(t *testing.T) {
	rs := smallResults(t)
	var b bytes.Buffer
	if err := PlotMakespans(&b, rs); err != nil {
		t.Fatal(err)
	}
	checkSVG(t, b.String(), "faasnet", "registry", "makespan")
	b.Reset()
	if err := PlotCDF(&b, "title", "seconds", []string{"faasnet", "registry", "empty"}, [][]float64{rs[0].ReadyTimes, rs[1].ReadyTimes, nil}); err != nil {
		t.Fatal(err)
	}
	checkSVG(t, b.String(), "faasnet", "registry", "title")
}

func checkSVG(t *testing.T, svg string, words ...string) {
	t.Helper()
	if !strings.HasPrefix(svg, "<?xml") || !strings.Contains(svg, "<svg") {
		t.Fatalf("not an SVG: %.100q", svg)
	}
	for _, w := range words {
		if !strings.Contains(svg, w) {
			t.Errorf("the SVG does not mention %q", w)
		}
	}
}

func TestCDFPoints(t *testing.T) {
	xs := make([]float64, 100_000)
	for i := range xs {
		xs[i] = float64(len(xs) - i)
	}
	pts := cdf(xs)
	if len(pts) > cdfPoints+3 {
		t.Errorf("%d points", len(pts))
	}
	for i := 1; i < len(pts); i++ {
		if pts[i].X < pts[i-1].X || pts[i].Y < pts[i-1].Y {
			t.Fatalf("not monotone at %d: %v, %v", i, pts[i-1], pts[i])
		}
	}
	if last := pts[len(pts)-1]; last.Y != 1 || last.X != 100_000 {
		t.Errorf("ends at %v", last)
	}
}
