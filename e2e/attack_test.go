package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/grant"
	"github.com/faasnet/faasnet/imagegen"
	"github.com/faasnet/faasnet/internal/testenv"
	"github.com/faasnet/faasnet/peer"
	"github.com/faasnet/faasnet/pki"
)

// Short server limits, so that the attack test sees connections dropped
// within seconds; production defaults are in internal/httpserver.
var attackLimits = []string{
	"--read-header-timeout", "1s", "--read-timeout", "2s", "--write-timeout", "2s", "--idle-timeout", "2s",
}

const (
	idleConns  = 500
	halfSent   = 50
	dropWithin = 8 * time.Second // the longest limit above, plus a generous margin for a loaded machine
)

// attack holds a flood of idle and half-sent connections to one server.
// Each is watched from its opening: a read that finds the deadline already
// past fails without looking at the socket, so checking only later, when
// the machine is slow, would count connections closed long ago as open.
type attack struct {
	target  string
	conns   []net.Conn
	watched sync.WaitGroup
	mu      sync.Mutex
	errs    []error // by connection
}

// flood opens idleConns idle connections (most silent, some idle after
// one request) and halfSent half-sent requests (headers cut short, or a
// body cut short) to addr. Every other connection first completes a TLS
// handshake with cfg, so that the attacker holds the server's resources
// past the handshake; the others send nothing or plain text.
func flood(t *testing.T, addr, putPath string, cfg *tls.Config) *attack {
	t.Helper()
	a := &attack{target: addr, errs: make([]error, idleConns+halfSent)}
	t.Cleanup(func() {
		for _, c := range a.conns {
			c.Close()
		}
	})
	open := func(send string) {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("attack connection %d to %s: %v", len(a.conns), addr, err)
		}
		if len(a.conns)%2 == 0 {
			tc := tls.Client(c, cfg)
			tc.SetDeadline(time.Now().Add(5 * time.Second))
			if err := tc.Handshake(); err != nil {
				t.Fatalf("attack connection %d to %s: TLS handshake: %v", len(a.conns), addr, err)
			}
			tc.SetDeadline(time.Time{})
			c = tc
		}
		i := len(a.conns)
		a.conns = append(a.conns, c)
		c.SetReadDeadline(time.Now().Add(dropWithin))
		if send != "" {
			c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.WriteString(c, send); err != nil {
				t.Fatalf("attack connection to %s: %v", addr, err)
			}
		}
		a.watched.Go(func() {
			_, err := io.Copy(io.Discard, c) // any answer, then the server's close
			if errors.Is(err, os.ErrDeadlineExceeded) {
				a.mu.Lock()
				a.errs[i] = fmt.Errorf("connection %d still open %v after it was opened", i, dropWithin)
				a.mu.Unlock()
			}
		})
	}
	for i := range idleConns {
		if i%10 == 0 {
			// Idle after one answered request: the idle timeout's case.
			open("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
		} else {
			open("")
		}
	}
	for i := range halfSent {
		if i%2 == 0 {
			open("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
		} else {
			open(fmt.Sprintf("PUT %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"addr\":", putPath))
		}
	}
	return a
}

// dropped checks that the server closed every connection of a within
// dropWithin of its opening, reading (and discarding) any answer.
func (a *attack) dropped(t *testing.T) {
	t.Helper()
	a.watched.Wait()
	n := 0
	for _, err := range a.errs {
		if err != nil {
			if n < 5 {
				t.Errorf("%s: %v", a.target, err)
			}
			n++
		}
	}
	if n > 0 {
		t.Errorf("%s: %d of %d attack connections not closed", a.target, n, len(a.conns))
	}
}

func TestAttackSlowAndIdleClients(t *testing.T) {
	reg := testenv.StartRegistry(t)
	img, err := imagegen.Image(imagegen.Spec{TotalSize: 40 << 20, Layers: 2, Seed: 10})
	if err != nil {
		t.Fatal(err)
	}
	ref := reg + "/attack/app:v1"
	if err := imagegen.Push(context.Background(), img, ref); err != nil {
		t.Fatal(err)
	}
	mgr := startManager(t, append([]string{"--vm-timeout", "2s"}, attackLimits...)...)
	client := mgr.admin(t)
	workers := make([]*proc, 2)
	for i := range workers {
		id := fmt.Sprintf("vm-%d", i)
		args := append(mgr.workerArgs(t, id), "--oci-listen", "none", "--heartbeat", "200ms", "--max-uploads", "1")
		workers[i] = start(t, id, append(args, attackLimits...)...)
	}
	waitVMs(t, client, 2)

	// The manager takes TLS from anyone (operators have no certificate);
	// a worker only from the cluster's VMs, so its attacker is one.
	verifier := pki.NewVerifier(mgr.ca, nil)
	toManager := verifier.ManagerClient(nil)
	toManager.ServerName = "127.0.0.1"
	attacks := []*attack{
		flood(t, mgr.addr, "/api/v1/vms/intruder", toManager),
		flood(t, workers[0].addr, api.WorkerAssignmentsPath, verifier.PeerClient(pki.NewKeeper(mgr.enroll(t, "intruder")), "vm-0")),
	}
	// Under attack, the cluster works: a function is placed on both VMs
	// and its image travels through the tree.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := client.PutFunction(ctx, "app", api.FunctionRequest{Image: ref}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Scale(ctx, "app", api.ScaleRequest{Count: 2}); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, client, "app", 2, time.Minute)
	for _, a := range attacks {
		a.dropped(t)
	}
	// Heartbeats went on throughout: with a 2 s VM timeout, a VM whose
	// heartbeats had failed for the attack's length would be gone. And the
	// half-sent registrations registered nobody.
	waitVMs(t, client, 2)
}

// A child that stops reading loses its upload slot within the write
// timeout: with one slot, the next child is served, not refused.
func TestAttackStalledChildLosesSlot(t *testing.T) {
	reg := testenv.StartRegistry(t)
	img, err := imagegen.Image(imagegen.Spec{TotalSize: 48 << 20, Layers: 1, Seed: 11})
	if err != nil {
		t.Fatal(err)
	}
	ref := reg + "/attack/big:v1"
	if err := imagegen.Push(context.Background(), img, ref); err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	layer, _ := layers[0].Digest()
	mgr := startManager(t, "--vm-timeout", "2s")
	client := mgr.admin(t)
	args := append(mgr.workerArgs(t, "vm-0"), "--oci-listen", "none", "--heartbeat", "200ms", "--max-uploads", "1")
	w := start(t, "vm-0", append(args, attackLimits...)...)
	waitVMs(t, client, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := client.PutFunction(ctx, "big", api.FunctionRequest{Image: ref}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Scale(ctx, "big", api.ScaleRequest{Count: 1}); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, client, "big", 1, time.Minute)

	// Two more VMs join the function as vm-0's children: enrolled VMs
	// with grants, so that the stall is by members, not refused strangers.
	stallCert, stallGrant := mgr.member(t, client, "vm-1", "big")
	nextCert, nextGrant := mgr.member(t, client, "vm-2", "big")

	blob := peer.PathPrefix + "blobs/" + layer.String()
	tcfg := pki.NewVerifier(mgr.ca, nil).PeerClient(pki.NewKeeper(stallCert), "vm-0")
	stalled, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", w.addr, tcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	fmt.Fprintf(stalled, "GET %s HTTP/1.1\r\nHost: x\r\n%s: %s\r\n\r\n", blob, grant.Header, stallGrant)
	// Wait until the stalled child holds the slot: its answer has begun.
	stalled.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(stalled), nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("stalled child's request: %v %v", resp, err)
	}
	// From here on it reads nothing. The next child must get the slot
	// before the worker's queue timeout (10 s) refuses it with 503.
	start := time.Now()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+w.addr+blob, nil)
	req.Header.Set("Range", "bytes=0-1023")
	req.Header.Set(grant.Header, nextGrant)
	next, err := mgr.peerClient(nextCert, "vm-0").Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, next.Body)
	next.Body.Close()
	if next.StatusCode != http.StatusPartialContent {
		t.Fatalf("the next child got %d after %v: the stalled one kept the slot", next.StatusCode, time.Since(start))
	}
	t.Logf("the next child was served after %v", time.Since(start))
}

// The manager refuses VM addresses where cloud metadata services live.
func TestAttackMetadataAddress(t *testing.T) {
	mgr := startManager(t)
	client := mgr.vm(mgr.enroll(t, "rogue"))
	admin := mgr.admin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, addr := range []string{"169.254.169.254:80", "169.254.1.1:7071", "[fe80::1]:7071", "[fd00:ec2::254]:80", "[::ffff:169.254.169.254]:80"} {
		_, err := client.RegisterVM(ctx, "rogue", addr, nil)
		var se *api.StatusError
		if !errors.As(err, &se) || se.Code != http.StatusBadRequest {
			t.Errorf("registering at %s: %v, want 400", addr, err)
		}
	}
	if vms, err := admin.VMs(ctx); err != nil || len(vms) != 0 {
		t.Errorf("VMs after refused registrations: %v %v", vms, err)
	}
	if _, err := client.RegisterVM(ctx, "rogue", "127.0.0.1:7071", nil); err != nil {
		t.Errorf("a loopback VM was refused: %v", err)
	}
}
