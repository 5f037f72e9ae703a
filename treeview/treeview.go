// Package treeview draws a function tree as indented text, for the command
// line and the demo.
package treeview

import (
	"fmt"
	"io"
	"strings"

	"github.com/faasnet/faasnet/api"
)

// Label returns the text shown after a VM's name.
type Label func(n api.TreeNode) string

// Default labels a VM with its depth and fan-out.
func Default(n api.TreeNode) string {
	return fmt.Sprintf("depth %d, children %d, fan-out across trees %d", n.Depth, len(n.Children), n.Fanout)
}

// Draw writes t's top-level tree (stripe 0's, with stripes) as an indented
// drawing, root first, children in slot order.
func Draw(w io.Writer, t api.Tree, label Label) error {
	if label == nil {
		label = Default
	}
	if t.Root == nil {
		_, err := fmt.Fprintf(w, "%s: empty tree\n", t.Function)
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d VMs, height %d\n", t.Function, len(t.Nodes), t.Height)
	drawTree(&b, *t.Root, t.Nodes, label)
	_, err := io.WriteString(w, b.String())
	return err
}

// DrawStripes writes every stripe tree of t, one after another, each headed
// "stripe i/k" with the blocks it carries. A tree of one stripe is drawn as
// by Draw.
func DrawStripes(w io.Writer, t api.Tree, label Label) error {
	sts := t.StripeTrees()
	if len(sts) < 2 {
		return Draw(w, t, label)
	}
	if label == nil {
		label = Default
	}
	var b strings.Builder
	k := len(sts)
	fmt.Fprintf(&b, "%s: %d VMs, %d stripes (block i travels down stripe i mod %d)\n", t.Function, len(t.Nodes), k, k)
	for i, st := range sts {
		if i > 0 {
			b.WriteString("\n")
		}
		if st.Root == nil {
			fmt.Fprintf(&b, "stripe %d/%d: empty\n", i, k)
			continue
		}
		fmt.Fprintf(&b, "stripe %d/%d: blocks %s; height %d\n", i, k, blocksOf(i, k), st.Height)
		drawTree(&b, *st.Root, st.Nodes, label)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// blocksOf lists the first blocks of stripe i of k.
func blocksOf(i, k int) string {
	return fmt.Sprintf("%d, %d, %d, ...", i, i+k, i+2*k)
}

// drawTree writes the tree of nodes from root down.
func drawTree(b *strings.Builder, root string, nodes []api.TreeNode, label Label) {
	byName := make(map[string]api.TreeNode, len(nodes))
	for _, n := range nodes {
		byName[n.VM] = n
	}
	seen := make(map[string]bool, len(nodes))
	var walk func(vm, prefix string, last, root bool)
	walk = func(vm, prefix string, last, root bool) {
		n, ok := byName[vm]
		if !ok || seen[vm] {
			// A broken answer must not hang the drawing.
			fmt.Fprintf(b, "%s?? %s (missing or drawn already)\n", prefix, vm)
			return
		}
		seen[vm] = true
		branch, next := "", ""
		if !root {
			branch, next = "├── ", "│   "
			if last {
				branch, next = "└── ", "    "
			}
		}
		fmt.Fprintf(b, "%s%s%s  (%s)\n", prefix, branch, n.VM, label(n))
		for i, c := range n.Children {
			walk(c, prefix+next, i == len(n.Children)-1, false)
		}
	}
	walk(root, "", true, true)
}
