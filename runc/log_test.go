package runc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestLogWriterKeepsTheNewest writes ten times the limit in writes of
// several sizes: the two files never pass half the limit each, and
// together they end with the newest bytes.
func TestLogWriterKeepsTheNewest(t *testing.T) {
	for _, chunk := range []int{1, 7, 100, 5000} {
		t.Run(strconv.Itoa(chunk), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "container.log")
			const limit = 1000
			w, err := newLogWriter(path, limit)
			if err != nil {
				t.Fatal(err)
			}
			var all bytes.Buffer
			for i := 0; all.Len() < 10*limit; i++ {
				p := bytes.Repeat([]byte{byte('a' + i%26)}, chunk)
				n, err := w.Write(p)
				if err != nil || n != len(p) {
					t.Fatalf("Write: %d, %v", n, err)
				}
				all.Write(p)
			}
			w.Close()
			cur, _ := os.ReadFile(path)
			old, _ := os.ReadFile(path + rotatedSuffix)
			if len(cur) > limit/2 || len(old) > limit/2 {
				t.Fatalf("log files of %d and %d bytes, want at most %d each", len(cur), len(old), limit/2)
			}
			kept := append(old, cur...)
			if len(kept) < limit/2 || !bytes.HasSuffix(all.Bytes(), kept) {
				t.Errorf("kept %d bytes that are not the newest output", len(kept))
			}
		})
	}
}

// TestContainerLogIsCapped starts a container that writes 1.5 MB to its
// output before it serves, with a 64 KiB log limit: the log on disk stays
// within it and ends with the newest line.
func TestContainerLogIsCapped(t *testing.T) {
	r := newRuntime(t)
	r.MaxLogSize = 64 << 10
	rootfs := testRootfs(t)
	port := freePort(t)
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	defer cancel()
	const lines = 100000 // 20 bytes each
	c, err := r.Start(ctx, Spec{ID: containerID(t), Rootfs: rootfs, Command: []string{"/server", "-spam", strconv.Itoa(lines)}, Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop(ctx)
	if _, err := c.WaitReady(ctx, "http://127.0.0.1:"+strconv.Itoa(port)+"/healthz"); err != nil {
		t.Fatal(err)
	}
	// The server prints "listening on" after its spam; the copier may not
	// have written it yet.
	deadline := time.Now().Add(testTimeout)
	for !strings.Contains(c.LogTail(), "listening on") {
		if time.Now().After(deadline) {
			t.Fatalf("the log never got the server's last line; tail %q", c.LogTail())
		}
		time.Sleep(20 * time.Millisecond) // polling the copier's output, with a deadline
	}
	var total int64
	for _, p := range []string{c.LogPath(), c.LogPath() + rotatedSuffix} {
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) && p != c.LogPath() {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		total += fi.Size()
	}
	if total > r.MaxLogSize {
		t.Errorf("the log takes %d bytes on disk, limit %d", total, r.MaxLogSize)
	}
	if want := fmt.Sprintf("spam line %09d", lines-1); !strings.Contains(c.LogTail(), want) {
		t.Errorf("the log's tail lacks the newest spam line %q", want)
	}
}
