package pyimage

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The sources of the machine this was written on: the suite's archive,
// then its security archive, in deb822 format.
const debianSources = `Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
`

func TestFindDeb822(t *testing.T) {
	for _, tc := range []struct {
		name, in, suite, want string
	}{
		{"debian", debianSources, "bookworm", "http://deb.debian.org/debian"},
		{"security only", debianSources, "bookworm-security", "http://deb.debian.org/debian-security"},
		{"other suite", debianSources, "trixie", ""},
		{"disabled", "Enabled: no\nTypes: deb\nURIs: http://a/debian\nSuites: bookworm\nComponents: main\n", "bookworm", ""},
		{"source packages only", "Types: deb-src\nURIs: http://a/debian\nSuites: bookworm\nComponents: main\n", "bookworm", ""},
		{"no main", "Types: deb\nURIs: http://a/debian\nSuites: bookworm\nComponents: contrib\n", "bookworm", ""},
		{"https skipped", "Types: deb\nURIs: https://a/debian http://b/debian\nSuites: bookworm\nComponents: main\n", "bookworm", "http://b/debian"},
		{"continued field", "Types: deb\nURIs:\n http://mirror.local/debian\nSuites: bookworm\nComponents: main\n", "bookworm", "http://mirror.local/debian"},
		{"case of keys", "types: deb\nuris: http://c/debian\nsuites: bookworm\ncomponents: main contrib\n", "bookworm", "http://c/debian"},
		{"second stanza", "Types: deb\nURIs: http://x/nodistro\nSuites: nodistro\nComponents: main\n\nTypes: deb\nURIs: http://y/debian\nSuites: bookworm\nComponents: main\n", "bookworm", "http://y/debian"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := findDeb822(strings.NewReader(tc.in), tc.suite); got != tc.want {
				t.Errorf("findDeb822(%s) = %q, want %q", tc.suite, got, tc.want)
			}
		})
	}
}

func TestFindOneLine(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"plain", "deb http://deb.debian.org/debian bookworm main\n", "http://deb.debian.org/debian"},
		{"options", "deb [arch=amd64 signed-by=/k.gpg] http://m/debian bookworm main contrib\n", "http://m/debian"},
		{"comment", "# deb http://old/debian bookworm main\ndeb http://new/debian bookworm main # the mirror\n", "http://new/debian"},
		{"updates only", "deb http://m/debian bookworm-updates main\n", ""},
		{"deb-src", "deb-src http://m/debian bookworm main\n", ""},
		{"cloud sdk", "deb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n", ""},
		{"unterminated options", "deb [arch=amd64 http://m/debian bookworm main\n", ""},
		{"short", "deb http://m/debian bookworm\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := findOneLine(strings.NewReader(tc.in), "bookworm"); got != tc.want {
				t.Errorf("findOneLine = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestMirrorFromApt(t *testing.T) {
	etc := t.TempDir()
	d := filepath.Join(etc, "apt/sources.list.d")
	mustDo(t,
		os.MkdirAll(d, 0o755),
		os.WriteFile(filepath.Join(d, "b.sources"), []byte(debianSources), 0o644),
		os.WriteFile(filepath.Join(d, "a.list.disabled"), []byte("deb http://disabled/debian bookworm main\n"), 0o644),
	)
	if got := mirrorFromApt(etc, "bookworm"); got != "http://deb.debian.org/debian" {
		t.Errorf("from sources.list.d: %q", got)
	}
	mustDo(t, os.WriteFile(filepath.Join(etc, "apt/sources.list"), []byte("deb http://first/debian bookworm main\n"), 0o644))
	if got := mirrorFromApt(etc, "bookworm"); got != "http://first/debian" {
		t.Errorf("sources.list comes first: %q", got)
	}
	if got := mirrorFromApt(t.TempDir(), "bookworm"); got != "" {
		t.Errorf("without apt configuration: %q", got)
	}
}

// FuzzSources checks that the sources parsers never panic and only return
// plain-HTTP URIs.
func FuzzSources(f *testing.F) {
	f.Add(debianSources, "bookworm")
	f.Add("deb [a=b c] http://x/debian sid main\n", "sid")
	f.Add("Types: deb\nURIs:\n\n http://x\n", "")
	f.Add(" continuation first\nTypes deb\n", "x")
	f.Fuzz(func(t *testing.T, in, suite string) {
		for _, got := range []string{findDeb822(strings.NewReader(in), suite), findOneLine(strings.NewReader(in), suite)} {
			if got != "" && (!isHTTP(got) || strings.ContainsAny(got, " \t\n")) {
				t.Fatalf("parsed %q from %q", got, in)
			}
		}
	})
}
