package netns

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// ipRoutes is `ip -j -4 route show table all` from a VM, trimmed.
const ipRoutes = `[{"dst":"default","gateway":"192.0.2.1","dev":"eth0","flags":[]},
{"dst":"192.0.2.0/24","dev":"eth0","protocol":"kernel","scope":"link","prefsrc":"192.0.2.2","flags":[]},
{"dst":"10.89.0.0/30","dev":"fnabc123-0","protocol":"kernel","scope":"link","prefsrc":"10.89.0.1","flags":[]},
{"type":"local","dst":"127.0.0.0/8","dev":"lo","table":"local","protocol":"kernel","scope":"host","prefsrc":"127.0.0.1","flags":[]},
{"type":"local","dst":"192.0.2.2","dev":"eth0","table":"local","protocol":"kernel","scope":"host","prefsrc":"192.0.2.2","flags":[]},
{"type":"broadcast","dst":"127.255.255.255","dev":"lo","table":"local","protocol":"kernel","scope":"link","prefsrc":"127.0.0.1","flags":[]}]`

func TestOverlapping(t *testing.T) {
	routes, err := parseRoutes([]byte(ipRoutes))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		p    string
		own  string
		want string // dst of the overlapping route, "" for none
	}{
		{"10.89.0.0/16", "fnabc123-", ""},            // only our own veth
		{"10.89.0.0/16", "fnother-", "10.89.0.0/30"}, // another worker's veth
		{"192.0.0.0/16", "", "192.0.2.0/24"},
		{"192.0.2.2/32", "", "192.0.2.0/24"},
		{"127.5.0.0/16", "", "127.0.0.0/8"},
		{"100.64.0.0/16", "", ""}, // the default route does not count
		{"172.16.0.0/12", "", ""},
	} {
		r, ok := overlapping(netip.MustParsePrefix(c.p), routes, c.own)
		if got := map[bool]string{true: r.Dst}[ok]; got != c.want {
			t.Errorf("overlapping(%s, own %q) = %q, want %q", c.p, c.own, got, c.want)
		}
	}
}

func TestPickCIDR(t *testing.T) {
	cands := []netip.Prefix{netip.MustParsePrefix("10.89.0.0/16"), netip.MustParsePrefix("100.64.0.0/16")}
	for _, c := range []struct {
		routes []route
		want   string
	}{
		{nil, "10.89.0.0/16"},
		{[]route{{Dst: "default", Dev: "eth0"}}, "10.89.0.0/16"},
		{[]route{{Dst: "10.0.0.0/8", Dev: "eth0"}}, "100.64.0.0/16"},
		{[]route{{Dst: "10.89.3.7", Dev: "eth1"}}, "100.64.0.0/16"},
		{[]route{{Dst: "10.0.0.0/8", Dev: "eth0"}, {Dst: "100.64.0.0/10", Dev: "tailscale0"}}, ""},
	} {
		got, err := pickCIDR(cands, c.routes)
		if c.want == "" {
			if err == nil {
				t.Errorf("pickCIDR(%v) = %v; want an error", c.routes, got)
			}
			continue
		}
		if err != nil || got.String() != c.want {
			t.Errorf("pickCIDR(%v) = %v, %v; want %s", c.routes, got, err, c.want)
		}
	}
}

func TestSlotAddrs(t *testing.T) {
	p := netip.MustParsePrefix("10.89.0.0/16")
	for _, c := range []struct {
		slot      int
		host, ctr string
	}{
		{0, "10.89.0.1", "10.89.0.2"},
		{1, "10.89.0.5", "10.89.0.6"},
		{64, "10.89.1.1", "10.89.1.2"},
		{16383, "10.89.255.253", "10.89.255.254"},
	} {
		h, a := slotAddrs(p, c.slot)
		if h.String() != c.host || a.String() != c.ctr {
			t.Errorf("slot %d: %v, %v; want %s, %s", c.slot, h, a, c.host, c.ctr)
		}
		if !p.Contains(h) || !p.Contains(a) {
			t.Errorf("slot %d: %v, %v outside %v", c.slot, h, a, p)
		}
	}
	if n := slots(p); n != 16384 {
		t.Errorf("slots(%v) = %d, want 16384", p, n)
	}
}

