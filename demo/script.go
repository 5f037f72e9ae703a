package demo

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/cluster"
)

// scriptPause is the time between the live view script's steps: long
// enough to watch each one settle (tests shorten it).
var scriptPause = 5 * time.Second

// runScript gives the live view something to show after the scale-out:
// an interior VM dies (its children move), a leaf is released (scale in),
// and the function scales out again. It stops early when ctx ends.
func runScript(ctx context.Context, out io.Writer, cp cluster.ControlPlane, fn string) error {
	steps := []struct {
		say string
		do  func(api.Tree) (string, error)
	}{
		{"kill %s, an interior VM: the manager moves its children to new parents", func(t api.Tree) (string, error) {
			vm := pick(t, true)
			return vm, cp.Kill(ctx, vm)
		}},
		{"scale in: release %s, a leaf", func(t api.Tree) (string, error) {
			vm := pick(t, false)
			return vm, cp.Admin.Release(ctx, fn, vm)
		}},
		{"scale out again by one VM: %s joins and fetches from its new parent", func(api.Tree) (string, error) {
			r, err := cp.Admin.Scale(ctx, fn, api.ScaleRequest{Count: 1})
			if err != nil || len(r.Added) == 0 {
				return "a VM", err
			}
			return r.Added[0].VM, nil
		}},
	}
	fmt.Fprintf(out, "a short script follows, a step every %v (Ctrl-C ends the demo at any time):\n", scriptPause)
	for _, s := range steps {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(scriptPause):
		}
		t, err := cp.Admin.Tree(ctx, fn)
		if err != nil {
			return err
		}
		vm, err := s.do(t)
		if err != nil {
			return fmt.Errorf("%s: %w", fmt.Sprintf(s.say, vm), err)
		}
		fmt.Fprintf(out, "  "+s.say+"\n", vm)
	}
	fmt.Fprintln(out, "the script is done; the cluster stays up until Ctrl-C")
	return nil
}

// pick returns a VM of t with children below the root (interior), or a
// leaf; the root if there is no such VM.
func pick(t api.Tree, interior bool) string {
	for _, n := range t.Nodes {
		if n.Parent != nil && (len(n.Children) > 0) == interior {
			return n.VM
		}
	}
	if t.Root != nil {
		return *t.Root
	}
	return ""
}
