package convert

import (
	"archive/tar"
	"bytes"
	"io"
	"math/rand"
	"path"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containerd/stargz-snapshotter/estargz"
)

// testChunkSize is small so that the large test file spans many chunks.
const testChunkSize = 64 << 10

// tentry is one tar entry of a test layer: a directory (name ends in "/"),
// a symlink (link set) or a regular file.
type tentry struct {
	name, body, link string
}

// testLayers is a small image, lowest layer first: an upper layer replaces
// a file, and one file spans many chunks.
func testLayers() [][]tentry {
	big := make([]byte, 16*testChunkSize+12345)
	rand.New(rand.NewSource(42)).Read(big) // incompressible
	return [][]tentry{
		{{name: "etc/"}, {name: "etc/passwd", body: "root:x:0:0:root\n"}, {name: "data/"}, {name: "data/big", body: string(big)}},
		{{name: "etc/"}, {name: "etc/passwd", body: "root:x:0:0:changed\n"}, {name: "bin/"}, {name: "bin/sh", body: "#!"}},
		{{name: "data/"}, {name: "data/small", body: "small\n"}, {name: "data/link", link: "small"}},
	}
}

func tarOf(t testing.TB, entries []tentry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(e.body)),
			ModTime: time.Date(2021, 7, 14, 10, 0, 0, 0, time.UTC), Format: tar.FormatPAX}
		switch {
		case strings.HasSuffix(e.name, "/"):
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
		case e.link != "":
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, e.link, 0o777
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("tar header %s: %v", e.name, err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// tarContents reads a tar archive into a map from cleaned name to a
// description of the entry (type, mode, link, contents), leaving out the
// eStargz landmark files.
func tarContents(t testing.TB, r io.Reader) map[string]string {
	t.Helper()
	out := map[string]string{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("reading tar: %v", err)
		}
		name := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
		if name == estargz.PrefetchLandmark || name == estargz.NoPrefetchLandmark {
			continue
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("reading %s: %v", name, err)
		}
		out[name] = strings.Join([]string{string(h.Typeflag), path.Clean(h.Linkname), string(rune(h.Mode)), string(body)}, "|")
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
