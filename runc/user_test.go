package runc

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestResolveUserStaysInRootfs plants links in an image's /etc that lead to
// account files outside the rootfs, each naming a user the rootfs does not
// have. The worker runs as root, so following them would read the host's
// files: resolution must fail instead, and never yield the outside ids.
func TestResolveUserStaysInRootfs(t *testing.T) {
	outside := t.TempDir()
	outPasswd := filepath.Join(outside, "passwd")
	outGroup := filepath.Join(outside, "group")
	if err := os.WriteFile(outPasswd, []byte("evil:x:4242:4242::/:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(outGroup, []byte("evilgrp:x:4343:web\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	const passwd = "root:x:0:0::/root:/bin/sh\nweb:x:33:33::/:/bin/sh\n"
	rel := func(from, to string) string {
		r, err := filepath.Rel(from, to)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	for _, tc := range []struct {
		name  string
		user  string
		setup func(rootfs string) error
		ok    bool
	}{
		{"absolute passwd link", "evil", func(r string) error {
			return os.Symlink(outPasswd, filepath.Join(r, "etc/passwd"))
		}, false},
		{"relative passwd link", "evil", func(r string) error {
			return os.Symlink(rel(filepath.Join(r, "etc"), outPasswd), filepath.Join(r, "etc/passwd"))
		}, false},
		{"etc itself a link", "evil", func(r string) error {
			if err := os.Remove(filepath.Join(r, "etc")); err != nil {
				return err
			}
			return os.Symlink(outside, filepath.Join(r, "etc"))
		}, false},
		{"absolute group link", "web:evilgrp", func(r string) error {
			if err := os.WriteFile(filepath.Join(r, "etc/passwd"), []byte(passwd), 0o644); err != nil {
				return err
			}
			return os.Symlink(outGroup, filepath.Join(r, "etc/group"))
		}, false},
		{"passwd a fifo", "web", func(r string) error {
			return syscall.Mkfifo(filepath.Join(r, "etc/passwd"), 0o644)
		}, false},
		// A link that stays inside the rootfs is followed, as in the image.
		{"link inside the rootfs", "web", func(r string) error {
			if err := os.MkdirAll(filepath.Join(r, "usr/share"), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(r, "usr/share/passwd"), []byte(passwd), 0o644); err != nil {
				return err
			}
			return os.Symlink("../usr/share/passwd", filepath.Join(r, "etc/passwd"))
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rootfs := t.TempDir()
			if err := os.Mkdir(filepath.Join(rootfs, "etc"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := tc.setup(rootfs); err != nil {
				t.Fatal(err)
			}
			got, err := resolveUser(rootfs, tc.user)
			if got.UID == 4242 || got.GID == 4242 || got.GID == 4343 {
				t.Fatalf("resolveUser(%q) = %+v: read an account file outside the rootfs", tc.user, got)
			}
			if tc.ok && (err != nil || got.UID != 33) {
				t.Fatalf("resolveUser(%q) = %+v, %v; want uid 33", tc.user, got, err)
			}
			if !tc.ok && err == nil {
				t.Fatalf("resolveUser(%q) = %+v, want an error", tc.user, got)
			}
			t.Logf("resolveUser(%q): %v", tc.user, err)
		})
	}
}
