package lazy

import (
	"context"
	"fmt"
	"math/rand"
	"path"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/containerd/stargz-snapshotter/estargz"
)

// openTestImage indexes testLayers and returns the indexes and a reader
// over their blobs.
func openTestImage(t *testing.T) ([]*Index, *reader) {
	t.Helper()
	blobs, digests := testBlobs(t)
	r := newReader(Options{}.withDefaults())
	t.Cleanup(r.close)
	var ixs []*Index
	for i, b := range blobs {
		ix, err := TOC(context.Background(), BytesReader(b), int64(len(b)), digests[i])
		if err != nil {
			t.Fatal(err)
		}
		ixs = append(ixs, ix)
		r.layers = append(r.layers, layerSource{digest: digests[i], ix: ix, blob: BytesReader(b)})
	}
	return ixs, r
}

// walk lists the tree below n by path.
func walk(n *node, prefix string, out map[string]*node) {
	for name, c := range n.children {
		p := path.Join(prefix, name)
		out[p] = c
		if c.isDir() {
			walk(c, p, out)
		}
	}
}

// TestMergeAndRead merges the test layers and reads every file through the
// chunk reader, without FUSE.
func TestMergeAndRead(t *testing.T) {
	ixs, r := openTestImage(t)
	root, err := merge(ixs)
	if err != nil {
		t.Fatal(err)
	}
	if root.ino != 1 || !root.isDir() {
		t.Errorf("root: ino %d, dir %v", root.ino, root.isDir())
	}
	got := map[string]*node{}
	walk(root, "", got)
	wants := testMerged()
	for p := range got {
		if _, ok := wants[p]; !ok {
			t.Errorf("merged tree has %s, which should not be there", p)
		}
	}
	for p, w := range wants {
		n, ok := got[p]
		if !ok {
			t.Errorf("merged tree lacks %s", p)
			continue
		}
		mode := modeOf(n)
		if mode&syscall.S_IFMT != w.typ || mode&0o7777 != w.perm {
			t.Errorf("%s: mode %o, want %o", p, mode, w.typ|w.perm)
		}
		switch w.typ {
		case syscall.S_IFLNK:
			if n.e.LinkName != w.body {
				t.Errorf("%s: symlink to %q, want %q", p, n.e.LinkName, w.body)
			}
		case syscall.S_IFREG:
			buf := make([]byte, len(w.body)+10)
			k, err := r.readFile(context.Background(), n, buf, 0)
			if err != nil || string(buf[:k]) != w.body {
				t.Errorf("%s: read %d bytes, %v; want its %d bytes", p, k, err, len(w.body))
			}
		}
	}
	if got["hl/orig"] != got["hl/link"] || got["hl/orig"].nlink != 2 {
		t.Errorf("hardlinked names do not share a node with 2 links")
	}
	if d := got["etc"]; d.nlink != 2 {
		t.Errorf("etc has %d links, want 2", d.nlink)
	}
	if d := got["usr"]; d.nlink != 3 {
		t.Errorf("usr has %d links, want 3 (., its name, lib/..)", d.nlink)
	}
}

func TestReadFileRanges(t *testing.T) {
	ixs, r := openTestImage(t)
	root, err := merge(ixs)
	if err != nil {
		t.Fatal(err)
	}
	big := root.lookup("data/big")
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 200; i++ {
		off := rng.Int63n(int64(len(bigBody)) + 10)
		buf := make([]byte, rng.Intn(3*testChunkSize)+1)
		n, err := r.readFile(context.Background(), big, buf, off)
		if err != nil {
			t.Fatalf("read %d at %d: %v", len(buf), off, err)
		}
		want := ""
		if off < int64(len(bigBody)) {
			want = bigBody[off:min(off+int64(len(buf)), int64(len(bigBody)))]
		}
		if string(buf[:n]) != want {
			t.Fatalf("read %d at %d: got %d bytes, not the file's %d", len(buf), off, n, len(want))
		}
	}
	if s := r.stats(); s.ChunksFetched != int64(len(big.e.chunks)) || s.CacheHits == 0 {
		t.Errorf("stats %+v: want every one of %d chunks fetched once, then cache hits", s, len(big.e.chunks))
	}
}

