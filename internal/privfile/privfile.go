// Package privfile reads and writes files that hold secrets: keys and tokens.
//
// Such a file is written whole or not at all (a temporary file renamed into
// place, so a crash never leaves half a key), with mode 0600, and it is
// refused on reading if its group or others may read or write it: a secret
// other users could read is no longer a secret, and saying so beats using it.
package privfile

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// MaxSize bounds what Read reads: secrets here are a few hundred bytes.
const MaxSize = 64 << 10

// Write writes data to path with the given mode, atomically.
func Write(path string, data []byte, mode os.FileMode) error {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	// CreateTemp makes the file 0600 already; Chmod states the intended mode
	// whatever the umask.
	if err := f.Chmod(mode); err != nil {
		return fail(err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// WritePrivate writes a secret: Write with mode 0600.
func WritePrivate(path string, data []byte) error { return Write(path, data, 0o600) }

// Read reads a secret from path, refusing a file that is not a regular file,
// is larger than MaxSize, or that its group or others may access.
func Read(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%s has mode %#o: it holds a secret, so only its owner may access it (chmod 600 %s)", path, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("%s is more than the %d bytes a secret here takes", path, MaxSize)
	}
	return b, nil
}