func TestValidate(t *testing.T) {
	cidr := netip.MustParsePrefix("10.89.0.0/16")
	for _, c := range []struct {
		name string
		cfg  Config
		want string // part of the error, "" for none
	}{
		{"ok", Config{CIDR: cidr, Tag: "abc123"}, ""},
		{"seven-byte tag fits a /16", Config{CIDR: cidr, Tag: "abcdefg"}, ""},
		{"eight-byte tag too long for a /16", Config{CIDR: cidr, Tag: "abcdefgh"}, "veth names of 16 bytes"},
		{"eight-byte tag fits a /24", Config{CIDR: netip.MustParsePrefix("10.89.0.0/24"), Tag: "abcdefgh"}, ""},
		{"empty tag", Config{CIDR: cidr}, "tag"},
		{"upper-case tag", Config{CIDR: cidr, Tag: "ABC"}, "tag"},
		{"dash in tag", Config{CIDR: cidr, Tag: "a-b"}, "tag"},
		{"no range", Config{Tag: "abc"}, "IPv4"},
		{"IPv6 range", Config{CIDR: netip.MustParsePrefix("fd00::/64"), Tag: "abc"}, "IPv4"},
		{"/31", Config{CIDR: netip.MustParsePrefix("10.89.0.0/31"), Tag: "abc"}, "at most a /30"},
		{"host bits", Config{CIDR: netip.MustParsePrefix("10.89.0.1/16"), Tag: "abc"}, "host bits"},
		{"invalid deny", Config{CIDR: cidr, Tag: "abc", Deny: []netip.Prefix{{}}}, "deny"},
	} {
		err := c.cfg.validate()
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: validate() = %v; want %q", c.name, err, c.want)
		}
	}
}

func TestRuleset(t *testing.T) {
	n := &Network{cfg: Config{
		CIDR: netip.MustParsePrefix("10.89.0.0/16"),
		Deny: []netip.Prefix{netip.MustParsePrefix("192.0.2.7/32"), netip.MustParsePrefix("::ffff:192.0.2.8/128"), netip.MustParsePrefix("2001:db8::1/128")},
		Tag:  "abc",
	}, table: "faasnet-abc"}
	deny := n.ruleset()
	for _, want := range []string{"10.89.0.0/16", "127.0.0.0/8", "169.254.0.0/16", "100.100.100.200/32", "192.0.2.7/32", "192.0.2.8/32", "iifname @veths drop\n\t}"} {
		if !strings.Contains(deny, want) {
			t.Errorf("ruleset lacks %q:\n%s", want, deny)
		}
	}
	for _, bad := range []string{"2001:db8", "masquerade", "iifname @veths accept\n\t}"} {
		if strings.Contains(deny, bad) {
			t.Errorf("ruleset without egress has %q:\n%s", bad, deny)
		}
	}
	n.cfg.Egress = true
	egress := n.ruleset()
	for _, want := range []string{"masquerade", "iifname @veths accept\n\t}"} {
		if !strings.Contains(egress, want) {
			t.Errorf("ruleset with egress lacks %q:\n%s", want, egress)
		}
	}
}

func TestParseLinks(t *testing.T) {
	got, err := parseLinks([]byte(`[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK"]},{"ifindex":7,"ifname":"fnabc-0","link_index":2,"link_netnsid":0}]`))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"lo", "fnabc-0"}; !slices.Equal(got, want) {
		t.Errorf("parseLinks = %q, want %q", got, want)
	}
	if _, err := parseLinks([]byte(`{"ifname":"lo"}`)); err == nil {
		t.Error("parseLinks of an object succeeded; want an error")
	}
}

