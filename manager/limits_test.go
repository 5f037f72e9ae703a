package manager

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/manager/store"
)

// TestFunctionLimits creates functions with each limit set well and badly:
// a bad one is a 400 naming its field, and leaves no function behind. A spec
// that asks for a looser sandbox is refused too.
func TestFunctionLimits(t *testing.T) {
	ctx := context.Background()
	m := newTestManager(t, store.NewMemory(), &clock{now: time.Unix(1000, 0)})
	for _, tc := range []struct {
		spec string
		want string // "" accepts; else the 400's message contains it
	}{
		{`{}`, ""},
		{`{"memory":"256MiB","cpu":"0.5","pids":64,"tmp":"32MiB","run":"1MiB","nofile":4096}`, ""},
		{`{"cpu":2}`, ""},
		{`{"cpu":"250m"}`, ""},
		{`{"memory":"64GiB","cpu":64,"pids":32768,"nofile":1048576,"tmp":"64GiB"}`, ""},
		{`{"memory":"16MiB"}`, ""}, // the default tmp and run shrink to fit

		{`{"memory":"0"}`, "spec.memory \"0\": a function cannot be unlimited"},
		{`{"memory":"unlimited"}`, "spec.memory \"unlimited\": a function cannot be unlimited"},
		{`{"memory":"lots"}`, "spec.memory: invalid size"},
		{`{"memory":"256Mb"}`, "spec.memory: invalid size"},
		{`{"memory":"-1"}`, "spec.memory \"-1\": a function cannot be unlimited"},
		{`{"memory":"-5MiB"}`, "spec.memory: invalid size"},
		{`{"memory":"65GiB"}`, "spec.memory \"65GiB\" is out of range: want 8MiB to 64GiB"},
		{`{"memory":"1MiB"}`, "spec.memory \"1MiB\" is out of range"},
		{`{"cpu":"0"}`, "spec.cpu \"0\": a function cannot be unlimited"},
		{`{"cpu":0}`, "spec.cpu \"0\": a function cannot be unlimited"},
		{`{"cpu":-1}`, "spec.cpu \"-1\": a function cannot be unlimited"},
		{`{"cpu":-0.5}`, "spec.cpu \"-0.5\": want cores"},
		{`{"cpu":"65"}`, "spec.cpu \"65\" is out of range: want 10m to 64 cores"},
		{`{"cpu":"5m"}`, "spec.cpu \"5m\" is out of range"},
		{`{"cpu":"0.0005"}`, "spec.cpu \"0.0005\": finer than a millicore"},
		{`{"cpu":"1e3"}`, "spec.cpu \"1e3\": want cores"},
		{`{"cpu":"2 cores"}`, "spec.cpu \"2 cores\": want cores"},
		{`{"cpu":true}`, "cpu"},
		{`{"pids":0}`, "spec.pids 0: a function cannot be unlimited"},
		{`{"pids":-1}`, "spec.pids -1 is out of range: want 8 to 32768"},
		{`{"pids":32769}`, "spec.pids 32769 is out of range"},
		{`{"pids":"64"}`, "pids"},
		{`{"pids":1.5}`, "pids"},
		{`{"nofile":0}`, "spec.nofile 0: a function cannot be unlimited"},
		{`{"nofile":1048577}`, "spec.nofile 1048577 is out of range: want 16 to 1048576"},
		{`{"tmp":"0"}`, "spec.tmp \"0\": a function cannot be unlimited"},
		{`{"tmp":"100KiB"}`, "spec.tmp \"100KiB\" is out of range: want 1MiB to 512MiB"},
		{`{"tmp":"1GiB"}`, "spec.tmp \"1GiB\" is out of range: want 1MiB to 512MiB"},
		{`{"memory":"64MiB","run":"128MiB"}`, "spec.run \"128MiB\" is out of range: want 1MiB to 64MiB"},
		{`{"run":"5Gbit"}`, "spec.run: invalid size"},
		// Nothing in a spec loosens the sandbox.
		{`{"seccomp":"unconfined"}`, `unknown field "seccomp"`},
		{`{"privileged":true}`, `unknown field "privileged"`},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			_, err := m.PutFunction(ctx, "f", api.FunctionRequest{Image: "reg/a:1", Spec: []byte(tc.spec)})
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if err := m.DeleteFunction(ctx, "f"); err != nil {
					t.Fatal(err)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) || e.Code != http.StatusBadRequest || !strings.Contains(e.Msg, tc.want) {
				t.Fatalf("PutFunction: %v, want a 400 containing %q", err, tc.want)
			}
			if len(m.Functions()) != 0 {
				t.Errorf("a refused spec left functions %v", m.Functions())
			}
		})
	}
}
