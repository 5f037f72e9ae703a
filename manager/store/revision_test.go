package store

import (
	"context"
	"path/filepath"
	"testing"
)

// The revision is stored with a batch and replaced only by a later one
// that names one; a batch of nothing else is not empty.
func TestRevision(t *testing.T) {
	ctx := context.Background()
	for name, setup := range backends() {
		t.Run(name, func(t *testing.T) {
			s := setup(t)(t)
			if got := mustLoad(t, s).Revision; got != 0 {
				t.Fatalf("a new store has revision %d", got)
			}
			steps := []struct {
				b    Batch
				want uint64
			}{
				{Batch{Revision: 7}, 7},
				{Batch{PutVMs: []VM{{Name: "a", Addr: "127.0.0.1:1", Capacity: 1}}}, 7},
				{Batch{PutFunctions: []Function{{Name: "f", Image: "r/i:1"}}, Revision: 9}, 9},
			}
			for i, st := range steps {
				if st.b.Empty() {
					t.Fatalf("step %d: batch counts as empty", i)
				}
				if err := s.Apply(ctx, st.b); err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if got := mustLoad(t, s).Revision; got != st.want {
					t.Fatalf("step %d: revision %d, want %d", i, got, st.want)
				}
			}
			// A refused batch leaves the revision alone.
			if err := s.Apply(ctx, Batch{PutNodes: []Node{{Function: "nope", VM: "a"}}, Revision: 11}); err == nil {
				t.Fatal("a node of an unknown function was accepted")
			}
			if got := mustLoad(t, s).Revision; got != 9 {
				t.Fatalf("revision %d after a refused batch, want 9", got)
			}
		})
	}
}

func TestBoltRevisionSurvivesReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(context.Background(), Batch{Revision: 1 << 62}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := mustLoad(t, s).Revision; got != 1<<62 {
		t.Fatalf("revision %d after reopening, want %d", got, uint64(1<<62))
	}
}
