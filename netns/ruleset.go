package netns

import (
	"fmt"
	"net/netip"
	"strings"
)

// ruleset returns the nft script that replaces the table with an empty one:
// sets with no veths yet, and chains that match only veths in those sets.
//
// input: a container sends nothing to the host itself, over any address
// family, except replies on connections the host opened (the worker's probes
// and calls).
//
// forward: replies back to a container pass; nothing else is forwarded into
// one (no container reaches another, nor does anything beyond the host). From
// a container only IPv4 from its own address passes (no spoofing, no IPv6),
// never to the container range, loopback, link-local, the metadata address or
// Config.Deny; the rest passes with Egress, else is dropped.
//
// postrouting (Egress only): what a container sends out is masqueraded
// behind the outgoing interface's address, so the rest of the network needs
// no route back to the container range.
func (n *Network) ruleset() string {
	var b strings.Builder
	t := n.table
	// Declaring then deleting the table replaces any old one atomically.
	fmt.Fprintf(&b, "table inet %s {}\ndelete table inet %s\n", t, t)
	fmt.Fprintf(&b, "table inet %s {\n", t)
	// The range is for other workers on the machine: New and DefaultCIDR
	// keep off it.
	fmt.Fprintf(&b, "\tset range { type ipv4_addr; flags interval; elements = { %s } }\n", n.cfg.CIDR)
	b.WriteString("\tset veths { type ifname; }\n")
	b.WriteString("\tset sources { type ifname . ipv4_addr; }\n")
	fmt.Fprintf(&b, "\tset blocked { type ipv4_addr; flags interval; auto-merge; elements = { %s } }\n", n.blocked())
	b.WriteString(`	chain input {
		type filter hook input priority filter; policy accept;
		iifname @veths ct state established,related accept
		iifname @veths drop
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		oifname @veths ct state established,related accept
		oifname @veths drop
		iifname @veths meta nfproto != ipv4 drop
		iifname @veths ct state invalid drop
		iifname @veths iifname . ip saddr != @sources drop
		iifname @veths ip daddr @blocked drop
`)
	if n.cfg.Egress {
		b.WriteString("\t\tiifname @veths accept\n\t}\n")
		b.WriteString(`	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		iifname @veths oifname != @veths masquerade
	}
`)
	} else {
		b.WriteString("\t\tiifname @veths drop\n\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// blocked lists the IPv4 destinations forwarding drops, for an nft set.
func (n *Network) blocked() string {
	ps := append([]netip.Prefix{n.cfg.CIDR}, Blocked...)
	for _, d := range n.cfg.Deny {
		switch a := d.Addr(); {
		case a.Is4():
			ps = append(ps, d.Masked())
		case a.Is4In6() && d.Bits() >= 96:
			ps = append(ps, netip.PrefixFrom(a.Unmap(), d.Bits()-96).Masked())
		}
	}
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}

// elements returns the nft commands that add (op "add") or delete (op
// "delete") one veth's set elements.
func (n *Network) elements(op, veth string, addr netip.Addr) string {
	return fmt.Sprintf("%[1]s element inet %[2]s veths { %[3]q }\n%[1]s element inet %[2]s sources { %[3]q . %[4]s }\n",
		op, n.table, veth, addr)
}