func TestParseWhiteout(t *testing.T) {
	for _, tc := range []struct {
		name   string
		kind   whiteoutKind
		target string
	}{
		{"etc/passwd", notWhiteout, ""},
		{".wh.gone", deletes, "gone"},
		{"a/b/.wh.c", deletes, "a/b/c"},
		{"a/.wh..wh..opq", opaque, "a"},
		{".wh..wh..opq", opaque, ""},
		{"a/.wh..wh.plnk", hidden, ""},
		{".wh.", hidden, ""},
		{".wh..", hidden, ""},
		{".wh...", hidden, ""},
		{"a/.wh..hidden", deletes, "a/.hidden"},
		{"a.wh.b", notWhiteout, ""},
		{".wh.x/y", notWhiteout, ""}, // a directory named .wh.x is no whiteout of its children
	} {
		kind, target := parseWhiteout(tc.name)
		if kind != tc.kind || target != tc.target {
			t.Errorf("parseWhiteout(%q) = %v, %q; want %v, %q", tc.name, kind, target, tc.kind, tc.target)
		}
	}
}

func FuzzParseWhiteout(f *testing.F) {
	for _, s := range []string{".wh.a", "x/.wh..wh..opq", "a/../.wh..", "/.wh./", ".wh..wh.", "a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		name = cleanName(name)
		kind, target := parseWhiteout(name)
		dir := path.Dir("/" + name)[1:]
		switch kind {
		case deletes:
			// The target is a sibling of the whiteout, never above it.
			if path.Dir("/" + target)[1:] != dir || cleanName(target) != target || target == dir {
				t.Fatalf("whiteout %q deletes %q outside its directory %q", name, target, dir)
			}
		case opaque:
			if target != dir {
				t.Fatalf("opaque marker %q clears %q, not its directory", name, target)
			}
		case notWhiteout:
			if strings.HasPrefix(path.Base(name), whiteoutPrefix) {
				t.Fatalf("%q not taken for a whiteout", name)
			}
		}
	})
}

// TestMergeProperty stacks random layers over a small namespace and checks
// merge against a model of OCI layer semantics built differently: a flat map
// of paths, where deleting or replacing a path drops everything below it.
func TestMergeProperty(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	names := []string{"a", "b", "a/x", "a/y", "b/x", "a/x/z"}
	rounds := 300
	if testing.Short() {
		rounds = 50
	}
	for round := 0; round < rounds; round++ {
		var layers [][]*estargz.TOCEntry
		for range rng.Intn(4) + 1 {
			var l []*estargz.TOCEntry
			for range rng.Intn(6) + 1 {
				p := names[rng.Intn(len(names))]
				switch rng.Intn(4) {
				case 0:
					l = append(l, &estargz.TOCEntry{Name: p, Type: "dir", Mode: int64(0o700 + rng.Intn(8))})
				case 1:
					l = append(l, &estargz.TOCEntry{Name: p, Type: "symlink", LinkName: fmt.Sprint(rng.Intn(100))})
				case 2:
					l = append(l, &estargz.TOCEntry{Name: path.Join(path.Dir(p), ".wh."+path.Base(p)), Type: "reg"})
				case 3:
					l = append(l, &estargz.TOCEntry{Name: path.Join(p, whiteoutOpaque), Type: "reg"})
				}
			}
			layers = append(layers, l)
		}
		var ixs []*Index
		for _, l := range layers {
			ix, err := buildIndex(&estargz.JTOC{Version: 1, Entries: l}, 100, 50, Limits{}.withDefaults())
			if err != nil {
				t.Fatal(err)
			}
			ixs = append(ixs, ix)
		}
		root, err := merge(ixs)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]*node{}
		walk(root, "", got)
		want := modelMerge(layers)
		if len(got) != len(want) {
			t.Fatalf("round %d: merged %v, model %v (layers %s)", round, keys(got), keys(want), dump(layers))
		}
		for p, w := range want {
			n := got[p]
			if n == nil || n.fileType() != w.Type || (n.e != nil && (n.e.Mode != w.Mode || n.e.LinkName != w.LinkName)) {
				t.Fatalf("round %d: %s: merged %+v, model %+v (layers %s)", round, p, n, w, dump(layers))
			}
		}
	}
}

// modelMerge applies layers to a flat map of path to entry.
func modelMerge(layers [][]*estargz.TOCEntry) map[string]*estargz.TOCEntry {
	fsys := map[string]*estargz.TOCEntry{}
	removeAll := func(p string, self bool) {
		for q := range fsys {
			if (self && q == p) || strings.HasPrefix(q, p+"/") {
				delete(fsys, q)
			}
		}
	}
	for _, l := range layers {
		for _, e := range l {
			base := path.Base(e.Name)
			switch {
			case base == whiteoutOpaque:
				removeAll(path.Dir(e.Name), false)
			case strings.HasPrefix(base, ".wh."):
				removeAll(path.Join(path.Dir(e.Name), base[4:]), true)
			}
		}
		for _, e := range l {
			if strings.HasPrefix(path.Base(e.Name), ".wh.") {
				continue
			}
			var parents []string // top down
			for d := path.Dir(e.Name); d != "."; d = path.Dir(d) {
				parents = append([]string{d}, parents...)
			}
			for _, d := range parents {
				if old, ok := fsys[d]; !ok || old.Type != "dir" {
					removeAll(d, true)
					fsys[d] = &estargz.TOCEntry{Name: d, Type: "dir"} // implicit
				}
			}
			if old, ok := fsys[e.Name]; !ok || old.Type != "dir" || e.Type != "dir" {
				removeAll(e.Name, true)
			}
			fsys[e.Name] = e
		}
	}
	return fsys
}

