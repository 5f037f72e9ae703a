package treeview

import (
	"strings"
	"testing"

	"github.com/faasnet/faasnet/api"
)

func ptr(s string) *string { return &s }

func TestDraw(t *testing.T) {
	tree := api.Tree{Function: "f", Root: ptr("a"), Height: 2, Nodes: []api.TreeNode{
		{VM: "a", Children: []string{"b", "c"}},
		{VM: "b", Parent: ptr("a"), Depth: 1, Children: []string{"d"}},
		{VM: "c", Parent: ptr("a"), Depth: 1},
		{VM: "d", Parent: ptr("b"), Depth: 2},
	}}
	var b strings.Builder
	if err := Draw(&b, tree, func(n api.TreeNode) string { return n.VM }); err != nil {
		t.Fatal(err)
	}
	want := `f: 4 VMs, height 2
a  (a)
├── b  (b)
│   └── d  (d)
└── c  (c)
`
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
	b.Reset()
	Draw(&b, api.Tree{Function: "g"}, nil)
	if b.String() != "g: empty tree\n" {
		t.Errorf("empty tree drawn as %q", b.String())
	}
}