func FuzzParseLinks(f *testing.F) {
	f.Add([]byte(`[{"ifindex":1,"ifname":"lo"}]`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`[{"ifname":""},{}]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		names, err := parseLinks(b)
		if err != nil {
			return
		}
		for _, n := range names {
			if n == "" {
				t.Errorf("parseLinks(%q) returned an empty name", b)
			}
		}
	})
}

func FuzzParseRoutes(f *testing.F) {
	f.Add([]byte(ipRoutes))
	f.Add([]byte(`[{"dst":"10.0.0.0/33"},{"dst":"::/0"},{"dst":"0.0.0.0/0"}]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		routes, err := parseRoutes(b)
		if err != nil {
			return
		}
		p := netip.MustParsePrefix("10.89.0.0/16")
		for _, r := range routes {
			d, ok := r.prefix()
			if !ok {
				continue
			}
			// What overlapping uses: an IPv4 prefix, never the default.
			if !d.IsValid() || !d.Addr().Is4() || d.Bits() == 0 {
				t.Errorf("route %+v: prefix %v", r, d)
			}
		}
		if r, ok := overlapping(p, routes, ""); ok {
			if d, _ := r.prefix(); !d.Overlaps(p) {
				t.Errorf("overlapping returned %+v, which does not overlap %v", r, p)
			}
		}
	})
}

// nftTablesJSON and nftSetJSON are nft 1.0.6's output.
const (
	nftTablesJSON = `{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"table": {"family": "inet", "name": "faasnet-abc", "handle": 434}}, {"table": {"family": "ip", "name": "faasnet-ip", "handle": 435}}, {"table": {"family": "inet", "name": "filter", "handle": 436}}]}`
	nftSetJSON    = `{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"set": {"family": "inet", "name": "range", "table": "faasnet-zz8", "type": "ipv4_addr", "handle": 1, "flags": ["interval"], "elem": [{"prefix": {"addr": "10.89.0.0", "len": 16}}]}}]}`
)

func TestParseNft(t *testing.T) {
	tables, err := parseTables([]byte(nftTablesJSON))
	if err != nil || !slices.Equal(tables, []string{"faasnet-abc"}) {
		t.Errorf("parseTables = %q, %v; want [faasnet-abc]", tables, err)
	}
	ps, err := parseRangeSet([]byte(nftSetJSON))
	if err != nil || len(ps) != 1 || ps[0] != netip.MustParsePrefix("10.89.0.0/16") {
		t.Errorf("parseRangeSet = %v, %v; want [10.89.0.0/16]", ps, err)
	}
	for _, bad := range []string{
		`{"nftables": [{"set": {"elem": [{"prefix": {"addr": "fd00::", "len": 16}}]}}]}`,
		`{"nftables": [{"set": {"elem": [{"prefix": {"addr": "10.0.0.0", "len": 33}}]}}]}`,
		`[]`,
	} {
		if ps, err := parseRangeSet([]byte(bad)); err == nil {
			t.Errorf("parseRangeSet(%s) = %v; want an error", bad, ps)
		}
	}
}

func FuzzParseNft(f *testing.F) {
	f.Add([]byte(nftTablesJSON))
	f.Add([]byte(nftSetJSON))
	f.Fuzz(func(t *testing.T, b []byte) {
		if tables, err := parseTables(b); err == nil {
			for _, n := range tables {
				if !strings.HasPrefix(n, "faasnet-") {
					t.Errorf("parseTables(%q) returned %q", b, n)
				}
			}
		}
		if ps, err := parseRangeSet(b); err == nil {
			for _, p := range ps {
				if !p.IsValid() || !p.Addr().Is4() || p.Masked() != p {
					t.Errorf("parseRangeSet(%q) returned %v", b, p)
				}
			}
		}
	})
}