func keys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func dump(layers [][]*estargz.TOCEntry) string {
	var b strings.Builder
	for i, l := range layers {
		fmt.Fprintf(&b, "\n  layer %d:", i)
		for _, e := range l {
			fmt.Fprintf(&b, " %s(%s)", e.Name, e.Type)
		}
	}
	return b.String()
}

// TestMergeOverlayWhiteouts merges each test layer on its own with
// overlayWhiteouts, as the snapshotter mounts them: the whiteouts are
// there as overlayfs reads them, an entry of the layer still wins over its
// own whiteout, and without the option they stay hidden.
func TestMergeOverlayWhiteouts(t *testing.T) {
	ixs, _ := openTestImage(t)
	for _, tc := range []struct {
		layer     int
		whiteouts []string // character devices 0/0
		opaque    []string // directories marked opaque
		files     []string // not whiteouts
	}{
		{layer: 0, files: []string{"gone/file", "keep/a", "readd"}},
		{layer: 1, whiteouts: []string{"gone", "keep/a"}, opaque: []string{"opaque"}, files: []string{"opaque/new"}},
		{layer: 2, files: []string{"readd", "swap/x"}}, // readd: its own whiteout is replaced
	} {
		t.Run(fmt.Sprint("layer", tc.layer), func(t *testing.T) {
			for _, overlay := range []bool{false, true} {
				root, err := mergeTree(ixs[tc.layer:tc.layer+1], overlay)
				if err != nil {
					t.Fatal(err)
				}
				got := map[string]*node{}
				walk(root, "", got)
				var gotWh, gotOpq []string
				for p, n := range got {
					if n.whiteout {
						gotWh = append(gotWh, p)
						if modeOf(n)&syscall.S_IFMT != syscall.S_IFCHR || n.e.DevMajor != 0 || n.e.DevMinor != 0 {
							t.Errorf("whiteout %s: mode %o dev %d/%d, want a character device 0/0", p, modeOf(n), n.e.DevMajor, n.e.DevMinor)
						}
					}
					if strings.HasPrefix(path.Base(p), whiteoutPrefix) {
						t.Errorf("%s is in the tree under its OCI name", p)
					}
					if n.opaque {
						gotOpq = append(gotOpq, p)
						if v, ok := xattr(n, "trusted.overlay.opaque"); !ok || string(v) != "y" {
							t.Errorf("opaque %s: trusted.overlay.opaque = %q, %v; want y", p, v, ok)
						}
					}
				}
				slices.Sort(gotWh)
				slices.Sort(gotOpq)
				wantWh, wantOpq := tc.whiteouts, tc.opaque
				if !overlay {
					wantWh, wantOpq = nil, nil
				}
				if !slices.Equal(gotWh, wantWh) || !slices.Equal(gotOpq, wantOpq) {
					t.Errorf("overlay %v: whiteouts %q, opaque %q; want %q, %q", overlay, gotWh, gotOpq, wantWh, wantOpq)
				}
				for _, p := range tc.files {
					if n := got[p]; n == nil || n.whiteout {
						t.Errorf("overlay %v: %s missing or a whiteout", overlay, p)
					}
				}
			}
		})
	}
}

