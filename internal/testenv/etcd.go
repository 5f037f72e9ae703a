package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Etcd is an etcd cluster (Debian's etcd-server, etcd 3.4) of one or more
// members on loopback ports, with data and logs in the test's temporary
// directories.
type Etcd struct {
	t       testing.TB
	bin     string
	dir     string
	token   string
	members []*etcdMember
	// TLS, if set, is what clients need: the members serve clients over
	// TLS only and ask for a client certificate signed by TLS.CACert.
	TLS *EtcdTLS
}

// EtcdTLS names the PEM files of a TLS etcd's client side, as etcdctl's
// --cacert, --cert and --key take them.
type EtcdTLS struct {
	CACert, Cert, Key string
}

type etcdMember struct {
	name         string
	client, peer string // host:port
	proc         *process
}

// StartEtcd starts an etcd cluster of n members, waits until every member
// reports itself healthy (which needs an elected leader) and returns it.
// The members stop in t.Cleanup. It skips t (fails it in CI) without the
// etcd binary.
func StartEtcd(t testing.TB, n int) *Etcd {
	t.Helper()
	return startEtcd(t, n, false)
}

// StartEtcdTLS is StartEtcd with the members serving clients over TLS only,
// and asking for a client certificate (--client-cert-auth): see Etcd.TLS.
// Peers talk plain HTTP on loopback.
func StartEtcdTLS(t testing.TB, n int) *Etcd {
	t.Helper()
	return startEtcd(t, n, true)
}

func startEtcd(t testing.TB, n int, withTLS bool) *Etcd {
	t.Helper()
	bin := NeedTool(t, "etcd")
	var files *EtcdTLS
	if withTLS {
		var err error
		if files, err = writeEtcdTLS(t.TempDir()); err != nil {
			t.Fatalf("testenv: etcd certificates: %v", err)
		}
	}
	var err error
	// A port found free can be taken before etcd binds it; then the member
	// exits and we start the cluster again on other ports.
	for attempt := range 3 {
		e := &Etcd{t: t, bin: bin, dir: t.TempDir(), token: "faasnet-" + randomToken(), TLS: files}
		if err = e.start(n); err == nil {
			t.Logf("etcd: %d member(s), client URLs %s, logs in %s", n, strings.Join(e.Endpoints(), ","), e.dir)
			return e
		}
		e.stopAll()
		t.Logf("etcd: attempt %d: %v", attempt, err)
	}
	t.Fatalf("testenv: start etcd: %v", err)
	return nil
}

func (e *Etcd) start(n int) error {
	var cluster []string
	for i := range n {
		client, err := freeAddr()
		if err != nil {
			return err
		}
		peer, err := freeAddr()
		if err != nil {
			return err
		}
		m := &etcdMember{name: fmt.Sprintf("m%d", i), client: client, peer: peer}
		e.members = append(e.members, m)
		cluster = append(cluster, m.name+"=http://"+peer)
	}
	for _, m := range e.members {
		if err := e.run(m, strings.Join(cluster, ","), "new"); err != nil {
			return err
		}
	}
	for _, m := range e.members {
		if err := m.proc.waitReady(func() error { return e.healthy(m) }); err != nil {
			return err
		}
	}
	return nil
}

func (e *Etcd) scheme() string {
	if e.TLS != nil {
		return "https://"
	}
	return "http://"
}

// run starts member m's process.
func (e *Etcd) run(m *etcdMember, cluster, state string) error {
	args := []string{
		"--name", m.name,
		"--data-dir", filepath.Join(e.dir, m.name+".etcd"),
		"--listen-client-urls", e.scheme() + m.client,
		"--advertise-client-urls", e.scheme() + m.client,
		"--listen-peer-urls", "http://" + m.peer,
		"--initial-advertise-peer-urls", "http://" + m.peer,
		"--initial-cluster", cluster,
		"--initial-cluster-state", state,
		"--initial-cluster-token", e.token,
		"--logger", "zap",
		"--log-outputs", "stderr",
	}
	if e.TLS != nil {
		// The server's certificate and key sit beside the client's.
		dir := filepath.Dir(e.TLS.CACert)
		args = append(args, "--cert-file", filepath.Join(dir, "server.crt"), "--key-file", filepath.Join(dir, "server.key"),
			"--trusted-ca-file", e.TLS.CACert, "--client-cert-auth")
	}
	// ETCD_* variables would override the flags.
	p, err := start(e.t, filepath.Join(e.dir, m.name+".log"), []string{"ETCD_"}, e.bin, args...)
	if err != nil {
		return err
	}
	m.proc = p
	return nil
}

// healthy asks the member's /health endpoint, which is true once the member
// has a leader and can serve.
func (e *Etcd) healthy(m *etcdMember) error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.scheme()+m.client+"/health", nil)
	if err != nil {
		return err
	}
	client := http.DefaultClient
	if e.TLS != nil {
		cfg, err := e.TLS.Config()
		if err != nil {
			return err
		}
		client = &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
		defer client.CloseIdleConnections()
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return err
	}
	var h struct {
		Health string `json:"health"`
	}
	if err := json.Unmarshal(body, &h); err != nil || h.Health != "true" {
		return fmt.Errorf("%s/health: %s %s", m.client, resp.Status, body)
	}
	return nil
}

// Endpoints returns the members' client URLs.
func (e *Etcd) Endpoints() []string {
	var urls []string
	for _, m := range e.members {
		urls = append(urls, e.scheme()+m.client)
	}
	return urls
}

// Kill sends SIGKILL to member i and waits until it has exited.
func (e *Etcd) Kill(i int) {
	m := e.members[i]
	_ = m.proc.cmd.Process.Kill() // an error means it already exited
	<-m.proc.done
}

// Restart starts member i again on its ports and data, after Kill, and
// waits until it is healthy (which needs a quorum).
func (e *Etcd) Restart(i int) error {
	m := e.members[i]
	if !m.proc.exited() {
		return fmt.Errorf("etcd member %s is still running", m.name)
	}
	var cluster []string
	for _, o := range e.members {
		cluster = append(cluster, o.name+"=http://"+o.peer)
	}
	if err := e.run(m, strings.Join(cluster, ","), "existing"); err != nil {
		return err
	}
	return m.proc.waitReady(func() error { return e.healthy(m) })
}

func (e *Etcd) stopAll() {
	for _, m := range e.members {
		if m.proc != nil {
			m.proc.stop()
		}
	}
}
