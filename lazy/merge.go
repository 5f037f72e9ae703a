package lazy

import (
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/containerd/stargz-snapshotter/estargz"
)

// OCI whiteouts (image-spec layer.md): in a layer, an entry named
// .wh.NAME deletes NAME of the lower layers, and .wh..wh..opq in a
// directory hides all of that directory's lower-layer entries. Other names
// with the .wh..wh. prefix are bookkeeping of aufs and hidden.
const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	whiteoutOpaque = ".wh..wh..opq"
)

// whiteoutKind is what a layer entry's name says about lower layers.
type whiteoutKind int

const (
	notWhiteout whiteoutKind = iota
	deletes                  // .wh.NAME: delete target
	opaque                   // .wh..wh..opq: clear the directory target
	hidden                   // other .wh. names: neither shown nor applied
)

// parseWhiteout classifies the cleaned entry name. For deletes it returns
// the path deleted, for opaque the directory cleared.
func parseWhiteout(name string) (whiteoutKind, string) {
	dir, base := path.Split(name)
	dir = strings.TrimSuffix(dir, "/")
	switch {
	case !strings.HasPrefix(base, whiteoutPrefix):
		return notWhiteout, ""
	case base == whiteoutOpaque:
		return opaque, dir
	case strings.HasPrefix(base, whiteoutMeta):
		return hidden, ""
	}
	target := base[len(whiteoutPrefix):]
	if target == "" || target == "." || target == ".." {
		return hidden, ""
	}
	return deletes, path.Join(dir, target)
}

// node is an entry of the merged tree of all layers.
type node struct {
	e        *entry // nil for a directory no layer describes
	layer    int    // the layer e (or the implicit directory) comes from
	children map[string]*node
	ino      uint64
	nlink    uint32
	whiteout bool // a deleted name shown as overlayfs's whiteout
	opaque   bool // a directory that hides lower layers' entries from overlayfs
}

func newDir(e *entry, layer int) *node {
	return &node{e: e, layer: layer, children: map[string]*node{}}
}

func (n *node) isDir() bool { return n.children != nil }

// fileType returns the entry's type: one of the estargz TOC types, never
// "hardlink" or "chunk".
func (n *node) fileType() string {
	if n.isDir() {
		return "dir"
	}
	return n.e.Type
}

// lookup returns the node at the cleaned path p, or nil.
func (n *node) lookup(p string) *node {
	if p == "" {
		return n
	}
	for _, name := range strings.Split(p, "/") {
		if !n.isDir() {
			return nil
		}
		if n = n.children[name]; n == nil {
			return nil
		}
	}
	return n
}

// isLandmark reports whether name is one of the marker files eStargz
// writers put at the root; they are no part of the image's content.
func isLandmark(name string) bool {
	return name == estargz.PrefetchLandmark || name == estargz.NoPrefetchLandmark
}

// merge stacks the layers, lowest first, into one tree the way a container
// runtime unpacks them: each layer first applies its whiteouts to the layers
// below (a whiteout never hides an entry of its own layer), then adds its
// entries in TOC order; an upper entry replaces a lower one of the same name
// except that a directory over a directory merges the two. Hardlinks share
// the node of their target. Inode numbers (from 1, the root) and link counts
// are assigned at the end.
func merge(layers []*Index) (*node, error) { return mergeTree(layers, false) }

// mergeTree is merge. With overlayWhiteouts the whiteouts also stay in the
// tree as overlayfs shows them (Options.OverlayWhiteouts), so that the tree
// can be a lowerdir above others: a deleted name becomes a whiteout node,
// and an opaque directory is marked opaque after it is cleared. An entry of
// the same layer still replaces its whiteout, as unpacking would leave it;
// a directory that replaces one, or any other non-directory, is opaque,
// since what that hid must stay hidden.
func mergeTree(layers []*Index, overlayWhiteouts bool) (*node, error) {
	root := newDir(nil, 0)
	for li, ix := range layers {
		for _, e := range ix.entries {
			switch kind, target := parseWhiteout(e.Name); {
			case kind == deletes && overlayWhiteouts:
				if d := dirFor(root, path.Dir("/" + target)[1:], li); d != nil {
					d.children[path.Base(target)] = whiteoutNode(e, target, li)
				}
			case kind == deletes:
				if d := root.lookup(path.Dir("/" + target)[1:]); d != nil && d.isDir() {
					delete(d.children, path.Base(target))
				}
			case kind == opaque:
				d := root.lookup(target)
				if overlayWhiteouts {
					d = dirFor(root, target, li)
				}
				if d != nil && d.isDir() {
					clear(d.children)
					d.opaque = overlayWhiteouts
				}
			}
		}
		added := map[string]*node{}
		for _, e := range ix.entries {
			if kind, _ := parseWhiteout(e.Name); kind != notWhiteout || isLandmark(e.Name) {
				continue
			}
			if err := add(root, e, li, added, overlayWhiteouts); err != nil {
				return nil, fmt.Errorf("layer %d: %q: %w", li, e.Name, err)
			}
		}
	}
	number(root)
	return root, nil
}

