// Package netns gives each function container its own network namespace: a
// veth pair to the host, an address from the worker's range, and the
// nftables rules that fence the function in.
//
// A container reaches nothing on the host itself (the worker's listeners, a
// manager on the same machine), no other container, no link-local or
// metadata address and none of Config.Deny. The host reaches the container at
// its address, which is how the worker probes and calls the function. Other
// destinations follow the VM's routing, masqueraded behind the VM's address,
// or nothing at all when Config.Egress is false.
//
// The rules live in one nftables table of family inet per worker,
// "faasnet-" + Config.Tag, whose chains have policy accept and match only
// the worker's veths, so nothing else on the machine changes. Its sets hold
// the host-end veth names and each veth's container address; attaching and
// detaching a container adds and deletes set elements.
//
// Host state changed: New with Config.Egress sets net.ipv4.ip_forward to 1
// (forwarding is what lets a container's packets leave the VM), and leaves it
// so on Close, since other software may depend on it by then. IPv6 is
// disabled on the host end of each veth (net.ipv6.conf.VETH.disable_ipv6),
// which goes with the veth. Nothing else outside the table and the veths is
// touched.
//
// It runs ip (Debian iproute2) and nft (Debian nftables) and needs root.
package netns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
)

// Config says which addresses a worker's containers get and what they may
// reach.
type Config struct {
	// CIDR holds the container addresses, IPv4, at most a /30. Each container
	// takes a /30 of it: the host end is its .1, the container its .2.
	CIDR netip.Prefix
	// Egress lets containers reach destinations other than the forbidden
	// ones, through the VM's routing and masqueraded behind the VM's
	// address; New then enables net.ipv4.ip_forward. False (--container-egress
	// deny) drops everything a container sends, except replies to the host.
	Egress bool
	// Deny lists more destinations containers may never reach, such as the
	// managers' addresses. IPv6 ones are accepted but moot: containers have
	// no IPv6.
	Deny []netip.Prefix
	// Tag names this worker's table and veths, so several workers can share
	// a machine: 1 to 8 lower-case letters and digits, e.g. the first 6 hex
	// digits of the sha256 of the VM id.
	Tag string
	// Logger gets a line per container attached and detached; nil discards.
	Logger *slog.Logger
}

// Blocked are the IPv4 destinations no container reaches besides the
// container range and Config.Deny: loopback, link-local (where cloud
// metadata services live) and Alibaba Cloud's metadata address.
var Blocked = []netip.Prefix{
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("100.100.100.200/32"),
}

// defaultCandidates are the ranges DefaultCIDR tries, in order: private and
// carrier-grade NAT /16s that VMs rarely route.
var defaultCandidates = []netip.Prefix{
	netip.MustParsePrefix("10.89.0.0/16"),
	netip.MustParsePrefix("10.201.0.0/16"),
	netip.MustParsePrefix("100.64.0.0/16"),
	netip.MustParsePrefix("100.87.0.0/16"),
	netip.MustParsePrefix("172.29.0.0/16"),
}

// Network is one worker's container networking: its nftables table and the
// /30s handed out to containers. Its methods are safe for concurrent use.
type Network struct {
	cfg   Config
	log   *slog.Logger
	table string // nftables table name, in family inet
	ip    string // path of ip
	nft   string // path of nft

	mu     sync.Mutex
	used   map[int]bool // /30 slots in use
	closed bool
}

// ErrOverlap marks a container range that overlaps a route of the host's
// or another worker's range.
var ErrOverlap = errors.New("range in use")

var tagRE = regexp.MustCompile(`^[a-z0-9]{1,8}$`)

// DefaultCIDR returns the first of a few candidate /16s that overlaps none
// of the host's IPv4 routes and none of the ranges of the other workers'
// tables on this machine.
func DefaultCIDR() (netip.Prefix, error) {
	return DefaultCIDRFor("")
}

// DefaultCIDRFor is DefaultCIDR for the worker with tag, whose own table, left
// by an earlier run, does not count: a restarted worker gets its range back.
func DefaultCIDRFor(tag string) (netip.Prefix, error) {
	ctx := context.Background()
	ip, err := lookTool("ip")
	if err != nil {
		return netip.Prefix{}, err
	}
	nft, err := lookTool("nft")
	if err != nil {
		return netip.Prefix{}, err
	}
	routes, err := hostRoutes(ctx, ip)
	if err != nil {
		return netip.Prefix{}, err
	}
	others, err := otherRanges(ctx, nft, tableName(tag))
	if err != nil {
		return netip.Prefix{}, err
	}
	for t, p := range others {
		routes = append(routes, route{Dst: p.String(), Dev: "(" + t + ")"})
	}
	return pickCIDR(defaultCandidates, routes)
}

