package containerdcfg

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/BurntSushi/toml"

	"github.com/faasnet/faasnet/internal/testenv"
)

func TestParseRegistry(t *testing.T) {
	for _, tc := range []struct {
		in, host, server string
	}{
		{"registry.example.com", "registry.example.com", "https://registry.example.com"},
		{"registry.example.com:5000", "registry.example.com:5000", "https://registry.example.com:5000"},
		{"http://127.0.0.1:5000", "127.0.0.1:5000", "http://127.0.0.1:5000"},
		{"https://ghcr.io", "ghcr.io", "https://ghcr.io"},
		{"docker.io", "docker.io", "https://registry-1.docker.io"},
		{"[fd00::1]:5000", "[fd00::1]:5000", "https://[fd00::1]:5000"},
	} {
		r, err := ParseRegistry(tc.in)
		if err != nil {
			t.Errorf("ParseRegistry(%q): %v", tc.in, err)
			continue
		}
		if r.Host != tc.host || r.Server != tc.server {
			t.Errorf("ParseRegistry(%q) = %+v, want host %q server %q", tc.in, r, tc.host, tc.server)
		}
	}
	for _, in := range []string{
		"", "..", ".", "a/b", "../etc", "ftp://host", "http://", "host:0", "host:65536", "host:05000",
		"host:port", "-host", "host-", "a..b", "::1", "[::1", "[127.0.0.1]:80", "host\n", "host name",
		"http://host/path", "host:5000:1",
	} {
		if r, err := ParseRegistry(in); err == nil {
			t.Errorf("ParseRegistry(%q) = %+v, want an error", in, r)
		}
	}
}

// FuzzParseRegistry: whatever a flag holds, an accepted host is one
// directory name under certs.d, never a path out of it.
func FuzzParseRegistry(f *testing.F) {
	for _, s := range []string{"docker.io", "http://127.0.0.1:5000", "[::1]:80", "../x", "a/b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRegistry(s)
		if err != nil {
			return
		}
		if r.Host == "" || r.Host == "." || r.Host == ".." || strings.ContainsAny(r.Host, "/\\\x00") ||
			filepath.Base(r.Host) != r.Host {
			t.Fatalf("ParseRegistry(%q) accepted host %q, not one directory name", s, r.Host)
		}
		if !strings.HasPrefix(r.Server, "http://") && !strings.HasPrefix(r.Server, "https://") {
			t.Fatalf("ParseRegistry(%q): server %q", s, r.Server)
		}
	})
}

// FuzzQuote: any UTF-8 string comes back unchanged from a TOML parser.
func FuzzQuote(f *testing.F) {
	for _, s := range []string{"", `a"b\c`, "\x00\x1f\x7f\t\n", "/etc/containerd", "é\u2028"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) {
			return
		}
		var v struct{ K string }
		if _, err := toml.Decode("K = "+quote(s), &v); err != nil {
			t.Fatalf("quote(%q) = %s: %v", s, quote(s), err)
		}
		if v.K != s {
			t.Fatalf("quote(%q) decoded as %q", s, v.K)
		}
	})
}

// hostsFile is what containerd 1.6 reads from hosts.toml, the keys this
// package writes.
type hostsFile struct {
	Server string `toml:"server"`
	Host   map[string]struct {
		Capabilities []string `toml:"capabilities"`
	} `toml:"host"`
}

// fragment is the part of containerd's configuration version 2 that the
// fragment sets.
type fragment struct {
	Version      int `toml:"version"`
	ProxyPlugins map[string]struct {
		Type    string `toml:"type"`
		Address string `toml:"address"`
	} `toml:"proxy_plugins"`
	Plugins struct {
		CRI criConfig `toml:"io.containerd.grpc.v1.cri"`
	} `toml:"plugins"`
}

type criConfig struct {
	SandboxImage        string `toml:"sandbox_image"`
	RestrictOOMScoreAdj bool   `toml:"restrict_oom_score_adj"`
	Containerd          struct {
		Snapshotter                string `toml:"snapshotter"`
		DisableSnapshotAnnotations *bool  `toml:"disable_snapshot_annotations"`
		Runtimes                   map[string]struct {
			RuntimeType string `toml:"runtime_type"`
			Options     struct {
				SystemdCgroup bool `toml:"SystemdCgroup"`
			} `toml:"options"`
		} `toml:"runtimes"`
	} `toml:"containerd"`
	CNI struct {
		BinDir  string `toml:"bin_dir"`
		ConfDir string `toml:"conf_dir"`
	} `toml:"cni"`
	Registry struct {
		ConfigPath string `toml:"config_path"`
	} `toml:"registry"`
}

