package store

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The crash test runs its writer in a child process: the test binary itself,
// switched by these variables into TestCrashChild.
const (
	crashPathEnv = "FAASNET_STORE_CRASH_PATH"
	crashFromEnv = "FAASNET_STORE_CRASH_FROM"
)

// crashBatch is the k-th batch (k >= 1) of the crash test's history. It grows
// a chain of nodes, prunes its old end, and records k as the function's
// generation, so the loaded state tells which batch was the last applied.
func crashBatch(k int) Batch {
	b := Batch{
		PutVMs:       []VM{{Name: fmt.Sprint("vm-", k), Addr: "127.0.0.1:1", Capacity: k}},
		PutFunctions: []Function{{Name: "f", Image: "img", Generation: uint64(k)}},
		PutNodes:     []Node{{Function: "f", VM: fmt.Sprint("vm-", k), Parent: fmt.Sprint("vm-", k-1), Generation: uint64(k)}},
	}
	if old := k - 3; old >= 1 {
		b.DeleteVMs = []string{fmt.Sprint("vm-", old)}
		b.DeleteNodes = []NodeKey{{"f", fmt.Sprint("vm-", old)}}
	}
	return b
}

// TestCrashChild is the child of TestCrashDurability: it applies crash
// batches from $FAASNET_STORE_CRASH_FROM on and reports each one applied,
// until it is killed.
func TestCrashChild(t *testing.T) {
	path := os.Getenv(crashPathEnv)
	if path == "" {
		t.Skip("runs only as the child process of TestCrashDurability")
	}
	from, err := strconv.Atoi(os.Getenv(crashFromEnv))
	if err != nil {
		t.Fatal(err)
	}
	s, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	// Bounded so that a child whose parent vanished still ends; a write to
	// a closed stdout usually ends it sooner.
	for k := from; k < from+1_000_000; k++ {
		if err := s.Apply(context.Background(), crashBatch(k)); err != nil {
			t.Fatal(err)
		}
		fmt.Printf("applied %d\n", k)
	}
}

// TestCrashDurability kills a writer with SIGKILL at a random point, several
// times over the same file, and checks that the file opens cleanly and holds
// exactly the state after some batch no earlier than the last one the writer
// reported as applied.
func TestCrashDurability(t *testing.T) {
	if os.Getenv(crashPathEnv) != "" {
		t.Skip("in the child")
	}
	rounds := 4
	if testing.Short() {
		rounds = 1
	}
	path := filepath.Join(t.TempDir(), "state.db")
	r := rand.New(rand.NewPCG(42, 0))
	ref := NewMemory() // the state after batches 1..applied
	applied := 0
	for round := range rounds {
		reported := runCrashChild(t, path, applied+1, 1+r.IntN(50))
		checkFile(t, path)

		s, err := OpenBolt(path)
		if err != nil {
			t.Fatalf("round %d: reopen after kill: %v", round, err)
		}
		got := mustLoad(t, s)
		s.Close()
		last := 0
		if len(got.Functions) == 1 {
			last = int(got.Functions[0].Generation)
		}
		if last < reported {
			t.Fatalf("round %d: file holds batches up to %d, but %d was reported applied", round, last, reported)
		}
		for ; applied < last; applied++ {
			mustApply(t, ref, crashBatch(applied+1))
		}
		if want := mustLoad(t, ref); !reflect.DeepEqual(got, want) {
			t.Fatalf("round %d: state is not the state after batch %d:\n got %+v\nwant %+v", round, last, got, want)
		}
		t.Logf("round %d: killed after %d reported, %d on disk", round, reported, last)
	}
}

// runCrashChild starts a child writing batches from `from` on, kills it once
// it has reported lines batches, and returns the last batch it reported.
func runCrashChild(t *testing.T, path string, from, lines int) int {
	t.Helper()
	// The deadline only guards against a child that hangs; it is no
	// synchronisation.
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestCrashChild$")
	cmd.Env = append(os.Environ(), crashPathEnv+"="+path, crashFromEnv+"="+strconv.Itoa(from))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	reported, n := 0, 0
	sc := bufio.NewScanner(out)
	for n < lines && sc.Scan() {
		k, ok := strings.CutPrefix(sc.Text(), "applied ")
		if !ok {
			continue
		}
		v, err := strconv.Atoi(k)
		if err != nil || v != from+n {
			t.Fatalf("child reported %q, want applied %d", sc.Text(), from+n)
		}
		reported, n = v, n+1
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	if n < lines {
		t.Fatalf("child stopped after %d of %d reports: %v\n%s", n, lines, err, stderr.Bytes())
	}
	return reported
}

// checkFile runs bbolt's consistency check over the file.
func checkFile(t *testing.T, path string) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: LockTimeout})
	if err != nil {
		t.Fatalf("open after kill: %v", err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			t.Errorf("bbolt check after kill: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
