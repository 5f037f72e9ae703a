// Package containerdcfg writes what a node's containerd needs to pull
// through the node's faasnet worker: a hosts.toml per registry that makes
// the worker's local runtime endpoint (its --oci-listen address) the
// registry's mirror, and a configuration fragment for containerd 1.6
// (configuration version 2) that points CRI at those files and at the
// faasnet snapshotter.
//
// The fragment is meant to be imported from containerd's config.toml
// (imports = ["DIR/conf.d/faasnet.toml"]). containerd 1.6 replaces a whole
// plugin section from an import rather than merging its keys, so the
// fragment carries every CRI setting a node needs (CNI directories, sandbox
// image, OOM score rule), not only faasnet's.
//
// The TOML is written by hand: the only values are validated registry
// names, addresses and paths, each emitted through quote, whose output
// the tests decode with a TOML parser.
package containerdcfg

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Defaults for a node.
const (
	// DefaultWorker is the worker's default --oci-listen address.
	DefaultWorker = "127.0.0.1:5050"
	// SnapshotterName is the name the faasnet snapshotter is registered
	// under as a containerd proxy plugin.
	SnapshotterName = "faasnet"
	// DefaultSnapshotterSocket is where `faasnet snapshotter` will serve
	// containerd's snapshots API.
	DefaultSnapshotterSocket = "/run/faasnet/snapshotter.sock"
	// FragmentName is the fragment's file name under DIR/conf.d.
	FragmentName = "faasnet.toml"
)

// Registry is an upstream registry whose pulls go to the worker first.
type Registry struct {
	// Host is the registry's name as images name it (host or host:port),
	// also the directory name under certs.d.
	Host string
	// Server is the registry's own URL, which containerd tries after the
	// mirror: https://HOST unless given, https://registry-1.docker.io for
	// docker.io.
	Server string
}

// ParseRegistry parses a --registry value: HOST, HOST:PORT, or a URL
// http://HOST[:PORT] or https://HOST[:PORT] naming the scheme of the
// registry itself.
func ParseRegistry(s string) (Registry, error) {
	scheme, host := "https", s
	if i := strings.Index(s, "://"); i >= 0 {
		scheme, host = s[:i], s[i+3:]
		if scheme != "http" && scheme != "https" {
			return Registry{}, fmt.Errorf("registry %q: scheme %q, want http or https", s, scheme)
		}
	}
	if err := checkHost(host); err != nil {
		return Registry{}, fmt.Errorf("registry %q: %w", s, err)
	}
	server := scheme + "://" + host
	if host == "docker.io" {
		// Images say docker.io; its API lives elsewhere.
		server = "https://registry-1.docker.io"
	}
	return Registry{Host: host, Server: server}, nil
}

