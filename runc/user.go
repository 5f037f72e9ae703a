package runc

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// maxAccountFile bounds how much of /etc/passwd or /etc/group is read: the
// files come from the image, which is outside input.
const maxAccountFile = 1 << 20

// resolveUser turns an image's User ("", "user", "user:group", where each
// side is a name or a number) into ids, looking names up in the rootfs's
// /etc/passwd and /etc/group as Docker does. An empty user is root. A
// numeric user needs no passwd entry; a name does. The user's primary
// group is the passwd entry's unless a group is given, and the groups that
// list the user by name become its supplementary groups.
func resolveUser(rootfs, user string) (specs.User, error) {
	if user == "" {
		return specs.User{}, nil
	}
	userPart, groupPart, hasGroup := strings.Cut(user, ":")
	if userPart == "" || (hasGroup && groupPart == "") {
		return specs.User{}, fmt.Errorf("user %q: want user[:group]", user)
	}
	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return specs.User{}, fmt.Errorf("user %q: %w", user, err)
	}
	defer root.Close()
	passwd, err := readAccounts(root, "etc/passwd")
	if err != nil {
		return specs.User{}, fmt.Errorf("user %q: %w", user, err)
	}
	groups, err := readAccounts(root, "etc/group")
	if err != nil {
		return specs.User{}, fmt.Errorf("user %q: %w", user, err)
	}
	return lookupUser(userPart, groupPart, hasGroup, passwd, groups)
}

// lookupUser resolves a user and optional group against parsed passwd and
// group entries.
func lookupUser(userPart, groupPart string, hasGroup bool, passwd, groups [][]string) (specs.User, error) {
	var u specs.User
	name := ""
	if uid, ok := parseID(userPart); ok {
		u.UID = uid
		if e := findEntry(passwd, 2, userPart); e != nil {
			name = e[0]
			u.GID, _ = parseID(e[3])
		}
	} else {
		e := findEntry(passwd, 0, userPart)
		if e == nil {
			return specs.User{}, fmt.Errorf("user %q: not in the image's /etc/passwd", userPart)
		}
		name = e[0]
		u.UID, _ = parseID(e[2])
		u.GID, _ = parseID(e[3])
	}
	if hasGroup {
		if gid, ok := parseID(groupPart); ok {
			u.GID = gid
		} else if e := findEntry(groups, 0, groupPart); e != nil {
			u.GID, _ = parseID(e[2])
		} else {
			return specs.User{}, fmt.Errorf("group %q: not in the image's /etc/group", groupPart)
		}
	}
	if name != "" {
		for _, g := range groups {
			gid, ok := parseID(g[2])
			if !ok || gid == u.GID {
				continue
			}
			for m := range strings.SplitSeq(g[3], ",") {
				if m == name {
					u.AdditionalGids = append(u.AdditionalGids, gid)
					break
				}
			}
		}
	}
	return u, nil
}

// parseID parses a numeric user or group id.
func parseID(s string) (uint32, bool) {
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err == nil
}

// findEntry returns the first entry whose field i equals v, or nil.
func findEntry(entries [][]string, i int, v string) []string {
	for _, e := range entries {
		if e[i] == v {
			return e
		}
	}
	return nil
}

// readAccounts reads a passwd or group file of the image; a missing file has
// no entries. The worker runs as root and the image is outside input, so
// the file is opened through root: a symbolic link (in the name or any
// directory above it) that leads out of the rootfs is an error, never a
// read of the host's file. Absolute links are refused too, although a
// chroot would resolve them inside: os.Root cannot tell the two apart, and
// images rarely link these files. O_NONBLOCK keeps a FIFO planted there
// from blocking the open; anything but a regular file is refused.
func readAccounts(root *os.Root, name string) ([][]string, error) {
	f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("the image's /%s: %w", name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("the image's /%s: %w", name, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("the image's /%s is not a regular file (%v)", name, fi.Mode().Type())
	}
	return parseAccounts(io.LimitReader(f, maxAccountFile)), nil
}

// parseAccounts splits passwd or group lines into colon-separated fields.
// It keeps the lines with at least 4 fields whose first field is not
// empty, padding them to 7, and skips comments and malformed lines, as libc
// does; field 2 (and 3 in passwd) must be numeric to be of use, which the
// callers check.
func parseAccounts(r io.Reader) [][]string {
	var out [][]string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxAccountFile)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Split(line, ":")
		if len(f) < 4 || f[0] == "" {
			continue
		}
		for len(f) < 7 {
			f = append(f, "")
		}
		out = append(out, f)
	}
	return out
}
