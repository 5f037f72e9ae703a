package container

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/faasnet/faasnet/internal/testenv"
)

// ledger is an Account hook that sums what is charged and not released.
type ledger struct {
	mu  sync.Mutex
	out int64
}

func (l *ledger) account(n int64) func() {
	l.mu.Lock()
	l.out += n
	l.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			l.out -= n
			l.mu.Unlock()
		})
	}
}

func (l *ledger) outstanding() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.out
}

// fileBytes sums the regular files below dir.
func fileBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			n += fi.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRunAccountsDisk runs a function over each kind of root filesystem
// with an Account hook: while it runs, its unpacked files and its log at
// the limit are charged; Stop, or a failed start, gives them back.
func TestRunAccountsDisk(t *testing.T) {
	testenv.NeedContainers(t)
	img := newImage(t)
	const logLimit = 1 << 20
	for _, tc := range []struct {
		name string
		lazy bool
	}{{"unpacked", false}, {"lazy", true}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			var l ledger
			h := New(Config{Dir: dir, VM: fmt.Sprintf("t%d", os.Getpid()), Logger: testLogger(),
				Limits: Limits{Log: logLimit}, Account: l.account})
			r, err := h.Run(t.Context(), with(Function{Name: "fn", ReadinessPath: "healthz"}, img, tc.lazy))
			if err != nil {
				t.Fatal(err)
			}
			want := int64(logLimit)
			if !tc.lazy {
				want += fileBytes(t, filepath.Join(dir, "rootfs", "fn"))
			}
			if got := l.outstanding(); got != want {
				t.Errorf("charged %d bytes while running, want %d", got, want)
			}
			if err := r.Stop(t.Context()); err != nil {
				t.Fatal(err)
			}
			if got := l.outstanding(); got != 0 {
				t.Errorf("%d bytes still charged after Stop", got)
			}
			_, err = h.Run(t.Context(), with(Function{Name: "fn", Command: []string{"/no/such/server"}, ReadinessPath: "healthz"}, img, tc.lazy))
			if err == nil {
				t.Fatal("a function without its command started")
			}
			if got := l.outstanding(); got != 0 {
				t.Errorf("%d bytes still charged after a failed start", got)
			}
		})
	}
}
