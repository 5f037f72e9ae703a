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

// Draw writes t as an indented drawing, root first, children in slot order.
func Draw(w io.Writer, t api.Tree, label Label) error {
	if label == nil {
		label = Default
	}
	if t.Root == nil {
		_, err := fmt.Fprintf(w, "%s: empty tree\n", t.Function)
		return err
	}
	byName := make(map[string]api.TreeNode, len(t.Nodes))
	for _, n := range t.Nodes {
		byName[n.VM] = n
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %d VMs, height %d\n", t.Function, len(t.Nodes), t.Height)
	var walk func(vm, prefix string, last, root bool)
	walk = func(vm, prefix string, last, root bool) {
		n, ok := byName[vm]
		if !ok {
			fmt.Fprintf(&b, "%s?? %s (missing)\n", prefix, vm)
			return
		}
		branch, next := "", ""
		if !root {
			branch, next = "├── ", "│   "
			if last {
				branch, next = "└── ", "    "
			}
		}
		fmt.Fprintf(&b, "%s%s%s  (%s)\n", prefix, branch, n.VM, label(n))
		for i, c := range n.Children {
			walk(c, prefix+next, i == len(n.Children)-1, false)
		}
	}
	walk(*t.Root, "", true, true)
	_, err := io.WriteString(w, b.String())
	return err
}