// TestMergeOverlayProperty checks the per-layer trees against merge: each
// random layer merged on its own with overlayWhiteouts, then stacked the
// way overlayfs looks names up (overlayStack), shows what merge of all
// layers shows. Rounds with a stray whiteout (strayWhiteout) are left out.
func TestMergeOverlayProperty(t *testing.T) {
	rng := rand.New(rand.NewSource(11))
	names := []string{"a", "b", "a/x", "a/y", "b/x", "a/x/z"}
	rounds, ran := 2000, 0
	for round := 0; round < rounds; round++ {
		var layers [][]*estargz.TOCEntry
		for range rng.Intn(4) + 1 {
			var l []*estargz.TOCEntry
			for range rng.Intn(6) + 1 {
				p := names[rng.Intn(len(names))]
				switch rng.Intn(4) {
				case 0:
					l = append(l, &estargz.TOCEntry{Name: p, Type: "dir", Mode: int64(0o700 + rng.Intn(8))})
				case 1:
					l = append(l, &estargz.TOCEntry{Name: p, Type: "symlink", LinkName: fmt.Sprint(rng.Intn(100))})
				case 2:
					l = append(l, &estargz.TOCEntry{Name: path.Join(path.Dir(p), ".wh."+path.Base(p)), Type: "reg"})
				case 3:
					l = append(l, &estargz.TOCEntry{Name: path.Join(p, whiteoutOpaque), Type: "reg"})
				}
			}
			layers = append(layers, l)
		}
		if strayWhiteout(layers) {
			continue
		}
		ran++
		var ixs []*Index
		var tops []*node // per-layer trees, top first
		for _, l := range layers {
			ix, err := buildIndex(&estargz.JTOC{Version: 1, Entries: l}, 100, 50, Limits{}.withDefaults())
			if err != nil {
				t.Fatal(err)
			}
			ixs = append(ixs, ix)
			one, err := mergeTree([]*Index{ix}, true)
			if err != nil {
				t.Fatal(err)
			}
			tops = append([]*node{one}, tops...)
		}
		root, err := merge(ixs)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]*node{}
		walk(root, "", want)
		got := map[string]*node{}
		overlayStack(tops, "", got)
		if !slices.Equal(keys(got), keys(want)) {
			t.Fatalf("round %d: overlay of per-layer trees %v, merge %v (layers %s)", round, keys(got), keys(want), dump(layers))
		}
		for p, w := range want {
			g := got[p]
			if g.fileType() != w.fileType() || (!w.isDir() && (g.e.Mode != w.e.Mode || g.e.LinkName != w.e.LinkName)) {
				t.Fatalf("round %d: %s: overlay %+v, merge %+v (layers %s)", round, p, g, w, dump(layers))
			}
		}
	}
	if ran < rounds/5 { // most rounds hold a stray whiteout
		t.Fatalf("only %d of %d rounds ran", ran, rounds)
	}
}

// overlayStack lists what an overlay of the directories dirs (top first)
// shows below prefix, as overlayfs looks names up: the topmost layer that
// has a name decides; a whiteout hides it; a directory merges with the
// same-named directories below it down to the first non-directory or
// through the first opaque one.
func overlayStack(dirs []*node, prefix string, out map[string]*node) {
	seen := map[string]bool{}
	for _, d := range dirs {
		for name := range d.children {
			if seen[name] {
				continue
			}
			seen[name] = true
			var stack []*node
			for _, e := range dirs {
				c := e.children[name]
				if c == nil {
					continue
				}
				if len(stack) > 0 && (!c.isDir() || c.whiteout) {
					break
				}
				stack = append(stack, c)
				if !c.isDir() || c.opaque {
					break
				}
			}
			top := stack[0]
			if top.whiteout {
				continue
			}
			p := path.Join(prefix, name)
			out[p] = top
			if top.isDir() {
				overlayStack(stack, p, out)
			}
		}
	}
}

// strayWhiteout reports whether a whiteout of some layer lies below a path
// that the layers under it hold as a non-directory, or in a directory that
// neither its own layer nor what its whiteouts leave of them has. Such a layer is malformed; a per-layer
// tree must make the whiteout's directory (it cannot know the layers below),
// so an overlay shows it where merge shows nothing.
func strayWhiteout(layers [][]*estargz.TOCEntry) bool {
	for i, l := range layers {
		lower := modelMerge(layers[:i])
		// What this layer's whiteouts leave of the layers below.
		left := modelMerge(append(slices.Clone(layers[:i]), whiteoutsOf(l)))
		own := map[string]bool{}
		for _, e := range l {
			if !strings.HasPrefix(path.Base(e.Name), whiteoutPrefix) {
				for d := e.Name; d != "."; d = path.Dir(d) {
					own[d] = true
				}
			}
		}
		for _, e := range l {
			if !strings.HasPrefix(path.Base(e.Name), whiteoutPrefix) {
				continue
			}
			dir := path.Dir(e.Name)
			if le, ok := left[dir]; dir != "." && !own[dir] && (!ok || le.Type != "dir") {
				return true
			}
			for d := dir; d != "."; d = path.Dir(d) {
				if le, ok := lower[d]; ok && le.Type != "dir" {
					return true
				}
			}
		}
	}
	return false
}

// whiteoutsOf returns the whiteouts of layer l.
func whiteoutsOf(l []*estargz.TOCEntry) []*estargz.TOCEntry {
	var out []*estargz.TOCEntry
	for _, e := range l {
		if strings.HasPrefix(path.Base(e.Name), whiteoutPrefix) {
			out = append(out, e)
		}
	}
	return out
}
