package manager

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/bits"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/faasnet/faasnet/manager/store"
)

// This file checks the API contract of DESIGN.md section 3 as a client that
// knows nothing but that page: raw HTTP, JSON decoded into plain maps.

type rawClient struct {
	t    *testing.T
	base string
}

func (c rawClient) call(method, path string, body any) (int, map[string]any) {
	c.t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, c.base+path, r)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var out map[string]any
	data, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(data, &out); err != nil {
		c.t.Fatalf("%s %s: answer %d is not a JSON object: %q", method, path, resp.StatusCode, data)
	}
	if resp.StatusCode >= 400 {
		if _, ok := out["error"].(string); !ok {
			c.t.Fatalf("%s %s: error answer %d without an error field: %q", method, path, resp.StatusCode, data)
		}
	}
	if resp.StatusCode >= 500 {
		c.t.Fatalf("%s %s: server error %d: %s", method, path, resp.StatusCode, data)
	}
	return resp.StatusCode, out
}

// checkTree verifies one tree answer: binary, links consistent, AVL
// balanced, height within one of floor(log2 n), and returns parent by VM.
func checkTree(t *testing.T, tree map[string]any) map[string]string {
	t.Helper()
	nodes := tree["nodes"].([]any)
	n := len(nodes)
	parent := map[string]string{}
	children := map[string][]string{}
	depth := map[string]int{}
	for _, x := range nodes {
		nd := x.(map[string]any)
		vm := nd["vm"].(string)
		if p, ok := nd["parent"].(string); ok {
			parent[vm] = p
		} else if nd["parent"] != nil {
			t.Fatalf("node %s: parent is %v", vm, nd["parent"])
		}
		for _, c := range nd["children"].([]any) {
			children[vm] = append(children[vm], c.(string))
		}
		depth[vm] = int(nd["depth"].(float64))
		if len(children[vm]) > 2 {
			t.Fatalf("node %s has %d children", vm, len(children[vm]))
		}
	}
	if n == 0 {
		if tree["root"] != nil || tree["height"].(float64) != 0 {
			t.Fatalf("empty tree answer: %v", tree)
		}
		return parent
	}
	root, _ := tree["root"].(string)
	if _, ok := parent[root]; ok || root == "" {
		t.Fatalf("root %q is missing or has a parent", root)
	}
	for vm, cs := range children {
		for _, c := range cs {
			if parent[c] != vm {
				t.Fatalf("%s lists child %s whose parent is %q", vm, c, parent[c])
			}
		}
	}
	var height func(vm string, d int) int // -1 for no node
	seen := 0
	maxDepth := 0
	height = func(vm string, d int) int {
		seen++
		if depth[vm] != d {
			t.Fatalf("%s: depth %d, counted %d", vm, depth[vm], d)
		}
		maxDepth = max(maxDepth, d)
		h := [2]int{-1, -1}
		for i, c := range children[vm] {
			h[i] = height(c, d+1)
		}
		if h[0]-h[1] > 1 || h[1]-h[0] > 1 {
			t.Fatalf("%s is unbalanced: subtree heights %d and %d", vm, h[0], h[1])
		}
		return 1 + max(h[0], h[1])
	}
	height(root, 0)
	if seen != n {
		t.Fatalf("%d of %d nodes reachable from the root", seen, n)
	}
	opt := bits.Len(uint(n)) - 1
	if int(tree["height"].(float64)) != maxDepth || maxDepth > opt+1 {
		t.Fatalf("height %v (deepest %d) for %d VMs; optimum %d", tree["height"], maxDepth, n, opt)
	}
	return parent
}

func startManager(t *testing.T, path string) (*Manager, *httptest.Server, func()) {
	t.Helper()
	st, err := store.OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	m, err := New(context.Background(), st, Options{VMTimeout: time.Hour, Pinner: fakePins})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(m.Handler())
	return m, srv, func() { srv.Close(); m.Close(); st.Close() }
}

