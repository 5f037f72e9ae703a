package sim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/faasnet/faasnet/report"
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

// TestPlots: a sweep plots makespans, one VM count the ready times' CDF,
// a replay its latencies' CDF; each says what it plots.
func TestPlots(t *testing.T) {
	rs := smallResults(t)
	p, err := PlotMakespans(rs)
	if err != nil {
		t.Fatal(err)
	}
	if p.Title.Text != "Makespan against concurrency" || p.X.Label.Text != "containers started at once" {
		t.Errorf("makespan plot titled %q, x axis %q", p.Title.Text, p.X.Label.Text)
	}
	if p, err = PlotReady(rs); err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("%d containers on %d VMs", rs[0].Containers, rs[0].VMs); p.Title.Text != want {
		t.Errorf("CDF titled %q, want %q", p.Title.Text, want)
	}
	var b bytes.Buffer
	if err := report.WriteSVG(&b, p); err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if !strings.Contains(b.String(), string(r.Strategy)) {
			t.Errorf("the CDF's legend lacks %s", r.Strategy)
		}
	}
	if p, err = PlotLatencies([]*ReplayResult{{Strategy: FaaSNet, Latencies: []float64{0.5, 2}}}); err != nil {
		t.Fatal(err)
	}
	if p.Title.Text != "Cold-start provisioning latency" {
		t.Errorf("latency CDF titled %q", p.Title.Text)
	}
}