// pickCIDR returns the first candidate that overlaps none of routes.
func pickCIDR(candidates []netip.Prefix, routes []route) (netip.Prefix, error) {
	for _, c := range candidates {
		if _, ok := overlapping(c, routes, ""); !ok {
			return c, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("netns: every candidate container range %v overlaps a host route or another worker's range; set the range explicitly", candidates)
}

func tableName(tag string) string { return "faasnet-" + tag }

// New checks the tools and cfg, removes what a crashed worker with the same
// Tag left (its table and veths), checks that cfg.CIDR overlaps none of the
// host's routes, and installs the table.
func New(ctx context.Context, cfg Config) (*Network, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ip, err := lookTool("ip")
	if err != nil {
		return nil, err
	}
	nft, err := lookTool("nft")
	if err != nil {
		return nil, err
	}
	n := &Network{
		cfg:   cfg,
		log:   cfg.Logger,
		table: tableName(cfg.Tag),
		ip:    ip,
		nft:   nft,
		used:  map[int]bool{},
	}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	if err := n.removeAll(ctx); err != nil {
		return nil, fmt.Errorf("netns: removing stale state of tag %q: %w", cfg.Tag, err)
	}
	routes, err := hostRoutes(ctx, ip)
	if err != nil {
		return nil, err
	}
	if r, ok := overlapping(cfg.CIDR, routes, n.vethPrefix()); ok {
		return nil, fmt.Errorf("netns: container range %v overlaps the host route %s dev %s; choose another --container-cidr: %w", cfg.CIDR, r.Dst, r.Dev, ErrOverlap)
	}
	others, err := otherRanges(ctx, nft, n.table)
	if err != nil {
		return nil, err
	}
	for t, p := range others {
		if p.Overlaps(cfg.CIDR) {
			return nil, fmt.Errorf("netns: container range %v overlaps %v, the range of table inet %s (another worker on this machine); choose another --container-cidr: %w", cfg.CIDR, p, t, ErrOverlap)
		}
	}
	if cfg.Egress {
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1\n"), 0o644); err != nil {
			return nil, fmt.Errorf("netns: enabling net.ipv4.ip_forward for container egress: %w", err)
		}
	}
	if err := n.runNft(ctx, n.ruleset()); err != nil {
		return nil, fmt.Errorf("netns: installing table inet %s: %w", n.table, err)
	}
	n.log.Info("container network ready", "table", n.table, "cidr", cfg.CIDR, "egress", cfg.Egress, "deny", cfg.Deny)
	return n, nil
}

func (c *Config) validate() error {
	if !tagRE.MatchString(c.Tag) {
		return fmt.Errorf("netns: tag %q: want 1 to 8 lower-case letters and digits", c.Tag)
	}
	p := c.CIDR
	if !p.IsValid() || !p.Addr().Is4() {
		return fmt.Errorf("netns: container range %v: want an IPv4 prefix", p)
	}
	if p.Bits() > 30 {
		return fmt.Errorf("netns: container range %v: want at most a /30, each container takes one", p)
	}
	if p.Masked() != p {
		return fmt.Errorf("netns: container range %v has host bits set; did you mean %v?", p, p.Masked())
	}
	for _, d := range c.Deny {
		if !d.IsValid() {
			return fmt.Errorf("netns: invalid deny prefix %v", d)
		}
	}
	if n := len(vethName("fn", c.Tag, slots(p)-1)); n > maxIfname {
		return fmt.Errorf("netns: tag %q with range %v makes veth names of %d bytes, Linux allows %d: shorten the tag or the range", c.Tag, p, n, maxIfname)
	}
	return nil
}

// maxIfname is the longest interface name Linux takes (IFNAMSIZ - 1).
const maxIfname = 15

// slots returns how many /30s p holds, capped at a /14's worth so that veth
// names stay short.
func slots(p netip.Prefix) int {
	return 1 << min(30-p.Bits(), 16)
}

// vethName is the host end's name for slot: the tag, then a dash, so no
// tag's names are a prefix of another's.
func vethName(kind, tag string, slot int) string {
	return kind + tag + "-" + strconv.Itoa(slot)
}

func (n *Network) vethPrefix() string { return "fn" + n.cfg.Tag + "-" }

// Close removes the table and every veth of this Tag, whichever Network made
// them: what a stopping worker does, and what New does for a crashed one.
// Endpoints attached before are closed with it; their Close then does
// nothing.
func (n *Network) Close(ctx context.Context) error {
	n.mu.Lock()
	n.closed = true
	clear(n.used)
	n.mu.Unlock()
	if err := n.removeAll(ctx); err != nil {
		return fmt.Errorf("netns: closing tag %q: %w", n.cfg.Tag, err)
	}
	n.log.Info("container network removed", "table", n.table)
	return nil
}

// removeAll deletes the table, if any, and every link named with this tag.
func (n *Network) removeAll(ctx context.Context) error {
	// Declaring the table first makes the delete succeed whether or not it
	// existed, in one atomic batch.
	var errs []error
	if err := n.runNft(ctx, fmt.Sprintf("table inet %s {}\ndelete table inet %s\n", n.table, n.table)); err != nil {
		errs = append(errs, fmt.Errorf("deleting table inet %s: %w", n.table, err))
	}
	links, err := listLinks(ctx, n.ip)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, l := range links {
		if !strings.HasPrefix(l, n.vethPrefix()) {
			continue
		}
		if err := deleteLink(ctx, n.ip, l); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// allocate takes the lowest free slot.
func (n *Network) allocate() (int, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return 0, errors.New("netns: network is closed")
	}
	for s := range slots(n.cfg.CIDR) {
		if !n.used[s] {
			n.used[s] = true
			return s, nil
		}
	}
	return 0, fmt.Errorf("netns: container range %v is full (%d containers)", n.cfg.CIDR, len(n.used))
}

func (n *Network) release(slot int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.used, slot)
}

func (n *Network) isClosed() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.closed
}

// slotAddrs returns the host end's and the container's address in slot.
func slotAddrs(p netip.Prefix, slot int) (host, ctr netip.Addr) {
	b := p.Addr().As4()
	base := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	base += uint32(slot) * 4
	at := func(v uint32) netip.Addr {
		return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	}
	return at(base + 1), at(base + 2)
}
