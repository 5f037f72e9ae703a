package manager

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/manager/store"
)

func TestVMAddressIsChecked(t *testing.T) {
	tests := []struct {
		addr  string
		allow string // a prefix for Options.AllowVMNets
		ok    bool
	}{
		{addr: "127.0.0.1:7071", ok: true},
		{addr: "[::1]:7071", ok: true},
		{addr: "10.0.3.7:7071", ok: true},
		{addr: "vm-7.cluster.internal:7071", ok: true},
		{addr: "169.254.169.254:80"},
		{addr: "169.254.10.1:7071"},
		{addr: "[fe80::1]:7071"},
		{addr: "[fe80::1%eth0]:7071"},
		{addr: "[fd00:ec2::254]:80"},
		{addr: "[::ffff:169.254.169.254]:80"},
		{addr: "100.100.100.200:80"},
		{addr: "0.0.0.0:7071"},
		{addr: "[::]:7071"},
		{addr: "224.0.0.1:7071"},
		{addr: "evil.com/x?:80"},
		{addr: "a@b:80"},
		{addr: "127.0.0.1"},
		{addr: "127.0.0.1:0"},
		{addr: "169.254.10.1:7071", allow: "169.254.10.0/24", ok: true},
		{addr: "169.254.169.254:80", allow: "169.254.10.0/24"},
	}
	for _, tt := range tests {
		t.Run(tt.addr+"+"+tt.allow, func(t *testing.T) {
			var opts Options
			if tt.allow != "" {
				opts.AllowVMNets = []netip.Prefix{netip.MustParsePrefix(tt.allow)}
			}
			m, err := New(context.Background(), store.NewMemory(), opts)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			_, err = m.RegisterVM(context.Background(), "vm", api.RegisterRequest{Addr: tt.addr})
			if tt.ok {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			wantCode(t, err, http.StatusBadRequest)
			if vms := m.VMs(); len(vms) != 0 {
				t.Errorf("the refused VM is registered: %+v", vms)
			}
		})
	}
}

// A worker address that redirects must not make the manager send its
// push, or anything, to where the redirect points.
func TestPushFollowsNoRedirect(t *testing.T) {
	var hits atomic.Int64
	target := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	defer target.Close()
	var pushes atomic.Int64
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		pushes.Add(1)
		http.Redirect(w, r, target.URL+"/steal", http.StatusTemporaryRedirect)
	}))
	defer redirector.Close()

	m, err := New(context.Background(), store.NewMemory(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	addr := strings.TrimPrefix(redirector.URL, "http://")
	if _, err := m.RegisterVM(context.Background(), "vm", api.RegisterRequest{Addr: addr}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	m.pusher.push(ctx, "vm")
	if pushes.Load() != 1 {
		t.Fatalf("the worker got %d pushes, want 1", pushes.Load())
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("the redirect target got %d requests", n)
	}
}

// A name that resolves into a forbidden range is refused when dialed.
func TestPushDialsNoForbiddenAddress(t *testing.T) {
	c := pushClient(addrPolicy{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://169.254.169.254:80/", nil)
	_, err := c.Do(req)
	if err == nil || !strings.Contains(err.Error(), "may not use") {
		t.Fatalf("dialing the metadata address: %v", err)
	}
}

func FuzzVMAddr(f *testing.F) {
	for _, s := range []string{"127.0.0.1:1", "[fe80::1%eth0]:80", "host.example:80", "[::ffff:169.254.169.254]:80", "a..b:1"} {
		f.Add(s)
	}
	var p addrPolicy
	f.Fuzz(func(t *testing.T, s string) {
		if p.checkVMAddr(s) != nil {
			return
		}
		// An accepted address is a host and a port, and never a literal
		// IP in a forbidden range.
		host, _, err := net.SplitHostPort(s)
		if err != nil {
			t.Fatalf("accepted %q: %v", s, err)
		}
		if ip, err := netip.ParseAddr(host); err == nil {
			for _, n := range forbiddenNets {
				if n.Contains(ip.Unmap()) {
					t.Fatalf("accepted %q in %s", s, n)
				}
			}
		}
	})
}
