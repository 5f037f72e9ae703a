package netns

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/faasnet/faasnet/internal/testenv"
)

// The tests use only addresses of 198.18.0.0/15 (RFC 2544, for benchmarking,
// routed nowhere) and 169.254.77.77, and put them only on interfaces in
// namespaces they create or on the host ends of their own veths. No packet
// leaves the machine; lo is not touched.
var (
	cidrA    = netip.MustParsePrefix("198.18.1.0/24") // Egress network
	cidrB    = netip.MustParsePrefix("198.18.2.0/24") // Egress deny network
	outHost  = netip.MustParseAddr("198.18.100.1")    // host end of the outside veth
	outPeer  = netip.MustParseAddr("198.18.100.2")    // outside end
	allowed  = netip.MustParseAddr("198.18.101.1")    // outside: reachable
	denied   = netip.MustParseAddr("198.18.102.1")    // outside: in Config.Deny
	linkLoc  = netip.MustParseAddr("169.254.77.77")   // outside: link-local
	spoofSrc = netip.MustParseAddr("198.18.1.200")    // an address of cidrA nobody owns
)

const (
	// blockedWait is how long a connection that must fail gets; dropped
	// packets make it time out.
	blockedWait = 1500 * time.Millisecond
	// reachWait is how long a connection that must succeed gets.
	reachWait = 10 * time.Second
)

func needNet(t *testing.T) {
	t.Helper()
	testenv.NeedRoot(t)
	testenv.NeedTool(t, "ip")
	testenv.NeedTool(t, "nft")
}

// randTag returns a tag no worker uses: "t" and 5 random hex digits.
func randTag(t *testing.T) string {
	b := make([]byte, 3)
	rand.Read(b)
	return "t" + hex.EncodeToString(b)[:5]
}

// sandbox starts a process in a network namespace of its own, standing in
// for a container's init, and kills it (by PID) when the test ends; its
// namespace, and any veth end in it, goes with it.
func sandbox(t *testing.T) int {
	t.Helper()
	// sleep's length bounds how long a namespace outlives a killed test
	// binary; Pdeathsig would not do: it fires when the starting thread
	// exits, and inNetns ends threads.
	cmd := exec.Command("sleep", "300")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting a process in a new network namespace: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd.Process.Pid
}

// inPid runs f in pid's network namespace; pid 0 is the host's, where f
// runs on the calling thread.
func inPid(pid int, f func() error) error {
	if pid == 0 {
		return f()
	}
	return inNetns(pid, f)
}

// ipIn runs ip with the batch script in pid's namespace (pid 0: the host's).
func ipIn(t *testing.T, pid int, script string) {
	t.Helper()
	f := func() error {
		_, err := run(context.Background(), script, testenv.NeedTool(t, "ip"), "-batch", "-")
		return err
	}
	if err := inPid(pid, f); err != nil {
		t.Fatalf("ip in pid %d's namespace: %v", pid, err)
	}
}

// listen serves on all addresses, IPv4 and IPv6, in pid's namespace (pid 0:
// the host's) until the test ends. Each connection gets one line naming the listener and the
// addresses it saw, then is closed.
func listen(t *testing.T, pid int, name string) int {
	t.Helper()
	var l net.Listener
	f := func() (err error) {
		l, err = net.Listen("tcp", ":0")
		return err
	}
	if err := inPid(pid, f); err != nil {
		t.Fatalf("listening in pid %d's namespace: %v", pid, err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s local=%s remote=%s\n", name, c.LocalAddr(), c.RemoteAddr())
			c.Close()
		}
	})
	t.Cleanup(func() {
		l.Close()
		wg.Wait()
	})
	return l.Addr().(*net.TCPAddr).Port
}

// dial connects from pid's namespace (pid 0: the host's) to addr:port, from
// the local address src if valid, and returns the line the listener sent.
func dial(pid int, src, addr netip.Addr, port int, wait time.Duration) (string, error) {
	var line string
	f := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		d := net.Dialer{}
		if src.IsValid() {
			d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
		}
		c, err := d.DialContext(ctx, "tcp", netip.AddrPortFrom(addr, uint16(port)).String())
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(wait))
		line, err = bufio.NewReader(c).ReadString('\n')
		return err
	}
	err := inPid(pid, f)
	return line, err
}

