package privfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secret")
	if err := WritePrivate(path, []byte("s3cret\n")); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %#o, want 0600", st.Mode().Perm())
	}
	b, err := Read(path)
	if err != nil || string(b) != "s3cret\n" {
		t.Fatalf("Read = %q, %v", b, err)
	}
	// Overwriting replaces the whole file and leaves no temporary behind.
	if err := WritePrivate(path, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if b, _ := Read(path); string(b) != "x" {
		t.Fatalf("after overwrite: %q", b)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("directory holds %d entries, want 1", len(entries))
	}
}

func TestReadRefuses(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name  string
		setup func(path string)
		want  string
	}{
		{"group readable", func(p string) { os.WriteFile(p, []byte("x"), 0o600); os.Chmod(p, 0o640) }, "mode 0640"},
		{"other writable", func(p string) { os.WriteFile(p, []byte("x"), 0o600); os.Chmod(p, 0o602) }, "mode 0602"},
		{"directory", func(p string) { os.Mkdir(p, 0o700) }, "not a regular file"},
		{"too large", func(p string) { os.WriteFile(p, make([]byte, MaxSize+1), 0o600) }, "more than"},
		{"missing", func(string) {}, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "-"))
			tt.setup(path)
			if _, err := Read(path); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Read = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
