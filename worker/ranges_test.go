package worker

import (
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

func TestAutoRanges(t *testing.T) {
	r := autoRanges()
	if len(r) != 3*256 {
		t.Fatalf("%d ranges, want 768 /24s", len(r))
	}
	if r[0] != netip.MustParsePrefix("10.89.0.0/24") || r[1] != netip.MustParsePrefix("10.89.1.0/24") || r[256] != netip.MustParsePrefix("100.64.0.0/24") {
		t.Errorf("ranges start %v %v ... %v", r[0], r[1], r[256])
	}
	for i := 1; i < len(r); i++ {
		if r[i].Overlaps(r[i-1]) {
			t.Fatalf("%v overlaps %v", r[i], r[i-1])
		}
	}
}

// TestClaimRange checks that a range is one worker's at a time and that a
// dead worker's claim is taken over.
func TestClaimRange(t *testing.T) {
	old := rangesDir
	rangesDir = filepath.Join(t.TempDir(), "ranges")
	defer func() { rangesDir = old }()
	p := netip.MustParsePrefix("10.89.7.0/24")
	release, err := claimRange(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := claimRange(p); !errors.Is(err, errRangeTaken) {
		t.Fatalf("second claim while held: %v, want errRangeTaken", err)
	}
	release()
	release, err = claimRange(p)
	if err != nil {
		t.Fatalf("claim after release: %v", err)
	}
	release()

	// A claim whose process is gone: a finished child's pid.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	name := filepath.Join(rangesDir, "10.89.7.0_24")
	if err := os.WriteFile(name, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	release, err = claimRange(p)
	if err != nil {
		t.Fatalf("taking over a dead worker's claim: %v", err)
	}
	if b, _ := os.ReadFile(name); string(b) != strconv.Itoa(os.Getpid())+"\n" {
		t.Errorf("claim file holds %q, want this pid", b)
	}
	release()
}