// checkHost accepts host or host:port, with host a DNS name, an IPv4
// address or a bracketed IPv6 address: what an image reference's domain
// may be. It is also a directory name, so anything else (slashes, "..",
// control characters) is refused.
func checkHost(hostport string) error {
	host := hostport
	if strings.HasPrefix(hostport, "[") || strings.Count(hostport, ":") == 1 {
		h, port, err := net.SplitHostPort(hostport)
		if err != nil {
			return fmt.Errorf("not host or host:port: %w", err)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || port != strconv.Itoa(n) {
			return fmt.Errorf("port %q: want 1 to 65535", port)
		}
		host = h
		if strings.HasPrefix(hostport, "[") {
			if ip := net.ParseIP(host); ip == nil || ip.To4() != nil {
				return fmt.Errorf("%q: not an IPv6 address", host)
			}
			return nil
		}
	}
	if !isDNSName(host) {
		return errors.New("not a host name or address")
	}
	return nil
}

// isDNSName reports whether s is dot-separated labels of letters, digits
// and inner hyphens, which covers IPv4 addresses too.
func isDNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range []byte(label) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// Node is one node's containerd settings.
type Node struct {
	// Dir is containerd's configuration directory (/etc/containerd): the
	// hosts files go to Dir/certs.d, the fragment to Dir/conf.d.
	Dir string
	// Worker is the worker's --oci-listen address, host:port over plain
	// HTTP (containerd cannot dial a unix socket for a registry host).
	Worker string
	// Registries are mirrored through the worker.
	Registries []Registry
	// NoFallback sends the registries' pulls to the worker only: with the
	// worker down a pull fails, where by default containerd goes to the
	// registry itself. The worker then gets requests without "?ns=", and
	// the node can pull from those registries only the images of the
	// functions its worker runs.
	NoFallback bool
	// Snapshotter is CRI's snapshotter: SnapshotterName for lazy starts
	// through `faasnet snapshotter`, or a built-in one (overlayfs, native)
	// for whole pulls through the hosts.toml mirror alone.
	Snapshotter string
	// SnapshotterSocket is the faasnet snapshotter's socket.
	SnapshotterSocket string
	// SandboxImage is CRI's pause image; "" keeps containerd's default.
	SandboxImage string
	// RestrictOOMScoreAdj makes CRI cap a container's oom_score_adj at its
	// own, for hosts where containerd may not lower it.
	RestrictOOMScoreAdj bool
	// SystemdCgroup has runc place containers through systemd, as a kubelet
	// with the systemd cgroup driver (kubeadm's default) expects.
	SystemdCgroup bool
	// CNIBinDir and CNIConfDir are CRI's CNI directories; the fragment
	// replaces the packaged CRI section, so they are set again here.
	CNIBinDir, CNIConfDir string
}

// HostsDir is the directory CRI's registry.config_path names.
func (n Node) HostsDir() string { return filepath.Join(n.Dir, "certs.d") }

// FragmentPath is where Write puts the configuration fragment.
func (n Node) FragmentPath() string { return filepath.Join(n.Dir, "conf.d", FragmentName) }

func (n Node) check() error {
	if n.Dir == "" || !filepath.IsAbs(n.Dir) {
		return fmt.Errorf("directory %q: want an absolute path (containerd reads it from its own working directory)", n.Dir)
	}
	if n.Worker == "" || strings.Contains(n.Worker, "/") {
		return fmt.Errorf("worker %q: want the worker's --oci-listen host:port (containerd cannot reach a unix socket as a mirror)", n.Worker)
	}
	if _, _, err := net.SplitHostPort(n.Worker); err != nil {
		return fmt.Errorf("worker %q: want host:port: %w", n.Worker, err)
	}
	if err := checkHost(n.Worker); err != nil {
		return fmt.Errorf("worker %q: %w", n.Worker, err)
	}
	if len(n.Registries) == 0 {
		return errors.New("no registry to mirror")
	}
	if n.Snapshotter == "" || !isDNSName(n.Snapshotter) {
		return fmt.Errorf("snapshotter %q: want a plugin name", n.Snapshotter)
	}
	if n.Snapshotter == SnapshotterName && !filepath.IsAbs(n.SnapshotterSocket) {
		return fmt.Errorf("snapshotter socket %q: want an absolute path", n.SnapshotterSocket)
	}
	for _, s := range []string{n.Dir, n.SnapshotterSocket, n.SandboxImage, n.CNIBinDir, n.CNIConfDir} {
		if !utf8.ValidString(s) {
			return fmt.Errorf("%q: not UTF-8, which TOML cannot hold", s)
		}
	}
	return nil
}

// HostsTOML is the hosts.toml of r: the worker first, for pull and resolve
// (the worker serves manifests by tag too), then r's own server; or, with
// NoFallback, the worker alone.
func (n Node) HostsTOML(r Registry) []byte {
	var b strings.Builder
	server := r.Server
	if n.NoFallback {
		// containerd 1.6 tries the server line last whatever capabilities
		// it is given, so the worker is the server too.
		server = "http://" + n.Worker
		b.WriteString("# Written by `faasnet containerd config --no-fallback`: pulls from this\n")
		fmt.Fprintf(&b, "# registry (%s) go to the node's faasnet worker only, never to\n", r.Server)
		b.WriteString("# the registry itself: with the worker down they fail.\n")
	} else {
		b.WriteString("# Written by `faasnet containerd config`: pulls from this registry go to\n")
		b.WriteString("# the node's faasnet worker first, which streams them down the function tree.\n")
	}
	fmt.Fprintf(&b, "server = %s\n\n", quote(server))
	// containerd 1.6 ignores a hosts.toml without a host table, silently.
	fmt.Fprintf(&b, "[host.%s]\n", quote("http://"+n.Worker))
	b.WriteString("  capabilities = [\"pull\", \"resolve\"]\n")
	return []byte(b.String())
}

// Fragment is the containerd 1.6 configuration fragment (version 2).
func (n Node) Fragment() []byte {
	var b strings.Builder
	b.WriteString("# Written by `faasnet containerd config` for containerd 1.6 (configuration\n")
	fmt.Fprintf(&b, "# version 2). Import it from config.toml: imports = [%s].\n", quote(n.FragmentPath()))
	b.WriteString("# An import replaces the whole CRI section, so every CRI setting is here.\n")
	b.WriteString("version = 2\n")
	if n.Snapshotter == SnapshotterName {
		fmt.Fprintf(&b, "\n[proxy_plugins.%s]\n", SnapshotterName)
		b.WriteString("  type = \"snapshot\"\n")
		fmt.Fprintf(&b, "  address = %s\n", quote(n.SnapshotterSocket))
	}
	b.WriteString("\n[plugins.\"io.containerd.grpc.v1.cri\"]\n")
	if n.SandboxImage != "" {
		fmt.Fprintf(&b, "  sandbox_image = %s\n", quote(n.SandboxImage))
	}
	fmt.Fprintf(&b, "  restrict_oom_score_adj = %t\n", n.RestrictOOMScoreAdj)
	b.WriteString("\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n")
	fmt.Fprintf(&b, "  snapshotter = %s\n", quote(n.Snapshotter))
	// containerd 1.6 defaults to true, and a lazy snapshotter then never
	// learns which layers it could mount remotely: the pull silently
	// becomes a whole one.
	b.WriteString("  disable_snapshot_annotations = false\n")
	// Set again since the import replaces the packaged runtime too; a
	// runtime without its type does not start.
	b.WriteString("\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n")
	b.WriteString("  runtime_type = \"io.containerd.runc.v2\"\n")
	b.WriteString("\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n")
	fmt.Fprintf(&b, "  SystemdCgroup = %t\n", n.SystemdCgroup)
	if n.CNIBinDir != "" || n.CNIConfDir != "" {
		b.WriteString("\n[plugins.\"io.containerd.grpc.v1.cri\".cni]\n")
		if n.CNIBinDir != "" {
			fmt.Fprintf(&b, "  bin_dir = %s\n", quote(n.CNIBinDir))
		}
		if n.CNIConfDir != "" {
			fmt.Fprintf(&b, "  conf_dir = %s\n", quote(n.CNIConfDir))
		}
	}
	b.WriteString("\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n")
	fmt.Fprintf(&b, "  config_path = %s\n", quote(n.HostsDir()))
	return []byte(b.String())
}

// Write writes Dir/certs.d/HOST/hosts.toml for every registry and the
// fragment, each whole (a containerd reading meanwhile sees the old file
// or the new), and returns the paths written.
func (n Node) Write() ([]string, error) {
	if err := n.check(); err != nil {
		return nil, err
	}
	var paths []string
	for _, r := range n.Registries {
		p := filepath.Join(n.HostsDir(), r.Host, "hosts.toml")
		if err := writeFile(p, n.HostsTOML(r)); err != nil {
			return paths, err
		}
		paths = append(paths, p)
	}
	if err := writeFile(n.FragmentPath(), n.Fragment()); err != nil {
		return paths, err
	}
	return append(paths, n.FragmentPath()), nil
}

func writeFile(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	f, err := os.CreateTemp(dir, ".faasnet-*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(f.Name()) // fails harmlessly once renamed
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// quote returns s as a TOML basic string. TOML's escapes are fewer than
// Go's (no \x, \a, \v), so strconv.Quote will not do: control characters
// become \uXXXX. s must be valid UTF-8.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, "\\u%04X", r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}
