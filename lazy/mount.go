package lazy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// Unmount removes whatever is mounted at mountpoint, such as the mount of a
// process that crashed (its FUSE mount answers every access with ENOTCONN).
// A busy mount is detached lazily. Nothing mounted there is not an error.
func Unmount(mountpoint string) error {
	mp, err := canonical(mountpoint)
	if err != nil {
		return err
	}
	// Mounts may be stacked on one mountpoint; each detach removes the top.
	for range 16 {
		mounted, err := Mounted(mp)
		if err != nil || !mounted {
			return err
		}
		if err := detach(mp); err != nil {
			return fmt.Errorf("lazy: unmounting %s: %w", mp, err)
		}
	}
	return fmt.Errorf("lazy: %s is still mounted after 16 unmounts", mp)
}

// detach unmounts mp lazily: with umount2(MNT_DETACH) as root, else with
// fusermount3 -u -z.
func detach(mp string) error {
	err := syscall.Unmount(mp, syscall.MNT_DETACH)
	if err == nil || errors.Is(err, syscall.EINVAL) { // EINVAL: not a mountpoint
		return nil
	}
	if !errors.Is(err, syscall.EPERM) {
		return err
	}
	out, ferr := exec.Command("fusermount3", "-u", "-z", mp).CombinedOutput()
	if ferr != nil {
		return fmt.Errorf("%w; fusermount3: %w: %s", err, ferr, bytes.TrimSpace(out))
	}
	return nil
}

// Mounted reports whether something is mounted at mountpoint, according to
// /proc/self/mountinfo. It does not touch the mountpoint itself, which
// fails with ENOTCONN when its FUSE server is gone.
func Mounted(mountpoint string) (bool, error) {
	mp, err := canonical(mountpoint)
	if err != nil {
		return false, err
	}
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false, fmt.Errorf("lazy: reading mount table: %w", err)
	}
	for _, p := range mountpoints(data) {
		if p == mp {
			return true, nil
		}
	}
	return false, nil
}

// canonical returns the absolute path of mountpoint with the symlinks of its
// parent resolved, as the mount table spells it.
func canonical(mountpoint string) (string, error) {
	abs, err := filepath.Abs(mountpoint)
	if err != nil {
		return "", fmt.Errorf("lazy: mountpoint %q: %w", mountpoint, err)
	}
	if abs == "/" {
		return abs, nil
	}
	dir, err := filepath.EvalSymlinks(filepath.Dir(abs))
	if err != nil {
		return "", fmt.Errorf("lazy: mountpoint %q: %w", mountpoint, err)
	}
	return filepath.Join(dir, filepath.Base(abs)), nil
}

// mountpoints returns the mount points that a mountinfo table (proc(5))
// lists: the fifth field of each line, with octal escapes undone.
func mountpoints(mountinfo []byte) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(mountinfo))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		out = append(out, unescapeOctal(fields[4]))
	}
	return out
}

// unescapeOctal undoes the kernel's \ooo escapes of space, tab, newline and
// backslash in mount table fields.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && s[i+1] <= '3' && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }
