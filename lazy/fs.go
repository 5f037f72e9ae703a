package lazy

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// cacheTimeout is how long the kernel may trust names and attributes: the
// image never changes while mounted, so as long as it likes.
const cacheTimeout = time.Hour

// FS is an image mounted read-only through FUSE.
type FS struct {
	mountpoint string
	server     *fuse.Server
	r          *reader
	closeOnce  sync.Once
	closeErr   error

	idShift uint32 // added to every owner and group (Options.IDShift)

	mu     sync.Mutex
	inodes map[*node]*fs.Inode // hardlinked files, so that all names share one inode
}

// Mount reads the footer and TOC of every layer (lowest first), merges them
// into one tree and mounts it read-only at mountpoint (created if missing),
// with allow_other so that containers in other mount namespaces and users
// can read it, and default_permissions so that the kernel enforces the
// images' modes. ctx bounds the reading of the TOCs only; the mount lives
// until Close. Mounting needs root (mount(2) directly) or else fusermount3
// with user_allow_other in /etc/fuse.conf.
//
// Reading a file then fetches just the chunks that cover the read, each
// verified against its digest in the TOC before any of its bytes is
// returned; a chunk that fails is fetched once more, then the read fails
// with EIO. A read not served within Options.ReadTimeout fails with EIO.
func Mount(ctx context.Context, mountpoint string, layers []Layer, opts Options) (*FS, error) {
	opts = opts.withDefaults()
	r := newReader(opts)
	indexes, err := openLayers(ctx, r, layers, opts.Limits)
	if err != nil {
		r.close()
		return nil, err
	}
	root, err := mergeTree(indexes, opts.OverlayWhiteouts)
	if err != nil {
		r.close()
		return nil, fmt.Errorf("lazy: merging layers: %w", err)
	}
	if err := os.MkdirAll(mountpoint, 0o755); err != nil {
		r.close()
		return nil, fmt.Errorf("lazy: creating mountpoint: %w", err)
	}
	timeout := cacheTimeout
	fsys := &FS{mountpoint: mountpoint, r: r, idShift: opts.IDShift, inodes: map[*node]*fs.Inode{}}
	server, err := fs.Mount(mountpoint, fsys.newNode(root), &fs.Options{
		MountOptions: fuse.MountOptions{
			AllowOther:  true,
			FsName:      "faasnet-lazy",
			Name:        "faasnet",
			Options:     []string{"ro", "default_permissions"},
			DirectMount: true, // we run as root; fusermount3 is the fallback
			MaxWrite:    1 << 20,
		},
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &timeout,
		RootStableAttr:  &fs.StableAttr{Ino: root.ino, Mode: syscall.S_IFDIR},
	})
	if err != nil {
		r.close()
		return nil, fmt.Errorf("lazy: mounting at %s: %w", mountpoint, err)
	}
	fsys.server = server
	return fsys, nil
}

