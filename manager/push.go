package manager

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/faasnet/faasnet/api"
)

// pusher sends changed assignments to workers right away, so a scale-out
// does not wait for the next heartbeat. Pushes for one VM coalesce: the
// document is computed when it is sent, so the newest state wins. A failed
// push is only logged: missed heartbeats, not pushes, decide a VM's fate.
type pusher struct {
	m      *Manager
	client *http.Client

	mu      sync.Mutex
	pending map[string]bool
	wake    chan struct{}
	done    chan struct{}
	once    sync.Once
}

const pushWorkers = 16

func newPusher(m *Manager) *pusher {
	return &pusher{
		m:       m,
		client:  pushClient(m.addrs),
		pending: map[string]bool{},
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
}

// pushClient never follows a redirect, and dials no address a VM could
// not register: a VM must not make the manager send requests elsewhere.
func pushClient(addrs addrPolicy) *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second, Control: addrs.dialControl}
	return &http.Client{
		Timeout:       5 * time.Second,
		Transport:     &http.Transport{DialContext: dialer.DialContext, MaxIdleConnsPerHost: 2, IdleConnTimeout: 90 * time.Second},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// pushTLSClient is pushClient over mutual TLS with tlsConfig, which names
// the one VM the server must be. It keeps no idle connection: connections
// are pooled by address, and a connection verified as one VM must never
// carry another VM's document after an address moved between VMs.
func pushTLSClient(addrs addrPolicy, tlsConfig *tls.Config) *http.Client {
	c := pushClient(addrs)
	t := c.Transport.(*http.Transport)
	t.TLSClientConfig = tlsConfig
	t.TLSHandshakeTimeout = 5 * time.Second
	t.DisableKeepAlives = true
	return c
}

// clientFor returns the client and URL scheme to push to vm with: with
// Security, mutual TLS as the manager (its own certificate), accepting
// only vm's certificate from the server.
func (p *pusher) clientFor(vm string) (*http.Client, string) {
	t := p.m.trust
	if t == nil {
		return p.client, "http"
	}
	return pushTLSClient(p.m.addrs, t.verifier.PeerClient(t.keeper, vm)), "https"
}

func (p *pusher) enqueue(vm string) {
	p.mu.Lock()
	p.pending[vm] = true
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *pusher) stop() { p.once.Do(func() { close(p.done) }) }

// run sends pending pushes with a bounded number of concurrent requests
// until ctx is done or the manager closes.
func (p *pusher) run(ctx context.Context) {
	sem := make(chan struct{}, pushWorkers)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.done:
			return
		case <-p.wake:
		}
		p.mu.Lock()
		batch := p.pending
		p.pending = map[string]bool{}
		p.mu.Unlock()
		for vm := range batch {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				p.push(ctx, vm)
			}()
		}
	}
}

func (p *pusher) push(ctx context.Context, vm string) {
	doc, addr, err := p.m.Assignments(vm)
	if err != nil {
		return // the VM left meanwhile
	}
	body, _ := json.Marshal(doc)
	client, scheme := p.clientFor(vm)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, scheme+"://"+addr+api.WorkerAssignmentsPath, bytes.NewReader(body))
	if err != nil {
		return
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		p.m.log.Debug("push failed; the VM learns at its next heartbeat", "vm", vm, "err", err)
		return
	}
	resp.Body.Close()
}
