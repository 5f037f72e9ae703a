package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/internal/testenv"
	"github.com/faasnet/faasnet/pki"
	"github.com/faasnet/faasnet/token"
)

// TestManagersCommand runs two managers on one etcd prefix and checks that
// "faasnet managers" names the leader and the follower, lists a manager
// that does not answer as unreachable, and fails when none leads.
func TestManagersCommand(t *testing.T) {
	cluster := testenv.StartEtcd(t, 1)
	etcdFlags := []string{"--etcd", strings.Join(cluster.Endpoints(), ","), "--etcd-session-ttl", "2s"}
	data1, data2 := t.TempDir(), t.TempDir()
	p1, addr1 := startFaasnet(t, append([]string{"manager", "--listen", "127.0.0.1:0", "--data", data1}, etcdFlags...)...)
	_, addr2 := startFaasnet(t, append([]string{"manager", "--listen", "127.0.0.1:0", "--data", data2}, etcdFlags...)...)
	url1, url2 := "https://"+addr1, "https://"+addr2
	access := newManagerAccess(t, data2)
	waitRole(t, access.operator(url2), url1, api.RoleLeader, 10*time.Second)
	waitRole(t, access.operator(url2), url2, api.RoleFollower, 10*time.Second)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "https://" + ln.Addr().String()
	ln.Close()

	args := []string{"managers", "--manager", url1 + "," + url2 + "," + dead,
		"--ca", filepath.Join(data2, pki.CertFile), "--token-file", filepath.Join(data2, token.AdminFile)}
	out, err := runFaasnet(t, args...)
	if err != nil {
		t.Fatalf("faasnet managers: %v\n%s", err, out)
	}
	for _, want := range []string{
		url1 + "  leader       " + url1,
		url2 + "  follower     " + url1,
		dead + "  unreachable  ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("faasnet managers output lacks %q:\n%s", want, out)
		}
	}

	// Listing only managers that do not answer: no leader, an error.
	if err := p1.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	p1.cmd.Wait()
	out, err = runFaasnet(t, "managers", "--manager", url1+","+dead,
		"--ca", filepath.Join(data2, pki.CertFile), "--token-file", filepath.Join(data2, token.AdminFile))
	if err == nil || !strings.Contains(out, "0 of the 2 managers lead") {
		t.Errorf("faasnet managers with no leader listed: %v\n%s", err, out)
	}
}

// TestJoinTokenRotationReachesManagers rotates the join token through a
// follower (which sends it to the leader) and starts another manager with
// an empty --data: it must start, with the rotated token. (Before the
// leader stored the rotated file in etcd, the new manager got the revoked
// one, had to replace it, and as a follower could not store that.)
func TestJoinTokenRotationReachesManagers(t *testing.T) {
	cluster := testenv.StartEtcd(t, 1)
	etcdFlags := []string{"--etcd", strings.Join(cluster.Endpoints(), ","), "--etcd-session-ttl", "2s"}
	data1, data2, data3 := t.TempDir(), t.TempDir(), t.TempDir()
	_, addr1 := startFaasnet(t, append([]string{"manager", "--listen", "127.0.0.1:0", "--data", data1}, etcdFlags...)...)
	_, addr2 := startFaasnet(t, append([]string{"manager", "--listen", "127.0.0.1:0", "--data", data2}, etcdFlags...)...)
	url2 := "https://" + addr2
	c := newManagerAccess(t, data2).operator(url2)
	// The follower names the leader once its campaign has won, which may
	// be a moment before the leader's term starts and it takes writes.
	waitRole(t, c, "https://"+addr1, api.RoleLeader, 10*time.Second)
	waitRole(t, c, url2, api.RoleFollower, 10*time.Second)
	rotated, err := c.RotateJoinToken(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	startFaasnet(t, append([]string{"manager", "--listen", "127.0.0.1:0", "--data", data3}, etcdFlags...)...)
	got, err := token.ReadFile(filepath.Join(data3, token.JoinFile))
	if err != nil || got != rotated.Token {
		t.Errorf("the new manager's join token = %q, %v; want the rotated one", got, err)
	}
}

// TestManagerEtcdTLSAndUser runs a manager on an etcd that serves clients
// over TLS only, asks for client certificates and has auth enabled, with
// --etcd-cacert, --etcd-cert, --etcd-key and --etcd-user-file: it leads.
// A TLS flag without --etcd, and a user file that is not name:password, are
// refused at start.
func TestManagerEtcdTLSAndUser(t *testing.T) {
	cluster := testenv.StartEtcdTLS(t, 1)
	cluster.EnableAuth("pa55word")
	userFile := filepath.Join(t.TempDir(), "etcd-user")
	if err := os.WriteFile(userFile, []byte("root:pa55word\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tlsFlags := []string{"--etcd-cacert", cluster.TLS.CACert, "--etcd-cert", cluster.TLS.Cert, "--etcd-key", cluster.TLS.Key}
	data := t.TempDir()
	_, addr := startFaasnet(t, append([]string{"manager", "--listen", "127.0.0.1:0", "--data", data,
		"--etcd", strings.Join(cluster.Endpoints(), ","), "--etcd-user-file", userFile}, tlsFlags...)...)
	url := "https://" + addr
	waitRole(t, newManagerAccess(t, data).operator(url), url, api.RoleLeader, 10*time.Second)

	bad := filepath.Join(t.TempDir(), "etcd-user")
	if err := os.WriteFile(bad, []byte("root\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{append([]string{"manager", "--data", t.TempDir()}, tlsFlags...), "need --etcd"},
		{[]string{"manager", "--data", t.TempDir(), "--etcd", cluster.Endpoints()[0], "--etcd-user-file", bad}, "name:password"},
	} {
		out, err := runFaasnet(t, tc.args...)
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("faasnet %s: %v, %q; want an error saying %q", strings.Join(tc.args, " "), err, out, tc.want)
		}
	}
}
