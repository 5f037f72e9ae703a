package treeview

import (
	"fmt"
	"strings"
	"testing"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/ftree"
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

// stripedTree builds the tree answer of k stripes over n VMs as the
// manager does, from ftree.
func stripedTree(t *testing.T, k, n int) api.Tree {
	t.Helper()
	st, err := ftree.NewStriped(k, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := st.Insert(fmt.Sprintf("vm-%02d", i)); err != nil {
			t.Fatal(err)
		}
	}
	out := api.Tree{Function: "f"}
	for s := range k {
		sp := api.StripeTree{Stripe: s, Height: st.Height(s)}
		if r := st.Root(s); r != "" {
			sp.Root = &r
		}
		for _, nd := range st.Nodes(s) {
			tn := api.TreeNode{VM: nd.VM, Children: nd.Children, Depth: nd.Depth}
			if nd.Parent != "" {
				tn.Parent = ptr(nd.Parent)
			}
			sp.Nodes = append(sp.Nodes, tn)
		}
		out.Stripes = append(out.Stripes, sp)
	}
	out.Root, out.Height, out.Nodes = out.Stripes[0].Root, out.Stripes[0].Height, out.Stripes[0].Nodes
	return out
}

// TestDrawStripes parses the drawing back: one section per stripe, in
// order, headed "stripe i/k"; in each, every VM once, at the indentation
// of its depth, under its parent (the nearest line above one level less
// indented).
func TestDrawStripes(t *testing.T) {
	for _, tt := range []struct{ k, n int }{{2, 1}, {2, 10}, {3, 11}, {4, 30}} {
		t.Run(fmt.Sprintf("k=%d,n=%d", tt.k, tt.n), func(t *testing.T) {
			tree := stripedTree(t, tt.k, tt.n)
			var b strings.Builder
			if err := DrawStripes(&b, tree, func(n api.TreeNode) string { return "x" }); err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
			if want := fmt.Sprintf("f: %d VMs, %d stripes", tt.n, tt.k); !strings.HasPrefix(lines[0], want) {
				t.Fatalf("first line %q, want it to start with %q", lines[0], want)
			}
			var sections [][]string
			for _, l := range lines[1:] {
				switch {
				case strings.HasPrefix(l, "stripe "):
					sections = append(sections, []string{l})
				case l == "":
				case len(sections) == 0:
					t.Fatalf("line %q before any stripe header", l)
				default:
					sections[len(sections)-1] = append(sections[len(sections)-1], l)
				}
			}
			if len(sections) != tt.k {
				t.Fatalf("%d stripe sections, want %d:\n%s", len(sections), tt.k, b.String())
			}
			for s, sec := range sections {
				if want := fmt.Sprintf("stripe %d/%d: ", s, tt.k); !strings.HasPrefix(sec[0], want) {
					t.Errorf("section %d headed %q, want %q", s, sec[0], want)
				}
				st := tree.Stripes[s]
				parent := map[string]string{}
				depth := map[string]int{}
				for _, n := range st.Nodes {
					depth[n.VM] = n.Depth
					if n.Parent != nil {
						parent[n.VM] = *n.Parent
					}
				}
				seen := map[string]bool{}
				var stack []string // stack[d]: the last VM drawn at depth d
				for _, l := range sec[1:] {
					vm, d := parseLine(t, l)
					if seen[vm] {
						t.Errorf("stripe %d draws %s twice", s, vm)
					}
					seen[vm] = true
					if d != depth[vm] {
						t.Errorf("stripe %d draws %s at depth %d, its depth is %d", s, vm, d, depth[vm])
					}
					stack = append(stack[:min(d, len(stack))], vm)
					if d > 0 && (len(stack) < 2 || stack[d-1] != parent[vm]) {
						t.Errorf("stripe %d draws %s under %v, its parent is %s", s, vm, stack, parent[vm])
					}
				}
				if len(seen) != tt.n {
					t.Errorf("stripe %d draws %d VMs, want %d", s, len(seen), tt.n)
				}
			}
		})
	}
}

// parseLine returns the VM of a drawn line and its depth, four columns of
// prefix per level.
func parseLine(t *testing.T, l string) (string, int) {
	t.Helper()
	name, _, ok := strings.Cut(l, "  (")
	if !ok {
		t.Fatalf("line %q has no label", l)
	}
	trimmed := strings.TrimLeft(name, "│├└─ ")
	prefix := []rune(name[:len(name)-len(trimmed)])
	if len(prefix)%4 != 0 {
		t.Fatalf("line %q: prefix of %d columns", l, len(prefix))
	}
	return trimmed, len(prefix) / 4
}

func TestDrawStripesOfOneTreeIsDraw(t *testing.T) {
	tree := stripedTree(t, 1, 5)
	var a, b strings.Builder
	Draw(&a, tree, nil)
	DrawStripes(&b, tree, nil)
	if a.String() != b.String() {
		t.Errorf("one stripe drawn as\n%s\nnot as Draw does:\n%s", b.String(), a.String())
	}
}

func TestDrawSurvivesACycle(t *testing.T) {
	tree := api.Tree{Function: "f", Root: ptr("a"), Nodes: []api.TreeNode{
		{VM: "a", Children: []string{"b"}},
		{VM: "b", Parent: ptr("a"), Children: []string{"a"}},
	}}
	var b strings.Builder
	if err := Draw(&b, tree, nil); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "?? a") {
		t.Errorf("cycle drawn as %q", b.String())
	}
}
