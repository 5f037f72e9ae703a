package api

import (
	"encoding/json"
	"testing"
)

// TestOldAndNewDocuments checks that a document from a manager without
// stripes reads as one stripe, and one with stripes as its stripes.
func TestOldAndNewDocuments(t *testing.T) {
	for _, tt := range []struct {
		name, assignment string
		parents          []string // "" for a nil parent
	}{
		{"old root", `{"function":"f","parent":null}`, []string{""}},
		{"old child", `{"function":"f","parent":{"vm":"a","addr":"h:1"}}`, []string{"a"}},
		{"striped", `{"function":"f","parent":{"vm":"a","addr":"h:1"},"parents":[{"vm":"a","addr":"h:1"},null,{"vm":"c","addr":"h:3"}],"block_size":65536}`, []string{"a", "", "c"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var a Assignment
			if err := json.Unmarshal([]byte(tt.assignment), &a); err != nil {
				t.Fatal(err)
			}
			ps := a.StripeParents()
			if len(ps) != len(tt.parents) {
				t.Fatalf("%d parents, want %d", len(ps), len(tt.parents))
			}
			for s, p := range ps {
				if (p == nil) != (tt.parents[s] == "") || p != nil && p.VM != tt.parents[s] {
					t.Errorf("stripe %d: parent %+v, want %q", s, p, tt.parents[s])
				}
			}
		})
	}
	var old Tree
	if err := json.Unmarshal([]byte(`{"function":"f","root":"a","height":1,"nodes":[{"vm":"a","children":["b"]},{"vm":"b","parent":"a","depth":1}]}`), &old); err != nil {
		t.Fatal(err)
	}
	if sts := old.StripeTrees(); len(sts) != 1 || *sts[0].Root != "a" || sts[0].Height != 1 || len(sts[0].Nodes) != 2 {
		t.Errorf("a tree without stripes reads as %+v", sts)
	}
	var striped Tree
	if err := json.Unmarshal([]byte(`{"function":"f","root":"a","stripes":[{"stripe":0,"root":"a"},{"stripe":1,"root":"b"}]}`), &striped); err != nil {
		t.Fatal(err)
	}
	if sts := striped.StripeTrees(); len(sts) != 2 || *sts[1].Root != "b" {
		t.Errorf("a tree of two stripes reads as %+v", sts)
	}
}

// TestAssignmentJSON pins the wire names of the striped fields.
func TestAssignmentJSON(t *testing.T) {
	p := &Peer{VM: "a", Addr: "h:1"}
	b, err := json.Marshal(Assignment{Function: "f", Parent: p, Parents: []*Peer{p, nil}, BlockSize: 1 << 16})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	json.Unmarshal(b, &m)
	ps, ok := m["parents"].([]any)
	if !ok || len(ps) != 2 || ps[1] != nil {
		t.Errorf("parents encoded as %v in %s", m["parents"], b)
	}
	if m["block_size"] != float64(1<<16) {
		t.Errorf("block_size encoded as %v in %s", m["block_size"], b)
	}
	b, _ = json.Marshal(FunctionRequest{Image: "i", Stripes: 3})
	if string(b) != `{"image":"i","stripes":3}` {
		t.Errorf("a definition of 3 stripes encodes as %s", b)
	}
}
