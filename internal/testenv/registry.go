package testenv

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// registryConfig is the docker-registry (distribution 2.8) configuration:
// filesystem storage, plain HTTP on loopback, no auth (no auth section at
// all), no background upload purging. The instance header lets the readiness
// probe tell our registry from whatever else might hold the port.
const registryConfig = `version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  secret: faasnet-testenv
  headers:
    X-Content-Type-Options: [nosniff]
    %s: [%s]
`

// instanceHeader carries a per-start random token in every registry response.
const instanceHeader = "X-Faasnet-Testenv-Instance"

// StartRegistry starts the Debian docker-registry (`docker-registry serve
// CONFIG`) on a free port of 127.0.0.1 with its storage and log in
// t.TempDir(), waits until GET /v2/ answers, and returns its host:port. The
// registry stops in t.Cleanup. It skips t (fails it in CI) without the tool.
func StartRegistry(t testing.TB) string {
	t.Helper()
	bin := NeedTool(t, "docker-registry")
	dir := t.TempDir()
	var err error
	// A port found free can be taken before the registry binds it; then the
	// registry exits and we try another.
	for attempt := range 3 {
		var addr string
		if addr, err = startRegistry(t, bin, dir, attempt); err == nil {
			t.Logf("docker-registry on %s, log %s", addr, filepath.Join(dir, "registry-"+strconv.Itoa(attempt)+".log"))
			return addr
		}
	}
	t.Fatalf("testenv: start docker-registry: %v", err)
	return ""
}

func startRegistry(t testing.TB, bin, dir string, attempt int) (string, error) {
	addr, err := freeAddr()
	if err != nil {
		return "", err
	}
	token := randomToken()
	cfg := fmt.Sprintf(registryConfig, strconv.Quote(filepath.Join(dir, "storage")), addr, instanceHeader, token)
	cfgPath := filepath.Join(dir, fmt.Sprintf("registry-%d.yml", attempt))
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return "", fmt.Errorf("write config: %w", err)
	}
	logPath := filepath.Join(dir, fmt.Sprintf("registry-%d.log", attempt))
	// REGISTRY_* variables would override the configuration file.
	p, err := start(t, logPath, []string{"REGISTRY_"}, bin, "serve", cfgPath)
	if err != nil {
		return "", err
	}
	client := &http.Client{Timeout: 2 * time.Second}
	defer client.CloseIdleConnections()
	probe := func() error {
		resp, err := client.Get("http://" + addr + "/v2/")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if got := resp.Header.Get(instanceHeader); got != token {
			return fmt.Errorf("GET /v2/ on %s answered by another server (status %s)", addr, resp.Status)
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /v2/ on %s: %s", addr, resp.Status)
		}
		return nil
	}
	if err := p.waitReady(probe); err != nil {
		p.stop()
		return "", err
	}
	return addr, nil
}

// freeAddr returns a 127.0.0.1 address whose port was free a moment ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func randomToken() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}
