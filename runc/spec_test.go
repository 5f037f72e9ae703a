package runc

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestCheckID(t *testing.T) {
	for id, ok := range map[string]bool{
		"fn-a_vm1":               true,
		"a.b+c":                  true,
		"":                       false,
		".":                      false,
		"..":                     false,
		"a/b":                    false,
		"a b":                    false,
		strings.Repeat("x", 128): true,
		strings.Repeat("x", 129): false,
		"é":                      false,
	} {
		if err := checkID(id); (err == nil) != ok {
			t.Errorf("checkID(%q) = %v, want ok %v", id, err, ok)
		}
	}
}

func TestMergeEnv(t *testing.T) {
	for _, tc := range []struct {
		in, want []string
	}{
		{nil, []string{defaultPath}},
		{[]string{"PATH=/bin"}, []string{"PATH=/bin"}},
		{[]string{"A=1", "PATH=/x", "B=2", "A=3"}, []string{"A=3", "PATH=/x", "B=2"}},
		{[]string{"A=1", "A"}, []string{"A", defaultPath}},
		{[]string{"A==b", "C="}, []string{"A==b", "C=", defaultPath}},
	} {
		if got := mergeEnv(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("mergeEnv(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// writeRootfs makes a directory with the given files (name -> content).
func writeRootfs(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestOCISpec(t *testing.T) {
	rootfs := writeRootfs(t, map[string]string{
		"etc/passwd": "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/app:/bin/sh\n",
		"etc/group":  "root:x:0:\napp:x:1000:\nextra:x:2000:app,other\n",
	})
	img := v1.Config{
		Entrypoint: []string{"python3", "/app/handler.py"},
		Cmd:        []string{"--serve"},
		Env:        []string{"PATH=/usr/bin:/bin", "PORT=1", "LANG=C.UTF-8"},
		WorkingDir: "app",
		User:       "app",
	}
	for _, tc := range []struct {
		name     string
		spec     Spec
		wantArgs []string
		wantEnv  []string
		wantCwd  string
		wantUser specs.User
		wantMem  int64
		wantErr  string
	}{
		{
			name:     "image entrypoint and cmd",
			spec:     Spec{ID: "f1", Image: img, Port: 8081, Env: []string{"LANG=C", "DEBUG=1"}},
			wantArgs: []string{"python3", "/app/handler.py", "--serve"},
			wantEnv:  []string{"PATH=/usr/bin:/bin", "PORT=8081", "LANG=C", "DEBUG=1"},
			wantCwd:  "/app",
			wantUser: specs.User{UID: 1000, GID: 1000, AdditionalGids: []uint32{2000}},
		},
		{
			name:     "command overrides, memory limit",
			spec:     Spec{ID: "f2", Image: v1.Config{Entrypoint: []string{"x"}}, Command: []string{"/server", "-v"}, Limits: Limits{Memory: 64 << 20}},
			wantArgs: []string{"/server", "-v"},
			wantEnv:  []string{defaultPath},
			wantCwd:  "/",
			wantMem:  64 << 20,
		},
		{
			name:     "numeric user and group",
			spec:     Spec{ID: "f3", Image: v1.Config{Cmd: []string{"sh"}, User: "4242:extra"}},
			wantArgs: []string{"sh"},
			wantEnv:  []string{defaultPath},
			wantCwd:  "/",
			wantUser: specs.User{UID: 4242, GID: 2000},
		},
		{name: "no command", spec: Spec{ID: "f4"}, wantErr: "no command"},
		{name: "unknown user", spec: Spec{ID: "f5", Command: []string{"x"}, Image: v1.Config{User: "ghost"}}, wantErr: "ghost"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ociSpec(tc.spec, rootfs, "/faasnet-0/"+tc.spec.ID)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("ociSpec: error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			p := got.Process
			if !slices.Equal(p.Args, tc.wantArgs) || !slices.Equal(p.Env, tc.wantEnv) || p.Cwd != tc.wantCwd {
				t.Errorf("process args %q env %q cwd %q; want %q %q %q", p.Args, p.Env, p.Cwd, tc.wantArgs, tc.wantEnv, tc.wantCwd)
			}
			if p.User.UID != tc.wantUser.UID || p.User.GID != tc.wantUser.GID || !slices.Equal(p.User.AdditionalGids, tc.wantUser.AdditionalGids) {
				t.Errorf("user %+v, want %+v", p.User, tc.wantUser)
			}
			if !p.NoNewPrivileges || !slices.Equal(p.Capabilities.Bounding, []string{"CAP_NET_BIND_SERVICE"}) || p.Capabilities.Ambient != nil {
				t.Errorf("privileges: noNewPrivileges %v capabilities %+v", p.NoNewPrivileges, p.Capabilities)
			}
			if got.Root.Path != rootfs || !got.Root.Readonly {
				t.Errorf("root %+v, want %s read-only", got.Root, rootfs)
			}
			var mem int64
			if m := got.Linux.Resources.Memory; m != nil {
				mem = *m.Limit
			}
			if mem != tc.wantMem {
				t.Errorf("memory limit %d, want %d", mem, tc.wantMem)
			}
			checkIsolation(t, got)
		})
	}
}

// checkIsolation checks the parts of a specification that every container
// shares: namespaces, the writable tmpfs mounts, a read-only /sys.
func checkIsolation(t *testing.T, s *specs.Spec) {
	t.Helper()
	var ns []specs.LinuxNamespaceType
	for _, n := range s.Linux.Namespaces {
		ns = append(ns, n.Type)
	}
	slices.Sort(ns)
	want := []specs.LinuxNamespaceType{specs.IPCNamespace, specs.MountNamespace, specs.PIDNamespace, specs.UTSNamespace}
	if !slices.Equal(ns, want) {
		t.Errorf("namespaces %v, want %v (and the host's network)", ns, want)
	}
	mounts := map[string]specs.Mount{}
	for _, m := range s.Mounts {
		mounts[m.Destination] = m
	}
	for _, d := range []string{"/tmp", "/run", "/dev/shm"} {
		if m := mounts[d]; m.Type != "tmpfs" || slices.Contains(m.Options, "ro") {
			t.Errorf("mount %s = %+v, want a writable tmpfs", d, m)
		}
	}
	if m := mounts["/sys"]; !slices.Contains(m.Options, "ro") {
		t.Errorf("/sys mounted %+v, want read-only", m)
	}
}

func TestMountsBindHostFiles(t *testing.T) {
	for _, tc := range []struct {
		files map[string]string
		want  []string
	}{
		{map[string]string{}, nil},
		{map[string]string{"etc/hosts": "", "etc/resolv.conf": ""}, []string{"/etc/hosts", "/etc/resolv.conf"}},
		{map[string]string{"etc/hosts": ""}, []string{"/etc/hosts"}},
	} {
		rootfs := writeRootfs(t, tc.files)
		var got []string
		for _, m := range mounts(rootfs, false) {
			if m.Type == "bind" {
				got = append(got, m.Destination)
			}
		}
		var want []string
		for _, f := range tc.want {
			if isRegular(f) { // the host must have it too
				want = append(want, f)
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("rootfs with %v: binds %v, want %v", tc.files, got, want)
		}
	}
}

func TestCgroupsPath(t *testing.T) {
	a, b := cgroupsPath("/run/w1", "fn"), cgroupsPath("/run/w2", "fn")
	if a == b || !strings.HasSuffix(a, "/fn") || !strings.HasPrefix(a, "/faasnet-") {
		t.Errorf("cgroupsPath: %q and %q", a, b)
	}
	if a != cgroupsPath("/run/w1", "fn") {
		t.Error("cgroupsPath is not a function of its input")
	}
}

func TestResolveUser(t *testing.T) {
	rootfs := writeRootfs(t, map[string]string{
		"etc/passwd": "# comment\nroot:x:0:0:root:/root:/bin/bash\nbroken\nnobody:x:65534:65534::/:/usr/sbin/nologin\nweb:x:33:33\n",
		"etc/group":  "root:x:0:\nwww:x:33:\nstaff:x:50:web,nobody\nnogroup:x:65534:\nbad:x:notanumber:web\n",
	})
	empty := t.TempDir()
	for _, tc := range []struct {
		rootfs, user string
		want         specs.User
		err          bool
	}{
		{rootfs, "", specs.User{}, false},
		{rootfs, "root", specs.User{}, false},
		{rootfs, "web", specs.User{UID: 33, GID: 33, AdditionalGids: []uint32{50}}, false},
		{rootfs, "nobody:staff", specs.User{UID: 65534, GID: 50}, false},
		{rootfs, "33", specs.User{UID: 33, GID: 33, AdditionalGids: []uint32{50}}, false},
		{rootfs, "1234:5678", specs.User{UID: 1234, GID: 5678}, false},
		{rootfs, "web:0", specs.User{UID: 33, GID: 0, AdditionalGids: []uint32{50}}, false},
		{empty, "1000", specs.User{UID: 1000}, false},
		{empty, "web", specs.User{}, true},
		{rootfs, "web:nosuchgroup", specs.User{}, true},
		{rootfs, ":0", specs.User{}, true},
		{rootfs, "0:", specs.User{}, true},
		{rootfs, "broken", specs.User{}, true},
	} {
		got, err := resolveUser(tc.rootfs, tc.user)
		if (err != nil) != tc.err {
			t.Errorf("resolveUser(%q) error %v, want error %v", tc.user, err, tc.err)
			continue
		}
		if got.UID != tc.want.UID || got.GID != tc.want.GID || !slices.Equal(got.AdditionalGids, tc.want.AdditionalGids) {
			t.Errorf("resolveUser(%q) = %+v, want %+v", tc.user, got, tc.want)
		}
	}
}

// FuzzResolveUser feeds arbitrary passwd and group files and user strings:
// resolution must not panic, and a numeric user always resolves to itself.
func FuzzResolveUser(f *testing.F) {
	f.Add([]byte("root:x:0:0::/root:/bin/sh\n"), []byte("root:x:0:\nstaff:x:50:root\n"), "root:staff")
	f.Add([]byte("a:b:c:d\n::::\n#x\n"), []byte("g:x:1:a,,a\n"), "12:g")
	f.Add([]byte{}, []byte{}, "")
	f.Fuzz(func(t *testing.T, passwd, group []byte, user string) {
		u, g, hasGroup := strings.Cut(user, ":")
		got, err := lookupUser(u, g, hasGroup, parseAccounts(bytes.NewReader(passwd)), parseAccounts(bytes.NewReader(group)))
		if uid, ok := parseID(u); ok && err == nil && got.UID != uid {
			t.Fatalf("user %q resolved to uid %d", user, got.UID)
		}
		if gid, ok := parseID(g); ok && hasGroup && err == nil && got.GID != gid {
			t.Fatalf("group %q resolved to gid %d", g, got.GID)
		}
	})
}

func TestParseList(t *testing.T) {
	for _, tc := range []struct {
		out  string
		want []string
		err  bool
	}{
		{"null", []string{}, false},
		{"[]", []string{}, false},
		{`[{"ociVersion":"1.0.2","id":"fn-a","pid":42,"status":"running","bundle":"/b"},{"id":"fn-b","status":"stopped"}]`, []string{"fn-a", "fn-b"}, false},
		{`[{"id":"../evil"},{"id":"ok"}]`, []string{"ok"}, false},
		{"garbage", nil, true},
	} {
		got, err := parseList([]byte(tc.out))
		if (err != nil) != tc.err || !slices.Equal(got, tc.want) {
			t.Errorf("parseList(%s) = %q, %v; want %q, error %v", tc.out, got, err, tc.want, tc.err)
		}
	}
}

// FuzzParseList checks that parseList never panics and returns only ids
// that are safe to pass to runc and to join to a path.
func FuzzParseList(f *testing.F) {
	f.Add([]byte(`[{"id":"a"},{"id":"b/c"}]`))
	f.Add([]byte("null"))
	f.Add([]byte(`{"id":"x"}`))
	f.Fuzz(func(t *testing.T, out []byte) {
		ids, err := parseList(out)
		for _, id := range ids {
			if err != nil || checkID(id) != nil {
				t.Fatalf("parseList(%q) = %q, %v", out, ids, err)
			}
		}
	})
}

func TestTailLines(t *testing.T) {
	for _, tc := range []struct {
		in   string
		cut  bool
		n    int
		want string
	}{
		{"", false, 3, ""},
		{"a\nb\nc\nd\n", false, 2, "c\nd"},
		{"a\nb", false, 5, "a\nb"},
		{"partial\nb\nc", true, 5, "b\nc"},
		{"a\n\n\n", false, 5, "a"},
	} {
		if got := tailLines([]byte(tc.in), tc.cut, tc.n); got != tc.want {
			t.Errorf("tailLines(%q, %v, %d) = %q, want %q", tc.in, tc.cut, tc.n, got, tc.want)
		}
	}
}
