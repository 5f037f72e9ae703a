// Package unpack writes an image's flattened root filesystem to a directory,
// for images that are not lazy (plain tar.gz layers): they are streamed down
// the tree whole, then unpacked once.
//
// Every write goes through an os.Root, so neither ".." nor a symlink planted
// by an earlier entry can make an entry land outside the directory.
package unpack

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
)

// Defaults of Limits: far above what a function's image holds, low enough
// that one image cannot fill a worker's disk or inode table.
const (
	DefaultMaxBytes = 16 << 30
	DefaultMaxFiles = 1 << 20
)

// Limits bound what unpacking one image may read and write. Zero fields
// take the defaults.
type Limits struct {
	// MaxBytes bounds both the bytes of the files written and the
	// uncompressed bytes read from all layers: files that an upper layer
	// hides are decompressed too, so a gzip bomb there would cost time
	// without a byte written. Default DefaultMaxBytes.
	MaxBytes int64
	MaxFiles int64 // entries of any type written; default DefaultMaxFiles
}

func (l Limits) withDefaults() Limits {
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if l.MaxFiles <= 0 {
		l.MaxFiles = DefaultMaxFiles
	}
	return l
}

// Options are how Image unpacks: within Limits, with owners shifted.
type Options struct {
	Limits
	// IDShift is added to every file's owner and group, so that a
	// container whose user namespace maps its root to host uid IDShift
	// sees the image's ownership. Zero keeps the image's ids.
	IDShift int
}

// ErrLimit marks an image refused because unpacking it would go over its
// Limits.
var ErrLimit = errors.New("over the unpack limit")

// Image writes the flattened filesystem of img under dir, which is created
// if needed and should be empty, within lim. Whiteouts are applied
// (mutate.Extract gives each path's topmost version only). Ownership is kept
// when running as root, shifted by opts.IDShift; dir itself is then owned
// by the shifted root. It returns the bytes of the files it wrote. If it
// fails, dir is removed with whatever was written to it.
func Image(img v1.Image, dir string, opts Options) (written int64, err error) {
	defer func() {
		if err != nil {
			if rerr := os.RemoveAll(dir); rerr != nil {
				err = fmt.Errorf("%w (removing the partial tree: %w)", err, rerr)
			}
		}
	}()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, fmt.Errorf("unpack: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return 0, fmt.Errorf("unpack: %w", err)
	}
	defer root.Close()
	lim := opts.Limits.withDefaults()
	rc := mutate.Extract(&cappedImage{Image: img, max: lim.MaxBytes, left: lim.MaxBytes})
	defer rc.Close()
	if written, err = tarFiles(root, rc, lim, opts.IDShift); err != nil {
		return 0, fmt.Errorf("unpack into %s: %w", dir, err)
	}
	// mutate.Extract ends the tar stream before it reports an error in a
	// layer, so the stream's end may come first: what follows tells.
	if _, err := io.Copy(io.Discard, rc); err != nil {
		return 0, fmt.Errorf("unpack into %s: %w", dir, err)
	}
	if opts.IDShift != 0 && os.Geteuid() == 0 {
		if err := os.Lchown(dir, opts.IDShift, opts.IDShift); err != nil {
			return 0, fmt.Errorf("unpack: %w", err)
		}
	}
	return written, nil
}

// cappedImage is an image whose layers can be read, uncompressed, left
// bytes in all; mutate.Extract reads them one at a time.
type cappedImage struct {
	v1.Image
	max, left int64
}

func (c *cappedImage) Layers() ([]v1.Layer, error) {
	ls, err := c.Image.Layers()
	if err != nil {
		return nil, err
	}
	out := make([]v1.Layer, len(ls))
	for i, l := range ls {
		out[i] = cappedLayer{l, c}
	}
	return out, nil
}

type cappedLayer struct {
	v1.Layer
	img *cappedImage
}

func (l cappedLayer) Uncompressed() (io.ReadCloser, error) {
	rc, err := l.Layer.Uncompressed()
	if err != nil {
		return nil, err
	}
	return &cappedReader{rc, l.img}, nil
}

type cappedReader struct {
	io.ReadCloser
	img *cappedImage
}

func (r *cappedReader) Read(p []byte) (int, error) {
	if r.img.left <= 0 {
		// At the limit: only the end of the layer may follow.
		var b [1]byte
		if n, err := r.ReadCloser.Read(b[:]); n == 0 {
			return 0, err
		}
		return 0, fmt.Errorf("%w: the layers hold more than %d bytes uncompressed", ErrLimit, r.img.max)
	}
	if int64(len(p)) > r.img.left {
		p = p[:r.img.left]
	}
	n, err := r.ReadCloser.Read(p)
	r.img.left -= int64(n)
	return n, err
}

