package pyimage

import (
	"bufio"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// DefaultMirror is the Debian archive used when apt's configuration names
// none for the suite.
const DefaultMirror = "http://deb.debian.org/debian"

// aptSources are the files apt reads its sources from, in apt's order.
func aptSources(etc string) []string {
	files := []string{filepath.Join(etc, "apt/sources.list")}
	for _, pattern := range []string{"*.list", "*.sources"} {
		m, _ := filepath.Glob(filepath.Join(etc, "apt/sources.list.d", pattern))
		files = append(files, m...)
	}
	slices.Sort(files[1:])
	return files
}

// mirrorFromApt returns the URI of the first enabled binary ("deb") source
// in the apt configuration under etc (normally /etc) that carries suite
// itself (not suite-updates or suite-security) with the component main, or
// "" if there is none. The machine's own mirror is what works here: it may
// be a proxy or a local copy when the public archive is out of reach.
func mirrorFromApt(etc, suite string) string {
	for _, name := range aptSources(etc) {
		f, err := os.Open(name)
		if err != nil {
			continue
		}
		var uri string
		if strings.HasSuffix(name, ".sources") {
			uri = findDeb822(io.LimitReader(f, 1<<20), suite)
		} else {
			uri = findOneLine(io.LimitReader(f, 1<<20), suite)
		}
		f.Close()
		if uri != "" {
			return uri
		}
	}
	return ""
}

// findOneLine searches a sources.list in the one-line format:
// "deb [options] URI SUITE COMPONENT...".
func findOneLine(r io.Reader, suite string) string {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "deb" {
			continue
		}
		f = f[1:]
		if len(f) > 0 && strings.HasPrefix(f[0], "[") { // options, which may hold spaces
			for len(f) > 0 && !strings.HasSuffix(f[0], "]") {
				f = f[1:]
			}
			if len(f) == 0 {
				continue
			}
			f = f[1:]
		}
		if len(f) >= 3 && f[1] == suite && slices.Contains(f[2:], "main") && isHTTP(f[0]) {
			return f[0]
		}
	}
	return ""
}

// findDeb822 searches a sources file in the deb822 format: stanzas of
// "Field: value" lines separated by blank lines, a value continued on lines
// that start with white space.
func findDeb822(r io.Reader, suite string) string {
	fields := map[string]string{}
	var last string
	check := func() string {
		defer clear(fields)
		if strings.EqualFold(fields["enabled"], "no") || !slices.Contains(strings.Fields(fields["types"]), "deb") {
			return ""
		}
		if !slices.Contains(strings.Fields(fields["suites"]), suite) || !slices.Contains(strings.Fields(fields["components"]), "main") {
			return ""
		}
		for _, uri := range strings.Fields(fields["uris"]) {
			if isHTTP(uri) {
				return uri
			}
		}
		return ""
	}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.TrimSpace(line) == "":
			if uri := check(); uri != "" {
				return uri
			}
		case strings.HasPrefix(line, "#"):
		case line[0] == ' ' || line[0] == '\t':
			if last != "" {
				fields[last] += " " + strings.TrimSpace(line)
			}
		default:
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				last = ""
				continue
			}
			last = strings.ToLower(strings.TrimSpace(k))
			fields[last] = strings.TrimSpace(v)
		}
	}
	return check()
}

// isHTTP reports whether uri is plain HTTP: apt inside a minbase system
// has no CA certificates to speak HTTPS with.
func isHTTP(uri string) bool {
	return strings.HasPrefix(uri, "http://")
}