// mustReach checks that a connection from pid to addr:port succeeds and
// returns the listener's line.
func mustReach(t *testing.T, pid int, addr netip.Addr, port int) string {
	t.Helper()
	line, err := dial(pid, netip.Addr{}, addr, port, reachWait)
	if err != nil {
		t.Fatalf("from pid %d to %v:%d: %v; want a connection", pid, addr, port, err)
	}
	return line
}

// attempt is a connection that must be dropped.
type attempt struct {
	pid       int // namespace it starts from (0: the host's)
	src, addr netip.Addr
	port      int
}

// mustBeDropped checks, all at once, that each connection times out: the SYN
// was dropped, not refused, which a missing listener would do.
func mustBeDropped(t *testing.T, as ...attempt) {
	t.Helper()
	var wg sync.WaitGroup
	for _, a := range as {
		wg.Go(func() {
			line, err := dial(a.pid, a.src, a.addr, a.port, blockedWait)
			switch {
			case err == nil:
				t.Errorf("from pid %d (source %v) to %v:%d: connected to %q; want it dropped", a.pid, a.src, a.addr, a.port, strings.TrimSpace(line))
			case !errors.Is(err, context.DeadlineExceeded) && !os.IsTimeout(err):
				t.Errorf("from pid %d (source %v) to %v:%d: %v; want a timeout (dropped)", a.pid, a.src, a.addr, a.port, err)
			}
		})
	}
	wg.Wait()
}

// outside makes a namespace standing for the world beyond the VM: a veth to
// the host (outHost, outPeer) whose far end also holds allowed, denied and
// linkLoc, which the host routes via outPeer. (They would sit on a dummy
// interface, but this kernel has no CONFIG_DUMMY.) It has no route back to
// the container ranges, so reaching it takes masquerading. It returns the
// namespace's pid.
func outside(t *testing.T) int {
	t.Helper()
	pid := sandbox(t)
	veth := "fo" + randTag(t)
	t.Cleanup(func() { exec.Command(testenv.NeedTool(t, "ip"), "link", "del", veth).Run() })
	ipIn(t, 0, fmt.Sprintf("link add %s type veth peer name eth0 netns %d\naddr add %s/30 dev %s\nlink set %s up\n",
		veth, pid, outHost, veth, veth))
	ipIn(t, pid, fmt.Sprintf("link set lo up\naddr add %s/30 dev eth0\nlink set eth0 up\n"+
		"addr add %s/32 dev eth0\naddr add %s/32 dev eth0\naddr add %s/32 dev eth0\n",
		outPeer, allowed, denied, linkLoc))
	// The routes go with the veth.
	ipIn(t, 0, fmt.Sprintf("route add %s/32 via %s\nroute add %s/32 via %s\nroute add %s/32 via %s\n",
		allowed, outPeer, denied, outPeer, linkLoc, outPeer))
	return pid
}

// newNetwork makes a Network and closes it when the test ends.
func newNetwork(t *testing.T, cfg Config) *Network {
	t.Helper()
	n, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatalf("New(%+v): %v", cfg, err)
	}
	t.Cleanup(func() {
		if err := n.Close(context.Background()); err != nil {
			t.Errorf("closing network %s: %v", cfg.Tag, err)
		}
	})
	return n
}

// container starts a sandbox, attaches it to n, and serves in it.
func container(t *testing.T, n *Network, id string) (pid int, e *Endpoint, port int) {
	t.Helper()
	pid = sandbox(t)
	e, err := n.Attach(t.Context(), id, pid)
	if err != nil {
		t.Fatalf("Attach(%s, %d): %v", id, pid, err)
	}
	t.Cleanup(func() {
		if err := e.Close(context.Background()); err != nil {
			t.Errorf("closing endpoint %s: %v", id, err)
		}
	})
	return pid, e, listen(t, pid, id)
}