// whiteoutNode is what overlayfs takes for a deleted name in a lower
// layer: a character device numbered 0/0, here with the owner and time of
// the whiteout entry that made it.
func whiteoutNode(wh *entry, target string, li int) *node {
	e := &entry{TOCEntry: &estargz.TOCEntry{
		Name: target, Type: "char", UID: wh.UID, GID: wh.GID, ModTime3339: wh.ModTime3339,
	}}
	return &node{e: e, layer: li, whiteout: true}
}

// dirFor returns the directory at p, creating missing directories as
// implicit ones of layer li, or nil if something other than a directory is
// in the way: a whiteout below a lower layer's file deletes nothing, and
// one below a name this layer deletes is moot.
func dirFor(root *node, p string, li int) *node {
	d := root
	if p == "" {
		return d
	}
	for _, name := range strings.Split(p, "/") {
		c := d.children[name]
		switch {
		case c == nil:
			c = newDir(nil, li)
			d.children[name] = c
		case !c.isDir():
			return nil
		}
		d = c
	}
	return d
}

// add puts e of layer li into the tree. added holds the nodes this layer
// added so far, by name, for hardlinks. With overlay (overlay whiteouts), a
// directory that replaces a non-directory is opaque.
func add(root *node, e *entry, li int, added map[string]*node, overlay bool) error {
	if e.Name == "" {
		if e.Type == "dir" {
			root.e, root.layer = e, li
		}
		return nil
	}
	parent := mkdirAll(root, path.Dir("/" + e.Name)[1:], li, overlay)
	base := path.Base(e.Name)
	var n *node
	switch e.Type {
	case "dir":
		if old := parent.children[base]; old != nil && old.isDir() {
			old.e, old.layer = e, li
			n = old
		} else {
			n = newDir(e, li)
			n.opaque = overlay && old != nil
		}
	case "hardlink":
		n = added[e.LinkName]
		if n == nil {
			n = root.lookup(e.LinkName) // a file of a lower layer
		}
		if n == nil || n.isDir() || n.whiteout {
			return fmt.Errorf("hardlink to %q, which is not a file", e.LinkName)
		}
	default:
		n = &node{e: e, layer: li}
	}
	parent.children[base] = n
	added[e.Name] = n
	return nil
}

// mkdirAll returns the directory at p, creating missing directories (and
// replacing non-directories in the way) as implicit ones of layer li.
func mkdirAll(root *node, p string, li int, overlay bool) *node {
	d := root
	if p == "" {
		return d
	}
	for _, name := range strings.Split(p, "/") {
		c := d.children[name]
		if c == nil || !c.isDir() {
			// A directory where a whiteout or a file was hides all that
			// was there in the layers below.
			opaque := overlay && c != nil
			c = newDir(nil, li)
			c.opaque = opaque
			d.children[name] = c
		}
		d = c
	}
	return d
}

// number assigns inode numbers in depth-first order of sorted names, so that
// the same image always gets the same numbers, and counts links: a
// directory's ".", its name and its subdirectories' "..", a file's names.
func number(root *node) {
	next := uint64(1)
	var walk func(n *node)
	walk = func(n *node) {
		if n.ino != 0 { // a hardlink seen before
			n.nlink++
			return
		}
		n.ino, next = next, next+1
		n.nlink = 1
		if !n.isDir() {
			return
		}
		n.nlink = 2
		names := make([]string, 0, len(n.children))
		for name, c := range n.children {
			names = append(names, name)
			if c.isDir() {
				n.nlink++
			}
		}
		slices.Sort(names)
		for _, name := range names {
			walk(n.children[name])
		}
	}
	walk(root)
}
