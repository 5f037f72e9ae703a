package manager

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"

	"github.com/faasnet/faasnet/api"
)

// forbiddenNets are where a VM may not live unless Options.AllowVMNets
// says so: the manager POSTs to every VM address, and a VM that registers
// a cloud metadata service as its address would have the manager fetch
// credentials for it (server-side request forgery). Loopback stays allowed:
// tests and the demo run there.
var forbiddenNets = []netip.Prefix{
	netip.MustParsePrefix("169.254.0.0/16"),     // IPv4 link-local; AWS, GCP, Azure, OpenStack metadata at .169.254
	netip.MustParsePrefix("fe80::/10"),          // IPv6 link-local
	netip.MustParsePrefix("fd00:ec2::254/128"),  // AWS metadata over IPv6
	netip.MustParsePrefix("100.100.100.200/32"), // Alibaba Cloud metadata
	netip.MustParsePrefix("0.0.0.0/8"),          // "this network": reaches the manager's own host
	netip.MustParsePrefix("224.0.0.0/4"),        // multicast
	netip.MustParsePrefix("ff00::/8"),           // IPv6 multicast
	netip.MustParsePrefix("255.255.255.255/32"), // broadcast
}

// addrPolicy decides which IP addresses a VM may register and the manager
// may dial.
type addrPolicy struct{ allow []netip.Prefix }

// checkIP refuses an address in a forbidden range that no allowed prefix
// covers.
func (p addrPolicy) checkIP(ip netip.Addr) error {
	ip = ip.Unmap()
	if ip.IsUnspecified() {
		return fmt.Errorf("%s is not an address a VM can be reached at", ip)
	}
	for _, a := range p.allow {
		if a.Contains(ip) {
			return nil
		}
	}
	for _, f := range forbiddenNets {
		if f.Contains(ip) {
			return fmt.Errorf("%s is in %s, which VMs may not use (see --allow-vm-cidr)", ip, f)
		}
	}
	return nil
}

// checkVMAddr checks a VM's registered address: a host (an IP address or
// a DNS name) and a port, the IP not forbidden. Names are checked again
// when they are dialed (dialControl), as only then are they resolved.
func (p addrPolicy) checkVMAddr(addr string) error {
	if err := api.ValidAddr(addr); err != nil {
		return err
	}
	host, _, _ := net.SplitHostPort(addr)
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Zone() != "" {
			return fmt.Errorf("address %q: zoned addresses are link-local", addr)
		}
		if err := p.checkIP(ip); err != nil {
			return fmt.Errorf("address %q: %w", addr, err)
		}
		return nil
	}
	if !validHostname(host) {
		return fmt.Errorf("address %q: host is neither an IP address nor a DNS name", addr)
	}
	return nil
}

// validHostname reports whether s is a DNS name of letters, digits,
// hyphens and dots (RFC 1123), which rules out URL syntax smuggled in the
// host.
func validHostname(s string) bool {
	if len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(s, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// dialControl refuses, at connect time, an address a registered name
// resolved to that a VM could not have registered as an IP.
func (p addrPolicy) dialControl(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("dialing %q: %w", address, err)
	}
	if err := p.checkIP(ap.Addr()); err != nil {
		return fmt.Errorf("dialing %s: %w", address, err)
	}
	return nil
}
