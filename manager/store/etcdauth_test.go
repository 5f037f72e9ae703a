package store

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/faasnet/faasnet/internal/testenv"
)

// TestEtcdTLSAndAuth opens the store on an etcd that serves clients over
// TLS only, asks for client certificates and has auth enabled (Debian's
// etcd 3.4, as a deployment that keeps the CA key in it should run it):
// with the CA, the client certificate and the user it stores and loads;
// without the user, without the client certificate, or trusting another
// CA, it cannot open.
func TestEtcdTLSAndAuth(t *testing.T) {
	e := testenv.StartEtcdTLS(t, 1)
	e.EnableAuth("s3cret:with:colons")
	ok, err := EtcdClientTLS(e.TLS.CACert, e.TLS.Cert, e.TLS.Key)
	if err != nil {
		t.Fatal(err)
	}
	noCert, err := EtcdClientTLS(e.TLS.CACert, "", "")
	if err != nil {
		t.Fatal(err)
	}
	systemCA, err := EtcdClientTLS("", e.TLS.Cert, e.TLS.Key)
	if err != nil {
		t.Fatal(err)
	}
	user, password, err := ParseEtcdUser([]byte("root:s3cret:with:colons\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		opts EtcdOptions
		ok   bool
	}{
		{"TLS and user", EtcdOptions{TLS: ok, Username: user, Password: password}, true},
		{"no user", EtcdOptions{TLS: ok}, false},
		{"wrong password", EtcdOptions{TLS: ok, Username: user, Password: "guess"}, false},
		{"no client certificate", EtcdOptions{TLS: noCert, Username: user, Password: password}, false},
		{"system CAs", EtcdOptions{TLS: systemCA, Username: user, Password: password}, false},
		{"no TLS", EtcdOptions{Username: user, Password: password}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Endpoints, tc.opts.DialTimeout = e.Endpoints(), time.Second
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			s, err := OpenEtcd(ctx, tc.opts)
			if !tc.ok {
				if err == nil {
					s.Close()
					t.Fatal("opened")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if err := s.Apply(ctx, Batch{PutVMs: []VM{{Name: "vm-0", Addr: "10.0.0.1:7071", Capacity: 1}}}); err != nil {
				t.Fatal(err)
			}
			st, err := s.Load(ctx)
			if err != nil || len(st.VMs) != 1 {
				t.Fatalf("load: %+v, %v", st, err)
			}
		})
	}
}

// TestParseEtcdUser checks the user file's one form and its refusals.
func TestParseEtcdUser(t *testing.T) {
	for _, tc := range []struct {
		in, user, password string
		ok                 bool
	}{
		{"root:pw", "root", "pw", true},
		{"root:pw\n", "root", "pw", true},
		{"root:pw\r\n", "root", "pw", true},
		{"root:a:b", "root", "a:b", true},
		{"root", "", "", false},
		{"root:", "", "", false},
		{":pw", "", "", false},
		{"root:pw\nmore", "", "", false},
		{"", "", "", false},
		{"root:\xff", "", "", false},
	} {
		u, p, err := ParseEtcdUser([]byte(tc.in))
		if (err == nil) != tc.ok || u != tc.user || p != tc.password {
			t.Errorf("ParseEtcdUser(%q) = %q, %q, %v", tc.in, u, p, err)
		}
	}
}

func FuzzParseEtcdUser(f *testing.F) {
	for _, s := range []string{"root:pw", "root:pw\n", "a:b:c", ":", ""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		u, p, err := ParseEtcdUser(data)
		if err != nil {
			return
		}
		if u == "" || p == "" || !bytes.HasPrefix(data, []byte(u+":"+p)) || bytes.ContainsAny([]byte(u+p), "\r\n") {
			t.Fatalf("ParseEtcdUser(%q) = %q, %q", data, u, p)
		}
	})
}
