package netns

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// ctrIfname is the container end's name inside its namespace.
const ctrIfname = "eth0"

// cleanupTimeout bounds undoing a failed Attach, which runs even when the
// caller's context is done.
const cleanupTimeout = 10 * time.Second

// Endpoint is one container's attachment: its veth pair, its /30 and its
// elements in the table's sets.
type Endpoint struct {
	n    *Network
	id   string
	pid  int
	slot int
	veth string     // host end
	host netip.Addr // host end's address, the container's gateway
	addr netip.Addr // container's address

	mu     sync.Mutex
	closed bool
}

// Addr returns the container's address, where the host reaches it.
func (e *Endpoint) Addr() netip.Addr { return e.addr }

// Gateway returns the host end's address, the container's default route.
func (e *Endpoint) Gateway() netip.Addr { return e.host }

// Veth returns the name of the host end of the container's veth pair.
func (e *Endpoint) Veth() string { return e.veth }

// Attach connects the network namespace of pid (/proc/PID/ns/net), which
// must not be the host's, to the host: a veth pair whose container end is
// eth0 with the lowest free /30's .2 and a default route via the host end's
// .1, lo up and IPv6 disabled inside, and the container's elements in the
// table's sets. The elements go in before either end is up, so the container
// never sends a packet unfenced. On failure everything done is undone. id
// names the container in errors and logs.
func (n *Network) Attach(ctx context.Context, id string, pid int) (*Endpoint, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("netns: attaching container %s: invalid pid %d", id, pid)
	}
	same, err := sameNetns(pid)
	if err != nil {
		return nil, fmt.Errorf("netns: attaching container %s: %w", id, err)
	}
	if same {
		return nil, fmt.Errorf("netns: attaching container %s: pid %d shares the host's network namespace; the container needs a network namespace of its own", id, pid)
	}
	slot, err := n.allocate()
	if err != nil {
		return nil, fmt.Errorf("netns: attaching container %s: %w", id, err)
	}
	host, addr := slotAddrs(n.cfg.CIDR, slot)
	e := &Endpoint{n: n, id: id, pid: pid, slot: slot, veth: vethName("fn", n.cfg.Tag, slot), host: host, addr: addr}
	if err := e.setup(ctx); err != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer cancel()
		if cerr := e.teardown(cctx); cerr != nil {
			err = errors.Join(err, fmt.Errorf("undoing: %w", cerr))
		}
		n.release(slot)
		return nil, fmt.Errorf("netns: attaching container %s (pid %d) at %v: %w", id, pid, addr, err)
	}
	n.log.Debug("container attached", "id", id, "pid", pid, "addr", addr, "veth", e.veth)
	return e, nil
}

func (e *Endpoint) setup(ctx context.Context) error {
	n := e.n
	if _, err := run(ctx, "", n.ip, "link", "add", e.veth, "type", "veth", "peer", "name", ctrIfname, "netns", fmt.Sprint(e.pid)); err != nil {
		return err
	}
	if err := n.runNft(ctx, n.elements("add", e.veth, e.addr)); err != nil {
		return fmt.Errorf("adding %s to table inet %s: %w", e.veth, n.table, err)
	}
	// Without IPv6 the host end has no link-local address a container could
	// talk to, and the kernel sends no router solicitations out of it.
	if err := writeSysctl("net/ipv6/conf/"+e.veth+"/disable_ipv6", "1", true); err != nil {
		return fmt.Errorf("disabling IPv6 on %s: %w", e.veth, err)
	}
	hostSide := fmt.Sprintf("addr add %s/30 dev %s\nlink set %s up\n", e.host, e.veth, e.veth)
	if _, err := run(ctx, hostSide, n.ip, "-batch", "-"); err != nil {
		return err
	}
	inside := fmt.Sprintf("link set lo up\naddr add %s/30 dev %s\nlink set %s up\nroute add default via %s dev %s\n",
		e.addr, ctrIfname, ctrIfname, e.host, ctrIfname)
	return inNetns(e.pid, func() error {
		for _, f := range []string{"all", "default", ctrIfname} {
			if err := writeSysctl("net/ipv6/conf/"+f+"/disable_ipv6", "1", true); err != nil {
				return fmt.Errorf("disabling IPv6 in the container (%s): %w", f, err)
			}
		}
		_, err := run(ctx, inside, n.ip, "-batch", "-")
		return err
	})
}

// teardown deletes the veth pair and the set elements, whichever exist.
// After Network.Close it does nothing: the veth and table are gone, and a new
// Network of the same tag may have reused the name.
func (e *Endpoint) teardown(ctx context.Context) error {
	n := e.n
	if n.isClosed() {
		return nil
	}
	var errs []error
	if err := deleteLink(ctx, n.ip, e.veth); err != nil {
		errs = append(errs, err)
	}
	// Adding before deleting makes the delete succeed whether or not the
	// elements were there.
	if err := n.runNft(ctx, n.elements("add", e.veth, e.addr)+n.elements("delete", e.veth, e.addr)); err != nil {
		errs = append(errs, fmt.Errorf("removing %s from table inet %s: %w", e.veth, n.table, err))
	}
	return errors.Join(errs...)
}

// Close removes the container's veth pair and rules and gives its address
// back. A second Close does nothing; so does one after Network.Close.
func (e *Endpoint) Close(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	if err := e.teardown(ctx); err != nil {
		return fmt.Errorf("netns: detaching container %s at %v: %w", e.id, e.addr, err)
	}
	e.closed = true
	e.n.release(e.slot)
	e.n.log.Debug("container detached", "id", e.id, "addr", e.addr, "veth", e.veth)
	return nil
}