func readSysctl(t *testing.T, pid int, path string) string {
	t.Helper()
	var b []byte
	f := func() (err error) {
		b, err = os.ReadFile("/proc/sys/" + path)
		return err
	}
	if err := inPid(pid, f); err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestFence checks, against real veths and nftables rules, what containers
// can and cannot reach.
func TestFence(t *testing.T) {
	needNet(t)
	out := outside(t)
	outPort := listen(t, out, "outside")
	hostPort := listen(t, 0, "worker") // the worker's listener, on every address

	a := newNetwork(t, Config{CIDR: cidrA, Egress: true, Deny: []netip.Prefix{netip.PrefixFrom(denied, 32)}, Tag: randTag(t)})
	b := newNetwork(t, Config{CIDR: cidrB, Egress: false, Tag: randTag(t)})
	c1, e1, p1 := container(t, a, "c1")
	_, e2, p2 := container(t, a, "c2")
	c3, e3, p3 := container(t, b, "c3")

	t.Run("Addresses", func(t *testing.T) {
		for _, c := range []struct {
			e    *Endpoint
			want string
		}{{e1, "198.18.1.2"}, {e2, "198.18.1.6"}, {e3, "198.18.2.2"}} {
			if got := c.e.Addr().String(); got != c.want {
				t.Errorf("%s: Addr() = %s, want %s (lowest free /30's .2)", c.e.id, got, c.want)
			}
		}
	})
	t.Run("EgressReachesOutside", func(t *testing.T) {
		line := mustReach(t, c1, allowed, outPort)
		// The outside has no route to the container range: it saw the
		// host's address.
		if !strings.Contains(line, "remote="+outHost.String()+":") {
			t.Errorf("outside saw %q; want the connection masqueraded as %v", strings.TrimSpace(line), outHost)
		}
	})
	t.Run("EgressDenyReachesNothing", func(t *testing.T) {
		if got := readSysctl(t, 0, "net/ipv4/ip_forward"); got != "1" {
			t.Fatalf("net.ipv4.ip_forward = %s after New with Egress; want 1", got)
		}
		// With a route back, only the rules stop the connection (b does
		// not masquerade).
		ipIn(t, out, fmt.Sprintf("route add %s via %s\n", cidrB, outHost))
		mustBeDropped(t, attempt{c3, netip.Addr{}, allowed, outPort})
	})
	t.Run("NotLinkLocal", func(t *testing.T) {
		mustBeDropped(t, attempt{c1, netip.Addr{}, linkLoc, outPort})
	})
	t.Run("NotDenied", func(t *testing.T) {
		mustBeDropped(t, attempt{c1, netip.Addr{}, denied, outPort})
	})
	t.Run("NotTheHost", func(t *testing.T) {
		// Positive control: the listener takes connections from elsewhere.
		mustReach(t, out, outHost, hostPort)
		mustBeDropped(t,
			attempt{c1, netip.Addr{}, e1.Gateway(), hostPort},
			attempt{c1, netip.Addr{}, outHost, hostPort},
			attempt{c3, netip.Addr{}, e3.Gateway(), hostPort},
			attempt{c3, netip.Addr{}, outHost, hostPort})
	})
	t.Run("NotOtherContainers", func(t *testing.T) {
		mustReach(t, 0, e2.Addr(), p2) // positive control
		mustBeDropped(t,
			attempt{c1, netip.Addr{}, e2.Addr(), p2},
			attempt{c1, netip.Addr{}, e3.Addr(), p3})
	})
	t.Run("HostReachesContainers", func(t *testing.T) {
		for _, c := range []struct {
			e    *Endpoint
			port int
		}{{e1, p1}, {e2, p2}, {e3, p3}} {
			line := mustReach(t, 0, c.e.Addr(), c.port)
			if !strings.HasPrefix(line, c.e.id+" ") {
				t.Errorf("%v:%d answered %q; want %s", c.e.Addr(), c.port, line, c.e.id)
			}
		}
	})
	t.Run("NotFromOutside", func(t *testing.T) {
		// The outside may route the container range via the host; still
		// only the host opens connections to containers.
		ipIn(t, out, fmt.Sprintf("route add %s via %s\n", cidrA, outHost))
		mustBeDropped(t, attempt{out, netip.Addr{}, e1.Addr(), p1})
	})
	t.Run("NoSpoofing", func(t *testing.T) {
		// UDP, so that nothing answers the forged source: a reply to it
		// would follow the host's default route off the machine.
		got, udpPort := listenUDP(t, out)
		// Positive control: from its own address a datagram arrives,
		// masqueraded.
		sendUDP(t, c1, netip.Addr{}, allowed, udpPort)
		select {
		case src := <-got:
			if src != outHost {
				t.Errorf("outside got a datagram from %v; want %v (masqueraded)", src, outHost)
			}
		case <-time.After(reachWait):
			t.Fatal("no datagram from the container's own address reached the outside")
		}
		// The container gives itself a second address (it owns its
		// namespace, so it can) and sends from that.
		ipIn(t, c1, fmt.Sprintf("addr add %s/32 dev eth0\n", spoofSrc))
		sendUDP(t, c1, spoofSrc, allowed, udpPort)
		select {
		case src := <-got:
			t.Errorf("a datagram from the forged source %v reached the outside (as %v); want it dropped", spoofSrc, src)
		case <-time.After(blockedWait):
		}
	})
	t.Run("NoIPv6", func(t *testing.T) {
		for _, c := range []struct {
			pid  int
			path string
		}{
			{c1, "net/ipv6/conf/all/disable_ipv6"},
			{c1, "net/ipv6/conf/eth0/disable_ipv6"},
			{0, "net/ipv6/conf/" + e1.Veth() + "/disable_ipv6"},
		} {
			if got := readSysctl(t, c.pid, c.path); got != "1" {
				t.Errorf("pid %d: %s = %s, want 1", c.pid, c.path, got)
			}
		}
	})
	t.Run("TwoTagsCoexist", func(t *testing.T) {
		tables := nftTables(t)
		for _, n := range []*Network{a, b} {
			if !strings.Contains(tables, "table inet "+n.table+"\n") {
				t.Errorf("nft list tables = %q, want table inet %s", tables, n.table)
			}
		}
	})
	t.Run("NotTheHostOverIPv6", func(t *testing.T) {
		// A container that turns IPv6 back on in its namespace, next to a
		// host end that has it too, still reaches nothing on the host.
		pid, e, port := container(t, a, "c6")
		for _, w := range []struct {
			pid  int
			path string
		}{
			{pid, "net/ipv6/conf/all/disable_ipv6"},
			{pid, "net/ipv6/conf/eth0/disable_ipv6"},
			{0, "net/ipv6/conf/" + e.Veth() + "/disable_ipv6"},
		} {
			f := func() error { return writeSysctl(w.path, "0", false) }
			if err := inPid(w.pid, f); err != nil {
				t.Fatal(err)
			}
		}
		// Static neighbours: the input rule drops neighbour discovery from
		// the container too, which would fail the positive control.
		ctrMAC, ctrIndex := linkIn(t, pid, "eth0")
		hostMAC, _ := linkIn(t, 0, e.Veth())
		ipIn(t, 0, fmt.Sprintf("addr add fe80::1/64 dev %s nodad\nneigh add fe80::2 lladdr %s dev %s nud permanent\n",
			e.Veth(), ctrMAC, e.Veth()))
		ipIn(t, pid, fmt.Sprintf("addr add fe80::2/64 dev eth0 nodad\nneigh add fe80::1 lladdr %s dev eth0 nud permanent\n", hostMAC))
		// Positive control: the host reaches the container over it.
		if _, err := dial(0, netip.Addr{}, netip.MustParseAddr("fe80::2").WithZone(e.Veth()), port, reachWait); err != nil {
			t.Fatalf("host to the container over IPv6 link-local: %v", err)
		}
		// By index: Go caches zone names from the namespace it first looked
		// them up in.
		mustBeDropped(t, attempt{pid, netip.Addr{}, netip.MustParseAddr("fe80::1").WithZone(strconv.Itoa(ctrIndex)), hostPort})
	})
}

// linkIn returns the hardware address and index of the link dev in pid's
// namespace (pid 0: the host's).
func linkIn(t *testing.T, pid int, dev string) (mac string, index int) {
	t.Helper()
	var out []byte
	f := func() (err error) {
		out, err = run(context.Background(), "", testenv.NeedTool(t, "ip"), "-j", "link", "show", "dev", dev)
		return err
	}
	if err := inPid(pid, f); err != nil {
		t.Fatal(err)
	}
	var links []struct {
		Address string `json:"address"`
		Index   int    `json:"ifindex"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -j link show dev %s: %q: %v", dev, out, err)
	}
	return links[0].Address, links[0].Index
}

// listenUDP receives datagrams in pid's namespace until the test ends and
// sends each one's source address on the returned channel.
func listenUDP(t *testing.T, pid int) (<-chan netip.Addr, int) {
	t.Helper()
	var c *net.UDPConn
	err := inNetns(pid, func() (err error) {
		c, err = net.ListenUDP("udp4", &net.UDPAddr{})
		return err
	})
	if err != nil {
		t.Fatalf("listening for UDP in pid %d's namespace: %v", pid, err)
	}
	got := make(chan netip.Addr, 16)
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 64)
		for {
			_, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			select {
			case got <- from.Addr().Unmap():
			default:
			}
		}
	})
	t.Cleanup(func() {
		c.Close()
		wg.Wait()
	})
	return got, c.LocalAddr().(*net.UDPAddr).Port
}

// sendUDP sends one datagram from pid's namespace to addr:port, from src if
// valid.
func sendUDP(t *testing.T, pid int, src, addr netip.Addr, port int) {
	t.Helper()
	err := inNetns(pid, func() error {
		var laddr *net.UDPAddr
		if src.IsValid() {
			laddr = &net.UDPAddr{IP: src.AsSlice()}
		}
		c, err := net.DialUDP("udp4", laddr, net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, uint16(port))))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("hello"))
		return err
	})
	if err != nil {
		t.Fatalf("sending UDP from pid %d (source %v) to %v:%d: %v", pid, src, addr, port, err)
	}
}

func nftTables(t *testing.T) string {
	t.Helper()
	out, err := exec.Command(testenv.NeedTool(t, "nft"), "list", "tables").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list tables: %v: %s", err, out)
	}
	return string(out)
}

// nftSet returns the elements line of one of n's sets.
func nftSet(t *testing.T, n *Network, set string) string {
	t.Helper()
	out, err := exec.Command(testenv.NeedTool(t, "nft"), "list", "set", "inet", n.table, set).CombinedOutput()
	if err != nil {
		t.Fatalf("nft list set inet %s %s: %v: %s", n.table, set, err, out)
	}
	return string(out)
}

// TestClose checks that closing an endpoint removes its veth and set
// elements and gives its address back, and that closing the network removes
// the table and every veth.
func TestClose(t *testing.T) {
	needNet(t)
	n := newNetwork(t, Config{CIDR: cidrA, Tag: randTag(t)})
	_, e1, _ := container(t, n, "c1")
	_, e2, p2 := container(t, n, "c2")
	if !linkExists(e1.Veth()) {
		t.Fatalf("veth %s missing after Attach", e1.Veth())
	}
	if err := e1.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if linkExists(e1.Veth()) {
		t.Errorf("veth %s still there after Close", e1.Veth())
	}
	for _, set := range []string{"veths", "sources"} {
		if s := nftSet(t, n, set); strings.Contains(s, `"`+e1.Veth()+`"`) {
			t.Errorf("set %s still holds %s after Close:\n%s", set, e1.Veth(), s)
		}
		if s := nftSet(t, n, set); !strings.Contains(s, `"`+e2.Veth()+`"`) {
			t.Errorf("set %s lost %s, which is still attached:\n%s", set, e2.Veth(), s)
		}
	}
	if err := e1.Close(t.Context()); err != nil {
		t.Errorf("second Close: %v; want nil", err)
	}
	mustReach(t, 0, e2.Addr(), p2) // the other container is untouched

	_, e3, _ := container(t, n, "c3")
	if e3.Addr() != e1.Addr() {
		t.Errorf("after closing %v, Attach gave %v; want the lowest free address back", e1.Addr(), e3.Addr())
	}

	if err := n.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if tables := nftTables(t); strings.Contains(tables, n.table) {
		t.Errorf("table %s still there after Network.Close:\n%s", n.table, tables)
	}
	for _, e := range []*Endpoint{e2, e3} {
		if linkExists(e.Veth()) {
			t.Errorf("veth %s still there after Network.Close", e.Veth())
		}
		if err := e.Close(t.Context()); err != nil {
			t.Errorf("Endpoint.Close after Network.Close: %v; want nil", err)
		}
	}
	if _, err := n.Attach(t.Context(), "late", sandbox(t)); err == nil {
		t.Error("Attach after Network.Close succeeded; want an error")
	}
}

// TestNewRemovesStale checks that New with the tag of a worker that crashed
// (never closed its Network) removes its veths and rules.
func TestNewRemovesStale(t *testing.T) {
	needNet(t)
	cfg := Config{CIDR: cidrA, Egress: true, Tag: randTag(t)}
	crashed, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	pid := sandbox(t)
	old, err := crashed.Attach(t.Context(), "old", pid)
	if err != nil {
		t.Fatal(err)
	}
	n := newNetwork(t, cfg)
	if linkExists(old.Veth()) {
		t.Errorf("veth %s of the crashed network still there after New", old.Veth())
	}
	if s := nftSet(t, n, "veths"); strings.Contains(s, old.Veth()) {
		t.Errorf("new table holds the crashed network's %s:\n%s", old.Veth(), s)
	}
	_, e, p := container(t, n, "new")
	if e.Addr() != old.Addr() {
		t.Errorf("new network gave %v; want %v, the lowest address, free again", e.Addr(), old.Addr())
	}
	mustReach(t, 0, e.Addr(), p)
}

// TestNewRefusesOverlap checks that New refuses a range the host routes.
func TestNewRefusesOverlap(t *testing.T) {
	needNet(t)
	outside(t) // routes 198.18.100.0/30 to its veth
	_, err := New(t.Context(), Config{CIDR: netip.MustParsePrefix("198.18.100.0/24"), Tag: randTag(t)})
	if err == nil || !strings.Contains(err.Error(), "overlaps") {
		t.Fatalf("New with a range the host routes: %v; want an overlap error", err)
	}
}

// TestAttachFailureUndoes checks that a failed Attach leaves no veth, no set
// element and no address taken, and that Attach refuses the host's own
// namespace.
func TestAttachFailureUndoes(t *testing.T) {
	needNet(t)
	n := newNetwork(t, Config{CIDR: cidrA, Tag: randTag(t)})
	if _, err := n.Attach(t.Context(), "host", os.Getpid()); err == nil {
		t.Error("Attach of the host's own namespace succeeded; want an error")
	}
	// A namespace that already has an eth0 makes the veth fail.
	pid := sandbox(t)
	ipIn(t, pid, "link add eth0 type bridge\n")
	if _, err := n.Attach(t.Context(), "clash", pid); err == nil {
		t.Fatal("Attach into a namespace with an eth0 succeeded; want an error")
	}
	veth := vethName("fn", n.cfg.Tag, 0)
	if linkExists(veth) {
		t.Errorf("veth %s left after a failed Attach", veth)
	}
	if s := nftSet(t, n, "veths"); strings.Contains(s, veth) {
		t.Errorf("set veths holds %s after a failed Attach:\n%s", veth, s)
	}
	_, e, _ := container(t, n, "next")
	if want, _ := slotAddrs(cidrA, 0); e.Addr() != want.Next() {
		t.Errorf("after a failed Attach, Attach gave %v; want %v back", e.Addr(), want.Next())
	}
}

// TestRangesOfOtherWorkers checks that New refuses a range another worker's
// table holds, and that DefaultCIDR keeps off it while DefaultCIDRFor the
// same worker gives it back.
func TestRangesOfOtherWorkers(t *testing.T) {
	needNet(t)
	first := newNetwork(t, Config{CIDR: cidrA, Tag: randTag(t)})
	second, err := New(t.Context(), Config{CIDR: netip.MustParsePrefix("198.18.1.128/25"), Tag: randTag(t)})
	if err == nil {
		second.Close(context.Background())
	}
	if err == nil || !strings.Contains(err.Error(), first.table) {
		t.Errorf("New with a range inside %s's: %v; want an error naming its table", first.table, err)
	}

	d, err := DefaultCIDR()
	if err != nil {
		t.Fatal(err)
	}
	n := newNetwork(t, Config{CIDR: d, Tag: randTag(t)})
	d2, err := DefaultCIDR()
	if err != nil {
		t.Fatal(err)
	}
	if d2.Overlaps(d) {
		t.Errorf("DefaultCIDR = %v while table %s holds %v; want another range", d2, n.table, d)
	}
	if own, err := DefaultCIDRFor(n.cfg.Tag); err != nil || own != d {
		t.Errorf("DefaultCIDRFor(%s) = %v, %v; want its own %v", n.cfg.Tag, own, err, d)
	}
}

// TestAttachFailureAfterVeth checks that an Attach failing after it made the
// veth pair (here: its table was deleted behind its back) removes the pair.
func TestAttachFailureAfterVeth(t *testing.T) {
	needNet(t)
	n := newNetwork(t, Config{CIDR: cidrA, Tag: randTag(t)})
	if out, err := exec.Command(testenv.NeedTool(t, "nft"), "delete", "table", "inet", n.table).CombinedOutput(); err != nil {
		t.Fatalf("nft delete table: %v: %s", err, out)
	}
	pid := sandbox(t)
	if _, err := n.Attach(t.Context(), "orphan", pid); err == nil {
		t.Fatal("Attach without its table succeeded; want an error")
	}
	if veth := vethName("fn", n.cfg.Tag, 0); linkExists(veth) {
		t.Errorf("veth %s left after a failed Attach", veth)
	}
	var out []byte
	if err := inNetns(pid, func() (err error) {
		out, err = run(context.Background(), "", testenv.NeedTool(t, "ip"), "-br", "link")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), ctrIfname) {
		t.Errorf("the sandbox still has %s after a failed Attach:\n%s", ctrIfname, out)
	}
}

// TestConcurrentAttach checks that containers attached at once get distinct
// addresses, each reachable from the host.
func TestConcurrentAttach(t *testing.T) {
	needNet(t)
	n := newNetwork(t, Config{CIDR: cidrA, Tag: randTag(t)})
	const k = 6
	pids := make([]int, k)
	for i := range pids {
		pids[i] = sandbox(t)
	}
	eps := make([]*Endpoint, k)
	errs := make([]error, k)
	var wg sync.WaitGroup
	for i := range k {
		wg.Go(func() { eps[i], errs[i] = n.Attach(t.Context(), fmt.Sprint("c", i), pids[i]) })
	}
	wg.Wait()
	seen := map[netip.Addr]bool{}
	for i, e := range eps {
		if errs[i] != nil {
			t.Fatalf("Attach %d: %v", i, errs[i])
		}
		t.Cleanup(func() { e.Close(context.Background()) })
		if seen[e.Addr()] {
			t.Errorf("address %v given twice", e.Addr())
		}
		seen[e.Addr()] = true
		mustReach(t, 0, e.Addr(), listen(t, pids[i], e.id))
	}
	for s := range k {
		if _, a := slotAddrs(cidrA, s); !seen[a] {
			t.Errorf("%v not given: want the lowest %d addresses", a, k)
		}
	}
}

// BenchmarkAttach measures Attach and Close of one container, the network
// part of a sandboxed container's start and stop.
func BenchmarkAttach(b *testing.B) {
	testenv.NeedRoot(b)
	testenv.NeedTool(b, "ip")
	testenv.NeedTool(b, "nft")
	n, err := New(b.Context(), Config{CIDR: cidrA, Egress: true, Tag: "b" + fmt.Sprintf("%05x", os.Getpid()&0xfffff)})
	if err != nil {
		b.Fatal(err)
	}
	defer n.Close(context.Background())
	for b.Loop() {
		b.StopTimer()
		cmd := exec.Command("sleep", "300")
		cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		e, err := n.Attach(b.Context(), "bench", cmd.Process.Pid)
		if err == nil {
			err = e.Close(b.Context())
		}
		b.StopTimer()
		cmd.Process.Kill()
		cmd.Wait()
		b.StartTimer()
		if err != nil {
			b.Fatal(err)
		}
	}
}
