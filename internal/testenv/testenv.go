// Package testenv starts the real third-party components that end-to-end
// tests run against: the Debian docker-registry (distribution 2.8), skopeo
// and containerd (1.6, driven with ctr), each with its own configuration,
// state and logs under the test's temporary directories.
//
// A helper that needs a missing tool or privilege skips the test with a
// message naming what is missing and the Debian package that provides it. When
// the environment variable CI is "true" it fails the test instead: CI installs
// everything, so a skip there would hide a broken setup.
//
// Processes are started by the helpers and stopped by PID in t.Cleanup:
// SIGTERM, then SIGKILL if they do not exit within StopTimeout. On Linux they
// also get SIGKILL if the test binary dies first.
package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// debianPackage names the package that provides each tool we look for, for
// the skip message.
var debianPackage = map[string]string{
	"docker-registry": "docker-registry",
	"skopeo":          "skopeo",
	"containerd":      "containerd",
	"ctr":             "containerd",
	"runc":            "runc",
	"fusermount3":     "fuse3",
	"ip":              "iproute2",
	"tc":              "iproute2",
	"debootstrap":     "debootstrap",
	"etcd":            "etcd-server",
	"nft":             "nftables",
}

// sbinDirs are searched after PATH: runc and ip live there, and a non-root
// user's PATH often lacks them.
var sbinDirs = []string{"/usr/local/sbin", "/usr/sbin", "/sbin"}

// InCI reports whether the environment variable CI is "true", in which case
// missing tools and privileges fail tests instead of skipping them.
func InCI() bool { return os.Getenv("CI") == "true" }

// unavailable skips t, or fails it in CI, because of what msg names.
func unavailable(t testing.TB, msg string) {
	t.Helper()
	if InCI() {
		t.Fatalf("%s; CI=true provides every tool and privilege, so this fails instead of skipping", msg)
	}
	t.Skipf("%s; skipping", msg)
}

// NeedTool returns the path of the executable name, looked up in PATH and then
// in the sbin directories, or skips t (fails it in CI) if there is none.
func NeedTool(t testing.TB, name string) string {
	t.Helper()
	if path, err := exec.LookPath(name); err == nil {
		return path
	}
	for _, dir := range sbinDirs {
		path := filepath.Join(dir, name)
		if fi, err := os.Stat(path); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return path
		}
	}
	pkg := debianPackage[name]
	if pkg == "" {
		pkg = name
	}
	unavailable(t, name+" not installed (apt-get install "+pkg+")")
	return ""
}

// NeedRoot skips t (fails it in CI) unless the test runs as root.
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		unavailable(t, "test needs root (euid is "+strconv.Itoa(os.Geteuid())+"; run go test as root)")
	}
}

// NeedFUSE skips t (fails it in CI) unless real FUSE mounts work here: root,
// fusermount3 and /dev/fuse.
func NeedFUSE(t testing.TB) {
	t.Helper()
	NeedRoot(t)
	NeedTool(t, "fusermount3")
	if _, err := os.Stat("/dev/fuse"); err != nil {
		unavailable(t, "no /dev/fuse ("+err.Error()+"; modprobe fuse)")
	}
}

// NeedContainers skips t (fails it in CI) unless this process can run a
// function's container as a worker does: runc over a FUSE mount, as root.
func NeedContainers(t testing.TB) {
	t.Helper()
	NeedFUSE(t)
	NeedTool(t, "runc")
}

// RunDir returns a temporary directory for a worker's containers that the
// containers' users may reach: a user-namespaced container's root is an
// unprivileged host uid, and runc mounts its root filesystem from inside
// the namespace. t.TempDir and its parent are 0700; they become 0711
// (searchable, not listable).
func RunDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
