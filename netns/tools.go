package netns

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// debianPackage names the package providing each tool, for the error.
var debianPackage = map[string]string{"ip": "iproute2", "nft": "nftables"}

// lookTool finds name in PATH, then in the sbin directories a non-login
// root shell's PATH may lack.
func lookTool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/local/sbin", "/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("netns: %s not found: container networking needs the Debian package %s (apt-get install %s)", name, debianPackage[name], debianPackage[name])
}

// run runs bin with args and stdin, returning its stdout; the error carries
// the command and its stderr.
func run(ctx context.Context, stdin string, bin string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s", filepath.Base(bin), strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

func (n *Network) runNft(ctx context.Context, script string) error {
	_, err := run(ctx, script, n.nft, "-f", "-")
	return err
}

// link is the part of `ip -j link show` we read.
type link struct {
	Name string `json:"ifname"`
}

// parseLinks reads the output of `ip -j link show`.
func parseLinks(b []byte) ([]string, error) {
	var ls []link
	if err := json.Unmarshal(b, &ls); err != nil {
		return nil, fmt.Errorf("parsing ip -j link show: %w", err)
	}
	names := make([]string, 0, len(ls))
	for _, l := range ls {
		if l.Name != "" {
			names = append(names, l.Name)
		}
	}
	return names, nil
}

func listLinks(ctx context.Context, ip string) ([]string, error) {
	out, err := run(ctx, "", ip, "-j", "link", "show")
	if err != nil {
		return nil, err
	}
	return parseLinks(out)
}

// deleteLink deletes the link name; one already gone is no error, since a
// veth goes with its peer's namespace when the container exits.
func deleteLink(ctx context.Context, ip, name string) error {
	_, err := run(ctx, "", ip, "link", "del", "dev", name)
	if err != nil && linkExists(name) {
		return err
	}
	return nil
}

func linkExists(name string) bool {
	_, err := os.Stat(filepath.Join("/sys/class/net", name))
	return err == nil
}

// route is the part of `ip -j route show table all` we read.
type route struct {
	Dst string `json:"dst"` // "default", an address, or a prefix
	Dev string `json:"dev"`
}

// prefix returns the route's destination, or false for the default route
// and destinations that are not IPv4.
func (r route) prefix() (netip.Prefix, bool) {
	if r.Dst == "default" || r.Dst == "" {
		return netip.Prefix{}, false
	}
	p, err := netip.ParsePrefix(r.Dst)
	if err != nil {
		a, err := netip.ParseAddr(r.Dst)
		if err != nil {
			return netip.Prefix{}, false
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if !p.Addr().Is4() || p.Bits() == 0 {
		return netip.Prefix{}, false
	}
	return p, true
}

// parseRoutes reads the output of `ip -j route show table all`.
func parseRoutes(b []byte) ([]route, error) {
	var rs []route
	if err := json.Unmarshal(b, &rs); err != nil {
		return nil, fmt.Errorf("parsing ip -j route show: %w", err)
	}
	return rs, nil
}

// hostRoutes returns the host's IPv4 routes, in every table.
func hostRoutes(ctx context.Context, ip string) ([]route, error) {
	out, err := run(ctx, "", ip, "-j", "-4", "route", "show", "table", "all")
	if err != nil {
		return nil, fmt.Errorf("netns: listing the host's routes: %w", err)
	}
	return parseRoutes(out)
}

// overlapping returns the first route whose destination overlaps p, skipping
// the default route and routes through links named with ownPrefix.
func overlapping(p netip.Prefix, routes []route, ownPrefix string) (route, bool) {
	for _, r := range routes {
		if ownPrefix != "" && strings.HasPrefix(r.Dev, ownPrefix) {
			continue
		}
		if d, ok := r.prefix(); ok && d.Overlaps(p) {
			return r, true
		}
	}
	return route{}, false
}

// inNetns runs fn on an OS thread that has joined the network namespace of
// pid. Sockets fn opens, processes it starts and /proc/sys/net files it
// opens belong to that namespace. The thread goes back to the scheduler only
// once it is back in its own namespace; if that fails it ends with the
// goroutine. (Ending it always would not do: the main thread cannot end, and
// would pin the namespace forever.)
func inNetns(pid int, fn func() error) error {
	target, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		return fmt.Errorf("opening the network namespace of pid %d: %w", pid, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		own, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("opening this thread's network namespace: %w", err)
			return
		}
		defer own.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("joining the network namespace of pid %d: %w", pid, err)
			return
		}
		err = fn()
		if unix.Setns(int(own.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// sameNetns reports whether pid shares this process's network namespace: a
// container that has none of its own must not have its host's addresses
// and routes rewritten.
func sameNetns(pid int) (bool, error) {
	var self, other unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &self); err != nil {
		return false, err
	}
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/net", pid), &other); err != nil {
		return false, fmt.Errorf("pid %d: %w", pid, err)
	}
	return self.Dev == other.Dev && self.Ino == other.Ino, nil
}

// writeSysctl writes v to the file under /proc/sys; a missing one (a kernel
// without IPv6) is no error when optional.
func writeSysctl(path, v string, optional bool) error {
	err := os.WriteFile(filepath.Join("/proc/sys", path), []byte(v+"\n"), 0o644)
	if optional && errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// nftJSON is the part of nft's JSON output we read: tables, and sets with
// their elements.
type nftJSON struct {
	Nftables []struct {
		Table *struct {
			Family string `json:"family"`
			Name   string `json:"name"`
		} `json:"table"`
		Set *struct {
			Elem []struct {
				Prefix *struct {
					Addr string `json:"addr"`
					Len  int    `json:"len"`
				} `json:"prefix"`
			} `json:"elem"`
		} `json:"set"`
	} `json:"nftables"`
}

// parseTables reads the names of the inet tables named faasnet-* from the
// output of `nft -j list tables`.
func parseTables(b []byte) ([]string, error) {
	var j nftJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("parsing nft -j list tables: %w", err)
	}
	var names []string
	for _, o := range j.Nftables {
		if t := o.Table; t != nil && t.Family == "inet" && strings.HasPrefix(t.Name, tableName("")) {
			names = append(names, t.Name)
		}
	}
	return names, nil
}

// parseRangeSet reads the prefixes of a set from the output of
// `nft -j list set`.
func parseRangeSet(b []byte) ([]netip.Prefix, error) {
	var j nftJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return nil, fmt.Errorf("parsing nft -j list set: %w", err)
	}
	var ps []netip.Prefix
	for _, o := range j.Nftables {
		if o.Set == nil {
			continue
		}
		for _, e := range o.Set.Elem {
			if e.Prefix == nil {
				continue
			}
			a, err := netip.ParseAddr(e.Prefix.Addr)
			if err != nil || !a.Is4() || e.Prefix.Len < 0 || e.Prefix.Len > 32 {
				return nil, fmt.Errorf("parsing nft -j list set: bad prefix %q/%d", e.Prefix.Addr, e.Prefix.Len)
			}
			ps = append(ps, netip.PrefixFrom(a, e.Prefix.Len).Masked())
		}
	}
	return ps, nil
}

// otherRanges returns the container range of each faasnet table on the
// machine but own, by table name. A table that vanishes meanwhile, or has no
// range set, is left out.
func otherRanges(ctx context.Context, nft, own string) (map[string]netip.Prefix, error) {
	out, err := run(ctx, "", nft, "-j", "list", "tables", "inet")
	if err != nil {
		return nil, fmt.Errorf("netns: listing nftables tables: %w", err)
	}
	tables, err := parseTables(out)
	if err != nil {
		return nil, fmt.Errorf("netns: %w", err)
	}
	ranges := map[string]netip.Prefix{}
	for _, t := range tables {
		if t == own {
			continue
		}
		out, err := run(ctx, "", nft, "-j", "list", "set", "inet", t, "range")
		if err != nil {
			continue
		}
		ps, err := parseRangeSet(out)
		if err != nil {
			return nil, fmt.Errorf("netns: table inet %s: %w", t, err)
		}
		for _, p := range ps {
			ranges[t] = p
		}
	}
	return ranges, nil
}