// decodeStrict decodes path into v and fails on any key v does not name.
func decodeStrict(t *testing.T, path string, v any) {
	t.Helper()
	md, err := toml.DecodeFile(path, v)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if u := md.Undecoded(); len(u) > 0 {
		t.Fatalf("%s: keys containerd would not read as we mean: %v", path, u)
	}
}

func testNode(t *testing.T) Node {
	t.Helper()
	var regs []Registry
	for _, s := range []string{"docker.io", "http://127.0.0.1:5000", "registry.example.com:8443"} {
		r, err := ParseRegistry(s)
		if err != nil {
			t.Fatal(err)
		}
		regs = append(regs, r)
	}
	return Node{
		// A quote in the directory checks that paths are escaped.
		Dir: filepath.Join(t.TempDir(), `etc "containerd"`), Worker: "127.0.0.1:5051", Registries: regs,
		Snapshotter: SnapshotterName, SnapshotterSocket: DefaultSnapshotterSocket,
		SandboxImage: "127.0.0.1:5000/pause:3.9", RestrictOOMScoreAdj: true, SystemdCgroup: true,
		CNIBinDir: "/usr/lib/cni", CNIConfDir: "/etc/cni/net.d",
	}
}

func TestWriteParses(t *testing.T) {
	n := testNode(t)
	paths, err := n.Write()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		filepath.Join(n.Dir, "certs.d", "docker.io", "hosts.toml"),
		filepath.Join(n.Dir, "certs.d", "127.0.0.1:5000", "hosts.toml"),
		filepath.Join(n.Dir, "certs.d", "registry.example.com:8443", "hosts.toml"),
		filepath.Join(n.Dir, "conf.d", "faasnet.toml"),
	}
	if !slices.Equal(paths, want) {
		t.Fatalf("Write wrote %q, want %q", paths, want)
	}
	for i, r := range n.Registries {
		checkHosts(t, paths[i], r.Server)
	}
	var f fragment
	decodeStrict(t, paths[3], &f)
	if f.Version != 2 {
		t.Errorf("version %d, want 2", f.Version)
	}
	if p := f.ProxyPlugins[SnapshotterName]; len(f.ProxyPlugins) != 1 || p.Type != "snapshot" || p.Address != DefaultSnapshotterSocket {
		t.Errorf("proxy plugins %+v, want one snapshot plugin %q on %s", f.ProxyPlugins, SnapshotterName, DefaultSnapshotterSocket)
	}
	checkCRI(t, f.Plugins.CRI, n)
}

// checkHosts checks a hosts.toml: the worker as the one mirror, for pull
// and resolve, then server.
func checkHosts(t *testing.T, path, server string) {
	t.Helper()
	var h hostsFile
	decodeStrict(t, path, &h)
	if h.Server != server {
		t.Errorf("%s: server %q, want %q", path, h.Server, server)
	}
	// Without a host table containerd 1.6 drops the file, server and all.
	mirror, ok := h.Host["http://127.0.0.1:5051"]
	if len(h.Host) != 1 || !ok {
		t.Errorf("%s: hosts %v, want only the worker http://127.0.0.1:5051", path, h.Host)
	}
	if !slices.Equal(mirror.Capabilities, []string{"pull", "resolve"}) {
		t.Errorf("%s: worker capabilities %q, want pull and resolve", path, mirror.Capabilities)
	}
}

// TestNoFallback: the worker is every server containerd may try.
func TestNoFallback(t *testing.T) {
	n := testNode(t)
	n.NoFallback = true
	paths, err := n.Write()
	if err != nil {
		t.Fatal(err)
	}
	for i := range n.Registries {
		checkHosts(t, paths[i], "http://127.0.0.1:5051")
	}
}

