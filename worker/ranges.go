package worker

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// rangesDir holds one file per container range a worker on this machine
// uses, named for the range and holding the worker's pid: several workers
// (emulated VMs, or tests running side by side) must never share one.
var rangesDir = "/run/faasnet/container-ranges"

// rangePool is where workers without --container-cidr take their range
// from, a /24 each (64 containers, three times the manager's default
// capacity of a VM): private and carrier-grade NAT space that VMs rarely
// route. A /24 that overlaps a host route is skipped (netns.New says so).
var rangePool = []netip.Prefix{
	netip.MustParsePrefix("10.89.0.0/16"),
	netip.MustParsePrefix("100.64.0.0/16"),
	netip.MustParsePrefix("10.201.0.0/16"),
}

// autoBits is the size of a range taken from rangePool.
const autoBits = 24

// autoRanges lists the ranges of rangePool in order.
func autoRanges() []netip.Prefix {
	var out []netip.Prefix
	for _, p := range rangePool {
		n := 1 << (autoBits - p.Bits())
		a := p.Addr().As4()
		base := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
		for i := range n {
			v := base + uint32(i)<<(32-autoBits)
			out = append(out, netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), autoBits))
		}
	}
	return out
}

// errRangeTaken is returned by claimRange for a range a live worker holds.
var errRangeTaken = errors.New("used by another worker on this machine")

// claimRange records that this process uses p, atomically (the file is
// created exclusively), unless a live process holds it already; a claim
// whose process is gone (a crashed worker) is taken over. The returned
// function gives p back.
func claimRange(p netip.Prefix) (release func(), err error) {
	if err := os.MkdirAll(rangesDir, 0o700); err != nil {
		return nil, fmt.Errorf("container range %v: %w", p, err)
	}
	name := filepath.Join(rangesDir, strings.ReplaceAll(p.String(), "/", "_"))
	for range 2 {
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			_, werr := fmt.Fprintf(f, "%d\n", os.Getpid())
			if cerr := f.Close(); werr == nil {
				werr = cerr
			}
			if werr != nil {
				os.Remove(name)
				return nil, fmt.Errorf("container range %v: %w", p, werr)
			}
			return func() { os.Remove(name) }, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("container range %v: %w", p, err)
		}
		if pid, alive := holder(name); alive {
			return nil, fmt.Errorf("container range %v: %w (pid %d)", p, errRangeTaken, pid)
		}
		os.Remove(name) // its worker is gone; the next round takes it
	}
	return nil, fmt.Errorf("container range %v: %w", p, errRangeTaken)
}

// holder reads the pid in a claim file and reports whether it runs.
func holder(name string) (int, bool) {
	b, err := os.ReadFile(name)
	if err != nil {
		return 0, true // being written, or unreadable: leave it alone
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	err = syscall.Kill(pid, 0)
	return pid, err == nil || errors.Is(err, syscall.EPERM)
}
