package progress

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/cluster"
)

func TestProgress(t *testing.T) {
	root := "vm-0"
	snap := cluster.Snapshot{VMs: []cluster.VMProgress{
		{VM: "vm-0", Received: 10, Total: 10, Ready: true},
		{VM: "vm-1", Received: 5, Total: 10},
		{VM: "vm-2", Total: 10, Failed: strings.Repeat("x", 100)},
	}, Trees: []api.Tree{{Function: "fn-0", Root: &root, Height: 1, Nodes: []api.TreeNode{
		{VM: "vm-0", Children: []string{"vm-1", "vm-2"}},
		{VM: "vm-1", Parent: &root, Depth: 1},
		{VM: "vm-2", Parent: &root, Depth: 1},
	}}}}

	t.Run("plain", func(t *testing.T) {
		var b bytes.Buffer
		p := &Progress{W: &b, Prefix: "> "}
		for _, ms := range []int{100, 400, 900, 1100, 1500, 2100} {
			p.Update(time.Duration(ms)*time.Millisecond, snap)
		}
		lines := strings.Split(strings.TrimSpace(b.String()), "\n")
		if len(lines) != 3 { // at 0.1 s, then once past 1 s and 2 s
			t.Errorf("%d lines, want 3:\n%s", len(lines), b.String())
		}
		if !strings.HasPrefix(lines[0], "> ") || !strings.Contains(lines[0], "1/3 VMs ready") || !strings.Contains(lines[0], "1 failing") {
			t.Errorf("line %q", lines[0])
		}
	})
	t.Run("live", func(t *testing.T) {
		var b bytes.Buffer
		p := &Progress{W: &b, Live: true}
		p.Update(time.Second, snap)
		first := b.String()
		p.Update(2*time.Second, snap)
		second := strings.TrimPrefix(b.String(), first)
		n := strings.Count(first, "\n")
		if !strings.HasPrefix(second, "\x1b["+strconv.Itoa(n)+"F") {
			t.Errorf("second frame does not move up %d lines: %q", n, second[:min(len(second), 20)])
		}
		for _, want := range []string{"fn-0: 3 VMs", "└── vm-2", "100% ready", " 50%", "failing: xxx"} {
			if !strings.Contains(first, want) {
				t.Errorf("frame lacks %q:\n%s", want, first)
			}
		}
		for _, l := range strings.Split(first, "\n") {
			if len([]rune(l)) > 120 {
				t.Errorf("line of %d runes would wrap: %q", len([]rune(l)), l)
			}
		}
	})
}