func checkCRI(t *testing.T, c criConfig, n Node) {
	t.Helper()
	if c.Containerd.Snapshotter != n.Snapshotter {
		t.Errorf("CRI snapshotter %q, want %q", c.Containerd.Snapshotter, n.Snapshotter)
	}
	if d := c.Containerd.DisableSnapshotAnnotations; d == nil {
		t.Error("disable_snapshot_annotations unset (containerd 1.6 defaults to true), want false")
	} else if *d {
		t.Error("disable_snapshot_annotations = true, want false")
	}
	if r := c.Containerd.Runtimes["runc"]; r.RuntimeType != "io.containerd.runc.v2" || r.Options.SystemdCgroup != n.SystemdCgroup {
		t.Errorf("runc runtime %+v, want io.containerd.runc.v2 with SystemdCgroup %t", r, n.SystemdCgroup)
	}
	if c.Registry.ConfigPath != n.HostsDir() {
		t.Errorf("registry config_path %q, want %q", c.Registry.ConfigPath, n.HostsDir())
	}
	if c.SandboxImage != n.SandboxImage || c.RestrictOOMScoreAdj != n.RestrictOOMScoreAdj {
		t.Errorf("sandbox_image %q, restrict_oom_score_adj %t; want %q, %t",
			c.SandboxImage, c.RestrictOOMScoreAdj, n.SandboxImage, n.RestrictOOMScoreAdj)
	}
	if c.CNI.BinDir != n.CNIBinDir || c.CNI.ConfDir != n.CNIConfDir {
		t.Errorf("CNI %+v, want bin %q conf %q", c.CNI, n.CNIBinDir, n.CNIConfDir)
	}
}

// TestBuiltinSnapshotterHasNoProxyPlugin: with containerd's own snapshotter
// the fragment declares no plugin whose socket nobody serves.
func TestBuiltinSnapshotterHasNoProxyPlugin(t *testing.T) {
	n := testNode(t)
	n.Snapshotter = "overlayfs"
	if _, err := n.Write(); err != nil {
		t.Fatal(err)
	}
	var f fragment
	decodeStrict(t, n.FragmentPath(), &f)
	if len(f.ProxyPlugins) != 0 {
		t.Errorf("proxy plugins %+v with snapshotter overlayfs, want none", f.ProxyPlugins)
	}
	checkCRI(t, f.Plugins.CRI, n)
}

func TestWriteRefuses(t *testing.T) {
	for name, change := range map[string]func(*Node){
		"relative dir":        func(n *Node) { n.Dir = "etc/containerd" },
		"unix worker":         func(n *Node) { n.Worker = "unix:/run/faasnet/oci.sock" },
		"worker without port": func(n *Node) { n.Worker = "127.0.0.1" },
		"no registry":         func(n *Node) { n.Registries = nil },
		"relative socket":     func(n *Node) { n.SnapshotterSocket = "snapshotter.sock" },
		"bad snapshotter":     func(n *Node) { n.Snapshotter = `x"y` },
		"non-UTF-8 image":     func(n *Node) { n.SandboxImage = "\xff" },
	} {
		n := testNode(t)
		change(&n)
		if paths, err := n.Write(); err == nil {
			t.Errorf("%s: Write wrote %q, want an error", name, paths)
		}
	}
}

// TestContainerdMergesFragment asks the real containerd 1.6 what it makes of
// a config.toml that imports the fragment (`containerd config dump` loads
// and merges the configuration without starting anything).
func TestContainerdMergesFragment(t *testing.T) {
	bin := testenv.NeedTool(t, "containerd")
	n := testNode(t)
	if _, err := n.Write(); err != nil {
		t.Fatal(err)
	}
	// Debian's packaged config.toml sets CNI directories in a CRI section,
	// which the import replaces whole.
	main := filepath.Join(t.TempDir(), "config.toml")
	cfg := "version = 2\nimports = [" + quote(n.FragmentPath()) + "]\n" +
		"[plugins.\"io.containerd.grpc.v1.cri\".cni]\n  bin_dir = \"/elsewhere\"\n"
	if err := os.WriteFile(main, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), bin, "--config", main, "config", "dump")
	cmd.Env = slices.DeleteFunc(os.Environ(), func(e string) bool { return strings.HasPrefix(e, "CONTAINERD_") })
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("containerd config dump: %v", err)
	}
	var got fragment
	if _, err := toml.Decode(string(out), &got); err != nil {
		t.Fatalf("containerd's dump: %v\n%s", err, out)
	}
	if p := got.ProxyPlugins[SnapshotterName]; p.Type != "snapshot" || p.Address != DefaultSnapshotterSocket {
		t.Errorf("containerd's proxy plugins %+v, want %q on %s", got.ProxyPlugins, SnapshotterName, DefaultSnapshotterSocket)
	}
	checkCRI(t, got.Plugins.CRI, n)
}
