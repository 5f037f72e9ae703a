package bench

import (
	"bytes"
	"strings"
	"testing"

	"github.com/faasnet/faasnet/cluster"
)

// TestContainerTable: rows of runs with containers get the second table,
// with a column per phase and "-" where a strategy has no such phase;
// rows without containers get none.
func TestContainerTable(t *testing.T) {
	rows := []Row{
		{Strategy: "faasnet", VMs: 4, MakespanS: 2, Containers: true, BytesBeforeReadyMax: 20 << 20, FractionBeforeReady: 0.075,
			Phases: map[string]cluster.PhaseStats{"mount": {MedianS: 0.5}, "ready": {MedianS: 1.5}}},
		{Strategy: "registry", VMs: 4, MakespanS: 60, Containers: true, BytesBeforeReadyMax: 258 << 20, FractionBeforeReady: 1,
			Phases: map[string]cluster.PhaseStats{"unpacked": {MedianS: 50}, "ready": {MedianS: 55}}},
	}
	var b bytes.Buffer
	if err := WriteTable(&b, rows); err != nil {
		t.Fatal(err)
	}
	text := b.String()
	for _, want := range []string{"fetched before ready", "7.5%", "100.0%", "mount", "unpacked", "55.00s", "30.0x vs registry"} {
		if !strings.Contains(text, want) {
			t.Errorf("table lacks %q:\n%s", want, text)
		}
	}
	lines := strings.Split(text, "\n")
	for _, l := range lines {
		if strings.Contains(l, "7.5%") && !strings.Contains(l, " - ") {
			t.Errorf("faasnet's container row has no '-' for the unpacked phase: %q", l)
		}
	}
	b.Reset()
	rows[0].Containers, rows[1].Containers = false, false
	if err := WriteTable(&b, rows); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "fetched before ready") {
		t.Errorf("container table without containers:\n%s", b.String())
	}
}
