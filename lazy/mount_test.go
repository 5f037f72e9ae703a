package lazy

import (
	"slices"
	"strings"
	"testing"
)

func TestMountpoints(t *testing.T) {
	table := strings.Join([]string{
		`22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/root rw`,
		`36 22 0:33 / /tmp/with\040space rw,nosuid,nodev - fuse.faasnet faasnet-lazy ro,user_id=0`,
		`37 22 0:34 / /tmp/back\134slash\011tab rw - tmpfs tmpfs rw`,
		`38 22 0:35 / /tmp/not\9octal\04 rw - tmpfs tmpfs rw`,
		`short line`,
		``,
	}, "\n")
	want := []string{"/", "/tmp/with space", "/tmp/back\\slash\ttab", `/tmp/not\9octal\04`}
	if got := mountpoints([]byte(table)); !slices.Equal(got, want) {
		t.Errorf("mountpoints = %q, want %q", got, want)
	}
}

func FuzzMountpoints(f *testing.F) {
	f.Add([]byte("36 22 0:33 / /a\\040b rw - fuse x rw\n"))
	f.Add([]byte("\\"))
	f.Add([]byte("1 2 3 4 \\777\\0"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, mp := range mountpoints(b) {
			if len(mp) == 0 {
				t.Fatalf("empty mountpoint from %q", b)
			}
		}
	})
}

func FuzzUnescapeOctal(f *testing.F) {
	for _, s := range []string{`a\040b`, `\134`, `\`, `\12`, `\400`, "plain"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u := unescapeOctal(s)
		if len(u) > len(s) {
			t.Fatalf("unescaping %q grew it to %q", s, u)
		}
		if !strings.Contains(s, `\`) && u != s {
			t.Fatalf("%q changed to %q without escapes", s, u)
		}
	})
}
