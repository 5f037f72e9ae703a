package worker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/faasnet/faasnet/container"
	"github.com/faasnet/faasnet/netns"
	"github.com/faasnet/faasnet/runc"
)

// Sandbox is how the worker fences its functions' containers in, beyond
// what every container gets (read-only root, seccomp, limits; see package
// runc). Its zero value is the full sandbox with the default ranges.
type Sandbox struct {
	// Off runs containers on the host's network and as the host's root: for
	// measuring what the sandbox costs, never for tenants' code.
	Off bool
	// CIDR holds the containers' addresses (--container-cidr); the zero
	// value picks a free range (netns.DefaultCIDR). Workers sharing a
	// machine need ranges of their own.
	CIDR netip.Prefix
	// NoEgress keeps containers from reaching anything beyond the VM
	// (--container-egress deny); by default they follow its routing, minus
	// the worker, the managers, other containers and link-local addresses.
	NoEgress bool
	// Users is the host range the containers' users map to
	// (--container-uids); zero is DefaultUsers.
	Users runc.IDRange
}

// DefaultUsers is the host uid and gid range of containers' users: 65536
// ids, far above those of the VM's accounts.
var DefaultUsers = runc.IDRange{Host: 1 << 20, Size: 1 << 16}

// sandboxNet is the container.Network of a worker: netns, once Serve set
// it up.
type sandboxNet struct{ n *netns.Network }

func (s *sandboxNet) Attach(ctx context.Context, id string, pid int) (container.Endpoint, error) {
	if s.n == nil {
		return nil, errors.New("the worker's container network is not set up")
	}
	ep, err := s.n.Attach(ctx, id, pid)
	if err != nil {
		return nil, err
	}
	return ep, nil
}

// containerSandbox is the container.Sandbox of cfg, with the network to be
// set up by startSandbox.
func (c *Config) containerSandbox() (container.Sandbox, *sandboxNet) {
	if c.Sandbox.Off {
		return container.Sandbox{}, nil
	}
	users := c.Sandbox.Users
	if users.Size == 0 {
		users = DefaultUsers
	}
	net := &sandboxNet{}
	return container.Sandbox{Network: net, Users: &users}, net
}

// checkRunDir fails when the containers' users could not reach their root
// filesystems below dir: runc mounts them from inside the user namespace.
func checkRunDir(dir string) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for d := filepath.Dir(abs); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err == nil && fi.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("run directory %s: %s has mode %v, so the containers' users (a user namespace's root is an unprivileged host uid) cannot reach their root filesystems: give it o+x or choose --run-dir below searchable directories", abs, d, fi.Mode().Perm())
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// startSandbox sets up the containers' network: the worker's nftables
// table and its range. Containers may not reach the managers' addresses.
func (w *Worker) startSandbox(ctx context.Context) (stop func(), err error) {
	if w.sandboxNet == nil {
		return func() {}, nil
	}
	tag, err := sandboxTag(w.cfg.ID, w.cfg.RunDir)
	if err != nil {
		return nil, fmt.Errorf("worker: container network: %w", err)
	}
	cfg := netns.Config{
		Egress: !w.cfg.Sandbox.NoEgress,
		Deny:   managerAddrs(ctx, w.cfg.Manager),
		Tag:    tag,
		Logger: w.log,
	}
	n, cidr, release, err := openNetwork(ctx, cfg, w.cfg.Sandbox.CIDR)
	if err != nil {
		return nil, fmt.Errorf("worker: container network: %w", err)
	}
	w.sandboxNet.n = n
	w.log.Info("container sandbox", "cidr", cidr, "egress", cfg.Egress, "uids", w.cfg.Sandbox.Users)
	return func() {
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := n.Close(cctx); err != nil {
			w.log.Warn("removing the container network", "err", err)
		}
		release()
	}, nil
}

// sandboxTag names the worker's nftables table and veths. It is the same
// for a worker restarted in the same place, which then removes what its
// predecessor left, and differs between workers of one ID in separate
// clusters on one machine (tests, demos), which would otherwise remove each
// other's tables.
func sandboxTag(id, runDir string) (string, error) {
	run, err := filepath.Abs(runDir)
	if err != nil {
		return "", err
	}
	h := sha256.Sum256([]byte(id + "\x00" + run))
	return hex.EncodeToString(h[:3]), nil
}

// openNetwork sets up the containers' network in cidr, or with no cidr in
// the first range of the pool that no other worker on the machine claims
// and no host route overlaps.
func openNetwork(ctx context.Context, cfg netns.Config, cidr netip.Prefix) (*netns.Network, netip.Prefix, func(), error) {
	candidates := []netip.Prefix{cidr}
	if !cidr.IsValid() {
		candidates = autoRanges()
	}
	for _, p := range candidates {
		release, err := claimRange(p)
		if errors.Is(err, errRangeTaken) && !cidr.IsValid() {
			continue
		}
		if err != nil {
			return nil, p, nil, err
		}
		cfg.CIDR = p
		n, err := netns.New(ctx, cfg)
		if err == nil {
			return n, p, release, nil
		}
		release()
		if !errors.Is(err, netns.ErrOverlap) || cidr.IsValid() {
			return nil, p, nil, err
		}
	}
	return nil, cidr, nil, fmt.Errorf("every range of %v is taken or routed already: set --container-cidr", rangePool)
}

// managerAddrs resolves the hosts of the manager URLs (comma-separated):
// containers may never reach them, wherever they are.
func managerAddrs(ctx context.Context, managers string) []netip.Prefix {
	var out []netip.Prefix
	for _, m := range strings.Split(managers, ",") {
		u, err := url.Parse(strings.TrimSpace(m))
		if err != nil || u.Hostname() == "" {
			continue
		}
		addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", u.Hostname())
		if err != nil {
			continue // left out: only the rules for the VM itself cover it then
		}
		for _, a := range addrs {
			a = a.Unmap()
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return out
}
