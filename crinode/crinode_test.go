package crinode

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/faasnet/faasnet/containerdcfg"
)

// TestWriteConfigKeepsToDir: every path containerd's main configuration
// names is under the node's directory, so that nodes on one machine share
// nothing, and it imports containerdcfg's fragment. (e2e/cri_test.go runs
// nodes for real.)
func TestWriteConfigKeepsToDir(t *testing.T) {
	dir := t.TempDir()
	r, err := containerdcfg.ParseRegistry("http://127.0.0.1:5000")
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Dir: dir, Worker: "127.0.0.1:5050", Registry: r, Snapshotter: containerdcfg.SnapshotterName,
		SnapshotterSocket: filepath.Join(dir, "snap.sock"), SandboxImage: "pause:1", CNIBinDir: "/usr/lib/cni"}
	if err := writeConfig(cfg); err != nil {
		t.Fatal(err)
	}
	main, err := os.ReadFile(filepath.Join(dir, "config.toml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"root", "state", "imports", "address", "path"} {
		for _, line := range strings.Split(string(main), "\n") {
			k, v, ok := strings.Cut(strings.TrimSpace(line), " = ")
			if !ok || k != key {
				continue
			}
			v = strings.Trim(v, `[]"`)
			if !strings.HasPrefix(v, dir+"/") {
				t.Errorf("config.toml: %s = %s, not under the node's %s", k, v, dir)
			}
			if k == "imports" {
				if _, err := os.Stat(v); err != nil {
					t.Errorf("config.toml imports %s: %v", v, err)
				}
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "cni", "10-lo.conflist")); err != nil {
		t.Errorf("no loopback CNI network: %v", err)
	}
}

func TestStartWithoutContainerd(t *testing.T) {
	r, _ := containerdcfg.ParseRegistry("http://127.0.0.1:5000")
	_, err := Start(t.Context(), Config{Dir: t.TempDir(), Containerd: "/nonexistent/containerd", Worker: "127.0.0.1:5050",
		Registry: r, Snapshotter: "overlayfs", CNIBinDir: "/usr/lib/cni"})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/containerd") {
		t.Fatalf("Start with no containerd binary: %v, want an error naming it", err)
	}
}

// TestLastLines: the last n lines of a log, without its final newline,
// and the whole log when it has no more than n.
func TestLastLines(t *testing.T) {
	for _, tt := range []struct {
		log  string
		n    int
		want string
	}{
		{"a\nb\nc\n", 2, "b\nc"},
		{"a\nb\nc", 2, "b\nc"},
		{"a\nb\n", 5, "a\nb"},
		{"a\n\nb\n", 2, "\nb"},
		{"", 3, ""},
	} {
		if got := LastLines(tt.log, tt.n); got != tt.want {
			t.Errorf("LastLines(%q, %d) = %q, want %q", tt.log, tt.n, got, tt.want)
		}
	}
}

// TestEnvironDropsContainerdVariables: a node's daemons do not inherit
// the CONTAINERD_ variables that would point them at another containerd,
// and do inherit the rest.
func TestEnvironDropsContainerdVariables(t *testing.T) {
	t.Setenv("CONTAINERD_NAMESPACE", "elsewhere")
	t.Setenv("CONTAINERD_ADDRESS", "/run/other.sock")
	t.Setenv("FAASNET_CRINODE_TEST", "kept")
	env := Environ()
	for _, kv := range env {
		if strings.HasPrefix(kv, "CONTAINERD_") {
			t.Errorf("environment keeps %s", kv)
		}
	}
	if !slices.Contains(env, "FAASNET_CRINODE_TEST=kept") {
		t.Errorf("environment lost FAASNET_CRINODE_TEST: %v", env)
	}
}
