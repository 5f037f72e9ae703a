package testenv

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// containerdConfig is a containerd 1.6 configuration (version 2) that keeps
// everything under one directory and disables the plugins a pull does not
// need and that would want more of the machine: CRI (CNI, its own
// registry config), the aufs/btrfs/devmapper/zfs snapshotters and tracing.
// Registry mirrors are not configured here: CRI's registry.config_path is
// off with CRI, and ctr takes the hosts directory as --hosts-dir instead.
const containerdConfig = `version = 2
root = %[1]s
state = %[2]s
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = %[3]s

[ttrpc]
  address = %[4]s

[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = %[5]s
`

// Namespace is the containerd namespace the helpers work in.
const Namespace = "faasnet-test"

// Snapshotter is the snapshotter pulls unpack into: native copies files and
// works on any filesystem, where overlayfs fails inside some containers.
const Snapshotter = "native"

// Containerd is a running containerd with its own root, state, socket and
// registry hosts directory, driven through ctr.
type Containerd struct {
	Address  string // gRPC socket
	HostsDir string // containerd hosts directory (HOST/hosts.toml), passed to ctr --hosts-dir
	Root     string
	State    string
	Log      string

	t   testing.TB
	ctr string
}

// StartContainerd starts containerd with a generated configuration under a
// new temporary directory, waits until `ctr version` answers, and stops it
// by PID in t.Cleanup. It needs root (containerd refuses to run without), and
// skips t (fails it in CI) without root or the containerd package.
func StartContainerd(t testing.TB) *Containerd {
	t.Helper()
	NeedRoot(t)
	bin := NeedTool(t, "containerd")
	ctr := NeedTool(t, "ctr")
	// Not t.TempDir(): a unix socket path must stay under 108 bytes and test
	// names can be long.
	dir, err := os.MkdirTemp("", "ctrd-")
	if err != nil {
		t.Fatalf("testenv: containerd dir: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) }) // runs after containerd stopped
	c := &Containerd{
		Address:  filepath.Join(dir, "containerd.sock"),
		HostsDir: filepath.Join(dir, "hosts"),
		Root:     filepath.Join(dir, "root"),
		State:    filepath.Join(dir, "state"),
		Log:      filepath.Join(dir, "containerd.log"),
		t:        t,
		ctr:      ctr,
	}
	if err := os.Mkdir(c.HostsDir, 0o755); err != nil {
		t.Fatalf("testenv: containerd hosts dir: %v", err)
	}
	cfg := fmt.Sprintf(containerdConfig, strconv.Quote(c.Root), strconv.Quote(c.State),
		strconv.Quote(c.Address), strconv.Quote(c.Address+".ttrpc"), strconv.Quote(filepath.Join(dir, "opt")))
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatalf("testenv: containerd config: %v", err)
	}
	// CONTAINERD_* variables (address, namespace, snapshotter) would
	// redirect ctr and containerd.
	p, err := start(t, c.Log, []string{"CONTAINERD_"}, bin, "--config", cfgPath)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	probe := func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		_, err := c.run(ctx, "version")
		return err
	}
	if err := p.waitReady(probe); err != nil {
		t.Fatalf("testenv: start containerd: %v", err)
	}
	t.Logf("containerd on %s, log %s", c.Address, c.Log)
	return c
}

// Ctr runs `ctr --address SOCK --namespace faasnet-test ARGS...` under the
// test's context and returns its standard output.
func (c *Containerd) Ctr(args ...string) ([]byte, error) {
	return c.run(c.t.Context(), args...)
}

func (c *Containerd) run(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, c.ctr, append([]string{"--address", c.Address, "--namespace", Namespace}, args...)...)
	cmd.Env = environ([]string{"CONTAINERD_"})
	return runTool(cmd)
}

// Mirror makes pulls of images on host (a registry host[:port], or any name,
// even one that does not resolve) go to the registry mirror at mirrorAddr
// (host:port, plain HTTP) first, falling back to http://host. It writes
// HostsDir/HOST/hosts.toml.
func (c *Containerd) Mirror(host, mirrorAddr string) error {
	dir := filepath.Join(c.HostsDir, host)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("mirror %s: %w", host, err)
	}
	hosts := fmt.Sprintf("server = %s\n\n[host.%s]\n  capabilities = [\"pull\", \"resolve\"]\n  skip_verify = true\n",
		strconv.Quote("http://"+host), strconv.Quote("http://"+mirrorAddr))
	if err := os.WriteFile(filepath.Join(dir, "hosts.toml"), []byte(hosts), 0o644); err != nil {
		return fmt.Errorf("mirror %s: %w", host, err)
	}
	return nil
}

// Pull pulls and unpacks ref (a full reference, registry host included) with
// `ctr images pull --plain-http --hosts-dir HostsDir --snapshotter native`,
// and returns the digest of the manifest (or index) it recorded for ref.
func (c *Containerd) Pull(ref string) (string, error) {
	if _, err := c.Ctr("images", "pull", "--plain-http", "--hosts-dir", c.HostsDir, "--snapshotter", Snapshotter, ref); err != nil {
		return "", err
	}
	out, err := c.Ctr("images", "ls")
	if err != nil {
		return "", err
	}
	d, ok := parseImagesLs(out, ref)
	if !ok {
		return "", fmt.Errorf("pulled %s but `ctr images ls` does not list it:\n%s", ref, out)
	}
	return d, nil
}

// ContentDigests returns the digests of all blobs in containerd's content
// store, sorted.
func (c *Containerd) ContentDigests() ([]string, error) {
	out, err := c.Ctr("content", "ls", "--quiet")
	if err != nil {
		return nil, err
	}
	var ds []string
	for _, line := range strings.Fields(string(out)) {
		if digestRE.MatchString(line) {
			ds = append(ds, line)
		}
	}
	slices.Sort(ds)
	return ds, nil
}

// parseImagesLs finds ref in the output of `ctr images ls` (columns REF TYPE
// DIGEST SIZE PLATFORMS LABELS, padded with spaces) and returns its digest.
func parseImagesLs(out []byte, ref string) (string, bool) {
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 3 && f[0] == ref && digestRE.MatchString(f[2]) {
			return f[2], true
		}
	}
	return "", false
}
