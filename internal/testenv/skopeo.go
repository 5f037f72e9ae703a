package testenv

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// SkopeoCLI runs the skopeo command line with a private configuration: a
// policy.json accepting anything, an empty registries.conf and registries.d,
// no credentials, and HOME, XDG directories and TMPDIR in t.TempDir(), so
// nothing is read from or written to the user's home.
//
// One write escapes when running as root: containers/image keeps its blob
// info cache in /var/lib/containers/cache for euid 0 and skopeo has no flag
// to move it. The cache only suggests where a blob may already exist on a
// destination; it never changes what is read from a source.
type SkopeoCLI struct {
	t    testing.TB
	bin  string
	dir  string
	args []string // global flags
	env  []string
}

// Skopeo returns a SkopeoCLI for t. It skips t (fails it in CI) without the
// tool.
func Skopeo(t testing.TB) *SkopeoCLI {
	t.Helper()
	bin := NeedTool(t, "skopeo")
	dir := t.TempDir()
	files := map[string]string{
		"policy.json":     `{"default": [{"type": "insecureAcceptAnything"}]}` + "\n",
		"registries.conf": "unqualified-search-registries = []\n",
		"auth.json":       `{"auths": {}}` + "\n",
	}
	for _, d := range []string{"registries.d", "home", "run", "config", "data", "cache", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatalf("testenv: skopeo dirs: %v", err)
		}
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatalf("testenv: skopeo config: %v", err)
		}
	}
	env := append(environ([]string{"CONTAINERS_", "REGISTRY_AUTH_FILE", "DOCKER_CONFIG", "XDG_", "HOME", "TMPDIR"}),
		"HOME="+filepath.Join(dir, "home"),
		"XDG_RUNTIME_DIR="+filepath.Join(dir, "run"),
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
		"XDG_DATA_HOME="+filepath.Join(dir, "data"),
		"XDG_CACHE_HOME="+filepath.Join(dir, "cache"),
		"TMPDIR="+filepath.Join(dir, "tmp"),
		"REGISTRY_AUTH_FILE="+filepath.Join(dir, "auth.json"),
		"DOCKER_CONFIG="+filepath.Join(dir, "home"),
		"CONTAINERS_REGISTRIES_CONF="+filepath.Join(dir, "registries.conf"),
	)
	return &SkopeoCLI{
		t:   t,
		bin: bin,
		dir: dir,
		args: []string{
			"--policy", filepath.Join(dir, "policy.json"),
			"--registries.d", filepath.Join(dir, "registries.d"),
			"--tmpdir", filepath.Join(dir, "tmp"),
		},
		env: env,
	}
}

// Run runs skopeo with the private configuration's global flags followed by
// args, under the test's context, and returns its standard output.
func (s *SkopeoCLI) Run(args ...string) ([]byte, error) {
	cmd := exec.CommandContext(s.t.Context(), s.bin, append(append([]string{}, s.args...), args...)...)
	cmd.Env = s.env
	return runTool(cmd)
}

// Copy copies the image src to dst without TLS verification, keeping its
// digests (`skopeo copy --preserve-digests`: a copy that would have to change
// the manifest fails instead). References without a transport are taken as
// docker:// references.
func (s *SkopeoCLI) Copy(src, dst string) error {
	_, err := s.Run("copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false",
		"--preserve-digests", transportRef(src), transportRef(dst))
	return err
}

// Inspect returns the digest of the manifest (or index) that ref points to:
// the SHA-256 of the raw bytes skopeo reads, exactly what a registry names it.
func (s *SkopeoCLI) Inspect(ref string) (string, error) {
	raw, err := s.Run("inspect", "--tls-verify=false", "--raw", transportRef(ref))
	if err != nil {
		return "", err
	}
	if len(raw) == 0 {
		return "", fmt.Errorf("skopeo inspect %s: empty manifest", ref)
	}
	sum := sha256.Sum256(raw)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

// transports are skopeo's transport prefixes.
var transports = []string{"docker://", "oci:", "oci-archive:", "dir:", "docker-archive:", "docker-daemon:", "containers-storage:", "sif:", "tarball:"}

// transportRef returns ref with a docker:// transport unless it names one.
func transportRef(ref string) string {
	for _, tr := range transports {
		if strings.HasPrefix(ref, tr) {
			return ref
		}
	}
	return "docker://" + ref
}