// openLayers reads the TOCs of all layers at once and fills r's sources.
func openLayers(ctx context.Context, r *reader, layers []Layer, lim Limits) ([]*Index, error) {
	if len(layers) == 0 {
		return nil, errors.New("lazy: no layers to mount")
	}
	for i, l := range layers {
		if l.TOCDigest == "" || l.Blob == nil {
			return nil, fmt.Errorf("lazy: layer %d (%s): no TOC digest or no blob reader", i, l.Digest)
		}
	}
	indexes := make([]*Index, len(layers))
	errs := make([]error, len(layers))
	var wg sync.WaitGroup
	for i, l := range layers {
		blob := r.counted(l.Blob)
		refetch, _ := l.Blob.(Refetcher)
		r.layers = append(r.layers, layerSource{digest: l.Digest, blob: blob, refetch: refetch})
		wg.Go(func() {
			indexes[i], errs[i] = ReadTOC(ctx, blob, l.Size, l.TOCDigest, lim)
			if errs[i] != nil {
				errs[i] = fmt.Errorf("layer %d (%s): %w", i, l.Digest, errs[i])
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for i := range r.layers {
		r.layers[i].ix = indexes[i]
	}
	return indexes, nil
}

// Mountpoint returns where the image is mounted.
func (f *FS) Mountpoint() string { return f.mountpoint }

// Indexes returns the tables of contents of the layers, lowest first, as
// Mount read them: for Index.Ranges and Index.PrefetchRange without reading
// the TOCs again.
func (f *FS) Indexes() []*Index {
	out := make([]*Index, len(f.r.layers))
	for i, l := range f.r.layers {
		out[i] = l.ix
	}
	return out
}

// Stats returns the counters of the mount so far.
func (f *FS) Stats() Stats { return f.r.stats() }

// Close unmounts the image and stops its fetches. If the mount is busy, it is
// detached lazily: it disappears from the namespace now and goes away when
// its last user lets go.
func (f *FS) Close() error {
	f.closeOnce.Do(func() {
		if err := f.server.Unmount(); err != nil {
			if derr := detach(f.mountpoint); derr != nil {
				f.closeErr = fmt.Errorf("lazy: unmounting %s: %w (detaching: %w)", f.mountpoint, err, derr)
			}
		}
		f.r.close()
	})
	return f.closeErr
}

// newNode returns the FUSE node of n and, for a directory, its subtree.
func (f *FS) newNode(n *node) fs.InodeEmbedder {
	switch n.fileType() {
	case "dir":
		return &dirNode{entryNode{fsys: f, n: n}}
	case "reg":
		return &fileNode{entryNode{fsys: f, n: n}}
	case "symlink":
		return &symlinkNode{entryNode{fsys: f, n: n}}
	}
	return &entryNode{fsys: f, n: n} // devices and fifos: attributes only
}

// entryNode serves the attributes and extended attributes of a tree node.
type entryNode struct {
	fs.Inode
	fsys *FS
	n    *node
}

var (
	_ fs.NodeGetattrer   = (*entryNode)(nil)
	_ fs.NodeGetxattrer  = (*entryNode)(nil)
	_ fs.NodeListxattrer = (*entryNode)(nil)
	_ fs.NodeOnAdder     = (*dirNode)(nil)
	_ fs.NodeStatfser    = (*dirNode)(nil)
	_ fs.NodeOpener      = (*fileNode)(nil)
	_ fs.NodeReader      = (*fileNode)(nil)
	_ fs.NodeReadlinker  = (*symlinkNode)(nil)
)

func (en *entryNode) Getattr(_ context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	fillAttr(&out.Attr, en.n, en.fsys.idShift)
	out.SetTimeout(cacheTimeout)
	return 0
}

// opaqueXattrs mark a directory opaque to overlayfs: the trusted one for
// an overlay mounted by root, the user one for a "userxattr" overlay.
var opaqueXattrs = []string{"trusted.overlay.opaque", "user.overlay.opaque"}

// xattr returns the value of n's extended attribute attr.
func xattr(n *node, attr string) ([]byte, bool) {
	if n.opaque && slices.Contains(opaqueXattrs, attr) {
		return []byte("y"), true
	}
	if n.e == nil {
		return nil, false
	}
	v, ok := n.e.Xattrs[attr]
	return v, ok
}

func (en *entryNode) Getxattr(_ context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	v, ok := xattr(en.n, attr)
	if !ok {
		return 0, syscall.ENODATA
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

func (en *entryNode) Listxattr(_ context.Context, dest []byte) (uint32, syscall.Errno) {
	var keys []string
	if en.n.e != nil {
		for k := range en.n.e.Xattrs {
			if !en.n.opaque || !slices.Contains(opaqueXattrs, k) {
				keys = append(keys, k)
			}
		}
	}
	if en.n.opaque {
		keys = append(keys, opaqueXattrs...)
	}
	slices.Sort(keys)
	var names []byte
	for _, k := range keys {
		names = append(append(names, k...), 0)
	}
	if len(dest) < len(names) {
		return uint32(len(names)), syscall.ERANGE
	}
	return uint32(copy(dest, names)), 0
}

// fillAttr sets out to the attributes of n, its owner shifted by idShift.
// A directory no layer lists (the root, say) belongs to the shifted root.
func fillAttr(out *fuse.Attr, n *node, idShift uint32) {
	out.Ino = n.ino
	out.Nlink = n.nlink
	out.Mode = modeOf(n)
	out.Blksize = 4096
	out.Uid, out.Gid = idShift, idShift
	e := n.e
	if e == nil {
		return
	}
	out.Uid, out.Gid = uint32(e.UID)+idShift, uint32(e.GID)+idShift
	switch e.Type {
	case "reg":
		out.Size = uint64(e.Size)
		out.Blocks = (out.Size + 511) / 512
	case "symlink":
		out.Size = uint64(len(e.LinkName))
	case "char", "block":
		out.Rdev = mkdev(uint32(e.DevMajor), uint32(e.DevMinor))
	}
	if t, err := time.Parse(time.RFC3339, e.ModTime3339); err == nil {
		out.SetTimes(&t, &t, &t)
	}
}

// modeOf returns n's file type and permission bits (setuid, setgid and
// sticky included), as stat(2) reports them.
func modeOf(n *node) uint32 {
	perm := uint32(0o755)
	if n.e != nil {
		perm = uint32(n.e.Mode) & 0o7777
	}
	switch n.fileType() {
	case "dir":
		return syscall.S_IFDIR | perm
	case "symlink":
		return syscall.S_IFLNK | perm
	case "char":
		return syscall.S_IFCHR | perm
	case "block":
		return syscall.S_IFBLK | perm
	case "fifo":
		return syscall.S_IFIFO | perm
	}
	return syscall.S_IFREG | perm
}

// mkdev encodes a device number the way the Linux FUSE protocol carries it
// (the kernel's new_encode_dev).
func mkdev(major, minor uint32) uint32 {
	return minor&0xff | (major&0xfff)<<8 | (minor&^0xff)<<12
}

// dirNode is a directory. The image is immutable, so the tree is built up
// front with inodes go-fuse keeps for the mount's lifetime: each directory
// adds its children when it is added itself.
type dirNode struct{ entryNode }

func (d *dirNode) OnAdd(ctx context.Context) {
	f := d.fsys
	for name, c := range d.n.children {
		f.mu.Lock()
		ch := f.inodes[c]
		f.mu.Unlock()
		if ch == nil { // the first name of a hardlinked file creates its inode
			ch = d.NewPersistentInode(ctx, f.newNode(c), fs.StableAttr{Mode: modeOf(c) & syscall.S_IFMT, Ino: c.ino})
			if !c.isDir() && c.nlink > 1 {
				f.mu.Lock()
				f.inodes[c] = ch
				f.mu.Unlock()
			}
		}
		d.AddChild(name, ch, true)
	}
}

func (d *dirNode) Statfs(_ context.Context, out *fuse.StatfsOut) syscall.Errno {
	out.Bsize = 4096
	out.NameLen = 255
	out.Frsize = 4096
	return 0
}

// fileNode is a regular file whose contents come from its chunks.
type fileNode struct{ entryNode }

func (fn *fileNode) Open(_ context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_APPEND) != 0 {
		return nil, 0, syscall.EROFS
	}
	// The contents never change: the kernel may keep its page cache.
	return nil, fuse.FOPEN_KEEP_CACHE, 0
}

func (fn *fileNode) Read(ctx context.Context, _ fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n, err := fn.fsys.r.readFile(ctx, fn.n, dest, off)
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return nil, syscall.EINTR
		}
		return nil, syscall.EIO
	}
	return fuse.ReadResultData(dest[:n]), 0
}

// symlinkNode is a symbolic link.
type symlinkNode struct{ entryNode }

func (sn *symlinkNode) Readlink(context.Context) ([]byte, syscall.Errno) {
	return []byte(sn.n.e.LinkName), 0
}
