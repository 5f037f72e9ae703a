package store

import (
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/faasnet/faasnet/token"
)

// TestBoltReopen checks that a closed and reopened file holds what a Memory
// given the same batches holds.
func TestBoltReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	mem := NewMemory()
	g := gen{rand.New(rand.NewPCG(7, 7))}
	for round := range 4 {
		s, err := OpenBolt(path)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if got, want := mustLoad(t, s), mustLoad(t, mem); !reflect.DeepEqual(got, want) {
			t.Fatalf("round %d: reopened state:\n got %+v\nwant %+v", round, got, want)
		}
		for range 40 {
			b := g.batch()
			if err1, err2 := mem.Apply(t.Context(), b), s.Apply(t.Context(), b); (err1 == nil) != (err2 == nil) {
				t.Fatalf("round %d: Apply(%+v): memory %v, bolt %v", round, b, err1, err2)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatalf("round %d: Close: %v", round, err)
		}
	}
	if len(mustLoad(t, mem).Nodes) == 0 {
		t.Error("the batches left no nodes; the test checked little")
	}
}

func TestBoltLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	first, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	second, err := OpenBolt(path)
	if err == nil {
		second.Close()
		t.Fatal("second OpenBolt of a held file succeeded")
	}
	t.Log(err)
	if !errors.Is(err, bolterrors.ErrTimeout) || !strings.Contains(err.Error(), "another manager holds "+path) {
		t.Errorf("second OpenBolt = %q, want a timeout naming the holder of %s", err, path)
	}
	// The first holder is unaffected, and the file opens once it is released.
	mustApply(t, first, base)
	first.Close()
	third, err := OpenBolt(path)
	if err != nil {
		t.Fatalf("OpenBolt after release: %v", err)
	}
	defer third.Close()
	if got := mustLoad(t, third); !reflect.DeepEqual(got, baseState) {
		t.Errorf("state after release:\n got %+v\nwant %+v", got, baseState)
	}
}

// rawUpdate changes the file at path behind the store's back.
func rawUpdate(t *testing.T, path string, fn func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
}

func put(bucket ...string) func(key, val string) func(tx *bolt.Tx) error {
	return func(key, val string) func(tx *bolt.Tx) error {
		return func(tx *bolt.Tx) error {
			b := tx.Bucket([]byte(bucket[0]))
			for _, name := range bucket[1:] {
				b = b.Bucket([]byte(name))
			}
			if val == "" {
				_, err := b.CreateBucket([]byte(key))
				return err
			}
			return b.Put([]byte(key), []byte(val))
		}
	}
}

func TestBoltCorrupt(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(tx *bolt.Tx) error
		where []string // what the error must name
	}{
		{"vm not JSON", put("vms")("vm-a", "{not json"), []string{`"vms"`, `"vm-a"`}},
		{"vm under wrong key", put("vms")("vm-a", `{"name":"vm-z"}`), []string{`"vms"`, `"vm-a"`, `"vm-z"`}},
		{"vm of wrong type", put("vms")("vm-a", `{"name":"vm-a","capacity":"many"}`), []string{`"vms"`, `"vm-a"`}},
		{"bucket among vms", put("vms")("vm-c", ""), []string{`"vms"`, `"vm-c"`}},
		{"function not JSON", put("functions")("f1", "\x00"), []string{`"functions"`, `"f1"`}},
		{"node not JSON", put("nodes", "f1")("vm-a", "[]"), []string{`"nodes/f1"`, `"vm-a"`}},
		{"node of other function", put("nodes", "f1")("vm-a", `{"function":"f2","vm":"vm-a"}`), []string{`"nodes/f1"`, `"vm-a"`, `"f2"`}},
		{"value among node buckets", put("nodes")("f3", "x"), []string{`"nodes"`, `"f3"`}},
		{"nodes of missing function", put("nodes")("f3", ""), []string{`"nodes"`, `"f3"`}},
		{"bucket missing", func(tx *bolt.Tx) error { return tx.DeleteBucket([]byte("functions")) }, []string{`"functions"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			s, err := OpenBolt(path)
			if err != nil {
				t.Fatal(err)
			}
			mustApply(t, s, base)
			s.Close()
			rawUpdate(t, path, tt.edit)

			s, err = OpenBolt(path)
			if err != nil {
				t.Fatalf("OpenBolt: %v", err)
			}
			defer s.Close()
			_, err = s.Load(t.Context())
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Load = %v, want ErrCorrupt", err)
			}
			t.Log(err)
			for _, w := range append(tt.where, path) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Load error %q does not name %s", err, w)
				}
			}
		})
	}
}

func TestBoltOpenRefuses(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, path string)
		wantErr error // errors.Is target, or nil for any error
	}{
		{"newer schema", func(t *testing.T, path string) { schema(t, path, "2") }, ErrUnsupportedSchema},
		{"garbage schema", func(t *testing.T, path string) { schema(t, path, "one") }, ErrCorrupt},
		{"missing schema", func(t *testing.T, path string) {
			schema(t, path, "1")
			rawUpdate(t, path, func(tx *bolt.Tx) error { return tx.Bucket([]byte("meta")).Delete([]byte("schema")) })
		}, ErrCorrupt},
		{"not a bolt file", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte(strings.Repeat("not a database ", 1000)), 0o600); err != nil {
				t.Fatal(err)
			}
		}, nil},
		{"missing directory", func(t *testing.T, path string) {
			if err := os.Remove(filepath.Dir(path)); err != nil {
				t.Fatal(err)
			}
		}, os.ErrNotExist},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "sub", "state.db")
			if err := os.Mkdir(filepath.Dir(path), 0o700); err != nil {
				t.Fatal(err)
			}
			tt.prepare(t, path)
			s, err := OpenBolt(path)
			if err == nil {
				s.Close()
				t.Fatal("OpenBolt succeeded")
			}
			t.Log(err)
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("OpenBolt = %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("OpenBolt error %q does not name %s", err, path)
			}
		})
	}
}

// schema creates a store at path and then sets its schema version to v.
func schema(t *testing.T, path, v string) {
	t.Helper()
	s, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	rawUpdate(t, path, put("meta")("schema", v))
}

func TestBoltCurrentSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	if s.Path() != path {
		t.Errorf("Path() = %q, want %q", s.Path(), path)
	}
	s.Close()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.View(func(tx *bolt.Tx) error {
		if got := string(tx.Bucket([]byte("meta")).Get([]byte("schema"))); got != "1" {
			t.Errorf("schema = %q, want \"1\"", got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A file written before tokens and certificates were stored opens with
// them empty, keeps its state, and stores them from then on.
func TestBoltAddsTrustBuckets(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, s, base)
	s.Close()
	rawUpdate(t, path, func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket([]byte("tokens")); err != nil {
			return err
		}
		return tx.DeleteBucket([]byte("certs"))
	})
	s, err = OpenBolt(path)
	if err != nil {
		t.Fatalf("opening a file without the trust buckets: %v", err)
	}
	if got := mustLoad(t, s); !reflect.DeepEqual(got, baseState) {
		t.Fatalf("Load:\n got %+v\nwant %+v", got, baseState)
	}
	trust := Batch{PutTokens: []token.Record{tok("a0")}, PutCerts: []Cert{cert("01", "vm-a")}}
	mustApply(t, s, trust)
	s.Close()
	s, err = OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got := mustLoad(t, s)
	if !reflect.DeepEqual(got.Tokens, trust.PutTokens) || !reflect.DeepEqual(got.Certs, trust.PutCerts) {
		t.Errorf("after reopening: tokens %+v certs %+v", got.Tokens, got.Certs)
	}
}