func TestAPIContractUnderRandomOperations(t *testing.T) {
	vms, steps := 1000, 3000
	if testing.Short() {
		vms, steps = 200, 600
	}
	path := filepath.Join(t.TempDir(), "manager.db")
	_, srv, stop := startManager(t, path)
	c := rawClient{t, srv.URL + "/api/v1"}
	addr := map[string]string{}
	for i := range vms {
		name := fmt.Sprintf("vm-%04d", i)
		addr[name] = fmt.Sprintf("127.0.0.%d:%d", 1+i%200, 20000+i)
		body := map[string]any{"addr": addr[name]}
		if i%10 == 0 {
			body["capacity"] = map[string]any{"functions": 2}
		}
		if code, out := c.call("PUT", "/vms/"+name, body); code != 200 {
			t.Fatalf("register %s: %d %v", name, code, out)
		}
	}
	fns := []string{"fa", "fb", "fc", "fd"}
	for _, f := range fns {
		if code, out := c.call("PUT", "/functions/"+f, map[string]any{"image": "127.0.0.1:5000/" + f + ":v1"}); code != 200 {
			t.Fatalf("function %s: %d %v", f, code, out)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	members := map[string]map[string]bool{}
	for _, f := range fns {
		members[f] = map[string]bool{}
	}
	alive := map[string]bool{}
	for vm := range addr {
		alive[vm] = true
	}
	pickVM := func() string { return fmt.Sprintf("vm-%04d", rng.IntN(vms)) }
	for step := range steps {
		f := fns[rng.IntN(len(fns))]
		switch op := rng.IntN(10); {
		case op < 4: // scale by count
			code, out := c.call("POST", "/functions/"+f+"/scale", map[string]any{"count": 1 + rng.IntN(20)})
			if code == 200 {
				for _, a := range out["added"].([]any) {
					members[f][a.(map[string]any)["vm"].(string)] = true
				}
			} else if code != 409 {
				t.Fatalf("step %d: scale by count: %d %v", step, code, out)
			}
		case op < 6: // scale by name
			var list []string
			for range 1 + rng.IntN(5) {
				list = append(list, pickVM())
			}
			code, out := c.call("POST", "/functions/"+f+"/scale", map[string]any{"vms": list})
			if code == 200 {
				for _, vm := range list {
					members[f][vm] = true
				}
			} else if code != 409 && code != 404 && code != 400 {
				t.Fatalf("step %d: scale %v: %d %v", step, list, code, out)
			}
		case op < 9: // release
			vm := pickVM()
			code, out := c.call("DELETE", "/functions/"+f+"/vms/"+vm, nil)
			if members[f][vm] != (code == 200) || (code != 200 && code != 404) {
				t.Fatalf("step %d: release %s (member %v): %d %v", step, vm, members[f][vm], code, out)
			}
			delete(members[f], vm)
		default: // a VM leaves, then comes back
			vm := pickVM()
			code, _ := c.call("DELETE", "/vms/"+vm, nil)
			if code != 200 {
				t.Fatalf("step %d: leave %s: %d", step, vm, code)
			}
			for _, f := range fns {
				delete(members[f], vm)
			}
			c.call("PUT", "/vms/"+vm, map[string]any{"addr": addr[vm]})
		}
		if step%100 == 0 || step == steps-1 {
			checkAll(t, c, fns, members, addr)
		}
	}
	want := map[string]map[string]any{}
	for _, f := range fns {
		_, want[f] = c.call("GET", "/functions/"+f+"/tree", nil)
	}
	// Restart from the same file: nothing changes.
	stop()
	_, srv2, stop2 := startManager(t, path)
	defer stop2()
	c2 := rawClient{t, srv2.URL + "/api/v1"}
	for _, f := range fns {
		_, got := c2.call("GET", "/functions/"+f+"/tree", nil)
		if fmt.Sprint(got) != fmt.Sprint(want[f]) {
			t.Fatalf("tree of %s changed across a restart", f)
		}
	}
	checkAll(t, c2, fns, members, addr)
}

// checkAll checks every tree and every member's heartbeat against it.
func checkAll(t *testing.T, c rawClient, fns []string, members map[string]map[string]bool, addr map[string]string) {
	t.Helper()
	assignments := map[string]map[string]any{} // vm -> fn -> assignment
	for _, f := range fns {
		code, tree := c.call("GET", "/functions/"+f+"/tree", nil)
		if code != 200 {
			t.Fatalf("tree %s: %d", f, code)
		}
		parent := checkTree(t, tree)
		nodes := tree["nodes"].([]any)
		if len(nodes) != len(members[f]) {
			t.Fatalf("tree %s has %d VMs, the client added %d", f, len(nodes), len(members[f]))
		}
		for _, x := range nodes {
			vm := x.(map[string]any)["vm"].(string)
			if !members[f][vm] {
				t.Fatalf("tree %s holds %s, which the client never added", f, vm)
			}
			if assignments[vm] == nil {
				assignments[vm] = map[string]any{}
				_, hb := c.call("POST", "/vms/"+vm+"/heartbeat", nil)
				for _, a := range hb["assignments"].([]any) {
					am := a.(map[string]any)
					assignments[vm][am["function"].(string)] = am
				}
			}
			a, ok := assignments[vm][f].(map[string]any)
			if !ok {
				t.Fatalf("%s is in the tree of %s but its heartbeat does not say so", vm, f)
			}
			p, hasParent := parent[vm]
			switch ap := a["parent"].(type) {
			case nil:
				if hasParent {
					t.Fatalf("%s/%s: heartbeat says root, tree says parent %s", f, vm, p)
				}
			case map[string]any:
				if ap["vm"] != p || ap["addr"] != addr[p] {
					t.Fatalf("%s/%s: heartbeat parent %v, tree parent %s at %s", f, vm, ap, p, addr[p])
				}
			}
		}
	}
}
