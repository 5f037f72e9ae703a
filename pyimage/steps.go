package pyimage

import (
	"archive/tar"
	"context"
	_ "embed"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// handlerPy is the function's code, /app/handler.py in the image.
//
//go:embed handler.py
var handlerPy []byte

// handlerTime is the modification time of the handler layer's entries, so
// that the layer is the same bytes on every build.
var handlerTime = time.Date(2021, 7, 14, 0, 0, 0, 0, time.UTC)

// stepEnv is the whole environment of the build's commands: the caller's
// would leak into the image (proxies, locales, a Python path).
var stepEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"HOME=/root",
	"LANG=C.UTF-8",
	"DEBIAN_FRONTEND=noninteractive",
}

// isolated runs the shell script with args ($1...) in new mount and pid
// namespaces: whatever it mounts and whatever it starts is gone when it
// returns, even if it fails or the builder dies. Its output goes to out;
// the error quotes its tail.
func isolated(ctx context.Context, out io.Writer, script string, args ...string) error {
	tail := &tailWriter{max: 4 << 10}
	cmd := exec.CommandContext(ctx, "/bin/sh", append([]string{"-euc", script, "sh"}, args...)...)
	cmd.Env = stepEnv
	cmd.Stdout = io.MultiWriter(out, tail)
	cmd.Stderr = cmd.Stdout
	cmd.WaitDelay = 10 * time.Second
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags:   syscall.CLONE_NEWPID, // the shell is pid 1: when it exits, all it started dies
		Unshareflags: syscall.CLONE_NEWNS,  // Go also makes / private, so mounts do not leak out
		Pdeathsig:    syscall.SIGKILL,
	}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%w; output ends with:\n%s", err, tail.String())
	}
	return nil
}

// debootstrapScript installs a minimal Debian: $1 suite, $2 target, $3 mirror.
const debootstrapScript = `debootstrap --variant=minbase "$1" "$2" "$3"`

// debootstrap installs Debian's minbase variant of suite into dir and
// removes what an image must not carry: downloaded packages and lists, the
// build machine's device nodes, host name and resolver configuration.
func debootstrap(ctx context.Context, out io.Writer, dir, suite, mirror string) error {
	if err := isolated(ctx, out, debootstrapScript, suite, dir, mirror); err != nil {
		return fmt.Errorf("debootstrap %s from %s: %w", suite, mirror, err)
	}
	for _, pattern := range []string{"dev/*", "var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*", "var/log/bootstrap.log", "etc/hostname"} {
		matches, err := filepath.Glob(filepath.Join(dir, pattern))
		if err != nil {
			return err
		}
		for _, m := range matches {
			if err := os.RemoveAll(m); err != nil {
				return fmt.Errorf("cleaning the base system: %w", err)
			}
		}
	}
	// Empty files: mount points where a runtime binds the host's.
	for _, f := range []string{"etc/resolv.conf", "etc/hosts"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
			return fmt.Errorf("cleaning the base system: %w", err)
		}
	}
	return nil
}

// aptScript mounts an overlay of $2 (lower directories, top first, colon
// separated) and $3 (upper) at $1 with $4 as overlayfs's work directory,
// gives it /proc, a /dev with the usual nodes and the host's resolver, and
// installs the packages $5... in it with apt. Redirects and metacopy are
// off so that the upper directory is a plain diff: whole files, whiteouts
// and opaque directories only.
const aptScript = `root=$1 lower=$2 upper=$3 work=$4
shift 4
mount -t overlay overlay -o "lowerdir=$lower,upperdir=$upper,workdir=$work,redirect_dir=off,metacopy=off" "$root"
mount -t proc proc "$root/proc"
mount -t tmpfs -o mode=755,size=16m tmpfs "$root/dev"
mknod -m 666 "$root/dev/null" c 1 3
mknod -m 666 "$root/dev/zero" c 1 5
mknod -m 666 "$root/dev/full" c 1 7
mknod -m 666 "$root/dev/random" c 1 8
mknod -m 666 "$root/dev/urandom" c 1 9
mknod -m 666 "$root/dev/tty" c 5 0
mount --bind /etc/resolv.conf "$root/etc/resolv.conf"
chroot "$root" /bin/sh -euc '
apt-get update -q
apt-get install -y -q --no-install-recommends "$@"
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
' sh "$@"
umount "$root/etc/resolv.conf" "$root/dev" "$root/proc" "$root"
`

// aptInstall installs packages on top of the lower directories (top first)
// into the empty directory upper, using work as scratch space.
func aptInstall(ctx context.Context, out io.Writer, lower []string, upper, work string, packages []string) error {
	mnt, ovl := filepath.Join(work, "root"), filepath.Join(work, "overlay")
	for _, d := range []string{upper, mnt, ovl} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	args := append([]string{mnt, strings.Join(lower, ":"), upper, ovl}, packages...)
	if err := isolated(ctx, out, aptScript, args...); err != nil {
		return fmt.Errorf("apt-get install %s: %w", strings.Join(packages, " "), err)
	}
	return os.RemoveAll(work)
}

// writeHandler fills the last layer: /app/handler.py.
func writeHandler(tw *tar.Writer) error {
	for _, h := range []*tar.Header{
		{Typeflag: tar.TypeDir, Name: "app/", Mode: 0o755, ModTime: handlerTime},
		{Typeflag: tar.TypeReg, Name: "app/handler.py", Mode: 0o644, Size: int64(len(handlerPy)), ModTime: handlerTime},
	} {
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
	}
	_, err := tw.Write(handlerPy)
	return err
}

// tailWriter keeps the last max bytes written to it.
type tailWriter struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailWriter) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.buf))
}
