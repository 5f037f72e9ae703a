// Package progress shows an emulated cluster's provisioning as it happens:
// a live view redrawn in place on a terminal, plain lines elsewhere.
package progress

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/cluster"
	"github.com/faasnet/faasnet/treeview"
	"github.com/faasnet/faasnet/units"
)

// IsTerminal reports whether f is a character device, a terminal we can
// redraw on, and TERM does not say it cannot move the cursor.
func IsTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0 && os.Getenv("TERM") != "dumb"
}

// Progress shows a run's progress on a writer: on a terminal a live view
// redrawn in place (the function tree with a bar per VM, or a list of bars
// before the tree is known); elsewhere one plain line per Every.
type Progress struct {
	W      io.Writer
	Live   bool
	Prefix string        // starts plain lines, e.g. the strategy's name
	Every  time.Duration // between plain lines; default 1 s

	lines int           // lines of the last live frame
	next  time.Duration // when the next plain line is due
}

// Update shows s, elapsed after provisioning started. Use it as
// cluster.RunOptions.Progress.
func (p *Progress) Update(elapsed time.Duration, s cluster.Snapshot) {
	if p.Live {
		p.redraw(frame(elapsed, s))
		return
	}
	every := p.Every
	if every <= 0 {
		every = time.Second
	}
	if elapsed < p.next && !allDone(s) {
		return
	}
	p.next = (elapsed/every + 1) * every
	fmt.Fprintf(p.W, "%s%s\n", p.Prefix, headline(elapsed, s))
}

// allDone reports whether every VM is ready or failed.
func allDone(s cluster.Snapshot) bool {
	for _, v := range s.VMs {
		if !v.Ready && v.Failed == "" {
			return false
		}
	}
	return true
}

// headline sums up s in one line.
func headline(elapsed time.Duration, s cluster.Snapshot) string {
	var ready, failed int
	var got, total int64
	for _, v := range s.VMs {
		got += v.Received
		total += v.Total
		if v.Ready {
			ready++
		}
		if v.Failed != "" {
			failed++
		}
	}
	line := fmt.Sprintf("%6.1fs  %d/%d VMs ready  %s of %s received", elapsed.Seconds(), ready, len(s.VMs),
		units.FormatBytes(got), units.FormatBytes(total))
	if failed > 0 {
		line += fmt.Sprintf("  %d failing", failed)
	}
	return line
}

// frame draws the live view.
func frame(elapsed time.Duration, s cluster.Snapshot) string {
	var b strings.Builder
	b.WriteString(headline(elapsed, s) + "\n")
	byVM := map[string]cluster.VMProgress{}
	for _, v := range s.VMs {
		byVM[v.VM] = v
	}
	if len(s.Trees) > 0 && len(s.Trees[0].Nodes) == len(s.VMs) {
		treeview.Draw(&b, s.Trees[0], func(n api.TreeNode) string { return bar(byVM[n.VM]) })
		return b.String()
	}
	for _, v := range s.VMs {
		fmt.Fprintf(&b, "%s  (%s)\n", v.VM, bar(v))
	}
	return b.String()
}

// bar draws one VM's progress.
func bar(v cluster.VMProgress) string {
	const width = 24
	frac := 0.0
	if v.Total > 0 {
		frac = min(1, float64(v.Received)/float64(v.Total))
	}
	full := int(frac * width)
	s := strings.Repeat("█", full) + strings.Repeat("░", width-full) + fmt.Sprintf(" %3.0f%%", 100*frac)
	switch {
	case v.Failed != "":
		s += " failing: " + clip(v.Failed, 40)
	case v.Ready:
		s += " ready"
	}
	return s
}

// redraw replaces the previous frame with f, line by line, clearing what
// is left of each old line.
func (p *Progress) redraw(f string) {
	var b strings.Builder
	if p.lines > 0 {
		fmt.Fprintf(&b, "\x1b[%dF", p.lines) // to the start of the frame's first line
	}
	lines := strings.Split(strings.TrimSuffix(f, "\n"), "\n")
	for _, l := range lines {
		b.WriteString(l + "\x1b[K\n")
	}
	b.WriteString("\x1b[J") // clear below, should the frame have shrunk
	p.lines = len(lines)
	io.WriteString(p.W, b.String())
}

// clip shortens s to n runes, so that a live line does not wrap.
func clip(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
