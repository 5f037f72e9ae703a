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

// Image writes the flattened filesystem of img under dir, which is created
// if needed and should be empty. Whiteouts are applied (mutate.Extract gives each path's
// topmost version only). Ownership is kept when running as root.
func Image(img v1.Image, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("unpack: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("unpack: %w", err)
	}
	defer root.Close()
	rc := mutate.Extract(img)
	defer rc.Close()
	if err := Tar(root, rc); err != nil {
		return fmt.Errorf("unpack into %s: %w", dir, err)
	}
	return nil
}

// Tar writes the entries of a flattened tar stream under root. Entries may
// come in any order (mutate.Extract gives upper layers first, so a file may
// precede its directory's own entry).
func Tar(root *os.Root, r io.Reader) error {
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
			return err
		}
		name, err := clean(h.Name)
		if err != nil {
			return err
		}
		if name == "." {
			continue
		}
		if err := entry(root, name, h, tr); err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
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
	return nil
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