// Tar writes the entries of a flattened tar stream under root, within lim.
// Entries may come in any order (mutate.Extract gives upper layers first,
// so a file may precede its directory's own entry). An entry that would go
// over lim is refused before any of it is written.
func Tar(root *os.Root, r io.Reader, lim Limits) error {
	_, err := tarFiles(root, r, lim, 0)
	return err
}

// tarFiles is Tar, returning the bytes of the files it wrote.
func tarFiles(root *os.Root, r io.Reader, lim Limits, idShift int) (int64, error) {
	lim = lim.withDefaults()
	var bytes, files int64
	tr := tar.NewReader(r)
	type dirMeta struct {
		name string
		h    *tar.Header
	}
	var dirs []dirMeta
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return bytes, err
		}
		name, err := clean(h.Name)
		if err != nil {
			return bytes, err
		}
		if name == "." {
			continue
		}
		h.Uid += idShift
		h.Gid += idShift
		if files++; files > lim.MaxFiles {
			return bytes, fmt.Errorf("%w: more than %d files", ErrLimit, lim.MaxFiles)
		}
		if h.Typeflag == tar.TypeReg {
			// archive/tar delivers exactly h.Size bytes of a regular file
			// (a sparse one's holes as zeros), so the header bounds the
			// write.
			if h.Size > lim.MaxBytes-bytes {
				return bytes, fmt.Errorf("%w: %s of %d bytes after %d bytes of files, at most %d in all", ErrLimit, h.Name, h.Size, bytes, lim.MaxBytes)
			}
			bytes += h.Size
		}
		if err := entry(root, name, h, tr); err != nil {
			return bytes, fmt.Errorf("%s: %w", h.Name, err)
		}
		if h.Typeflag == tar.TypeDir {
			dirs = append(dirs, dirMeta{name, h})
		}
	}
	// Directory modes and times last: writing into a directory changes its
	// mtime, and a read-only directory could not be filled.
	for _, d := range dirs {
		meta(root, d.name, d.h)
	}
	return bytes, nil
}

// clean turns an entry name into a local slash path, refusing escapes.
func clean(name string) (string, error) {
	p := path.Clean("/" + name)[1:]
	if p == "" {
		return ".", nil
	}
	if !filepath.IsLocal(p) {
		return "", fmt.Errorf("entry %q leaves the root", name)
	}
	return p, nil
}

func entry(root *os.Root, name string, h *tar.Header, r io.Reader) error {
	if dir := path.Dir(name); dir != "." {
		if err := root.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	switch h.Typeflag {
	case tar.TypeDir:
		if err := root.Mkdir(name, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		return nil
	case tar.TypeReg:
		root.Remove(name)
		f, err := root.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		_, err = io.Copy(f, r)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	case tar.TypeSymlink:
		root.Remove(name)
		if err := root.Symlink(h.Linkname, name); err != nil {
			return err
		}
		if os.Geteuid() == 0 {
			root.Lchown(name, h.Uid, h.Gid)
		}
		return nil
	case tar.TypeLink:
		target, err := clean(h.Linkname)
		if err != nil {
			return err
		}
		root.Remove(name)
		return root.Link(target, name)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return nil // devices come from the runtime's /dev; a lazy rootfs has none either
	default:
		return nil // extended headers are folded in by archive/tar
	}
	meta(root, name, h)
	return root.Chmod(name, mode(h))
}

// meta sets ownership (as root), mode and times, best effort. Ownership
// goes first: chown clears a file's setuid and setgid bits.
func meta(root *os.Root, name string, h *tar.Header) {
	if os.Geteuid() == 0 {
		root.Lchown(name, h.Uid, h.Gid)
	}
	if h.Typeflag == tar.TypeDir {
		root.Chmod(name, mode(h))
	}
	root.Chtimes(name, h.ModTime, h.ModTime)
}

// mode is the entry's permissions with its setuid, setgid and sticky bits.
// The raw tar bits are not an fs.FileMode: tar's 04000 (setuid) is
// fs.ModeSetuid, a high bit, which archive/tar's FileInfo translates.
// Chmod sets them as given, without the umask.
func mode(h *tar.Header) fs.FileMode {
	return h.FileInfo().Mode() & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
}
