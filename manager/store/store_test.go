package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/faasnet/faasnet/internal/testenv"
	"github.com/faasnet/faasnet/token"
)

// opener returns a fresh, empty Store that the test owns.
type opener func(t *testing.T) Store

// backend sets up one implementation for test t (starting what it needs, or
// skipping t) and returns its opener.
type backend func(t *testing.T) opener

// backends lists every implementation the conformance suite runs against.
func backends() map[string]backend {
	return map[string]backend{
		"memory": func(*testing.T) opener {
			return func(t *testing.T) Store {
				s := NewMemory()
				t.Cleanup(func() { s.Close() })
				return s
			}
		},
		"bolt":  func(*testing.T) opener { return openTempBolt },
		"etcd1": etcdBackend(1),
		"etcd3": etcdBackend(3),
	}
}

func openTempBolt(t *testing.T) Store {
	t.Helper()
	s, err := OpenBolt(t.TempDir() + "/state.db")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// etcdBackend starts a real etcd of members members for the test (one
// cluster for all its stores) and opens each store under a prefix of its
// own, with a client of its own.
func etcdBackend(members int) backend {
	return func(t *testing.T) opener {
		cluster := testenv.StartEtcd(t, members)
		var n atomic.Int64
		return func(t *testing.T) Store {
			t.Helper()
			return openEtcd(t, cluster.Endpoints(), fmt.Sprintf("/test/%d/", n.Add(1)))
		}
	}
}

func openEtcd(t testing.TB, endpoints []string, prefix string) *Etcd {
	t.Helper()
	s, err := OpenEtcd(t.Context(), EtcdOptions{Endpoints: endpoints, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestStore(t *testing.T) {
	for name, setup := range backends() {
		t.Run(name, func(t *testing.T) { testStore(t, setup(t)) })
	}
}

// testStore is the conformance suite every Store must pass.
func testStore(t *testing.T, open opener) {
	t.Run("Apply", func(t *testing.T) { testApply(t, open) })
	t.Run("Model", func(t *testing.T) { testModel(t, open) })
	t.Run("Isolation", func(t *testing.T) { testIsolation(t, open) })
	t.Run("Canceled", func(t *testing.T) { testCanceled(t, open) })
	t.Run("Closed", func(t *testing.T) { testClosed(t, open) })
	t.Run("Concurrent", func(t *testing.T) { testConcurrent(t, open) })
	t.Run("Stripes", func(t *testing.T) { testStripes(t, open) })
}

func vm(name string, images ...string) VM {
	return VM{Name: name, Addr: "127.0.0.1:7000", Capacity: 20, Images: images}
}

func fn(name string, gen uint64) Function {
	return Function{Name: name, Image: "registry.test/" + name + ":1", Generation: gen}
}

var trustTime = time.Unix(1_800_000_000, 0).UTC()

func tok(id string) token.Record {
	return token.Record{ID: id, Role: token.Read, Hash: strings.Repeat("ab", 32), Created: trustTime}
}

func revokedTok(id string) token.Record {
	r := tok(id)
	r.Revoked = trustTime.Add(time.Hour)
	return r
}

func cert(serial, vm string) Cert {
	return Cert{Serial: serial, VM: vm, Key: strings.Repeat("cd", 32), NotAfter: trustTime.Add(24 * time.Hour)}
}

func revokedCert(serial, vm string) Cert {
	c := cert(serial, vm)
	c.Revoked = trustTime.Add(time.Hour)
	return c
}

func node(f, v, parent string, slot int, gen uint64) Node {
	return Node{Function: f, VM: v, Parent: parent, Slot: slot, Generation: gen}
}

// base is the state most cases start from: two VMs, two functions, three nodes.
var base = Batch{
	PutVMs:       []VM{vm("vm-a", "img:1"), vm("vm-b")},
	PutFunctions: []Function{fn("f1", 2), fn("f2", 1)},
	PutNodes: []Node{
		node("f1", "vm-a", "", 0, 1), node("f1", "vm-b", "vm-a", 0, 2),
		node("f2", "vm-b", "", 0, 1),
	},
}

var baseState = State{
	VMs:       []VM{vm("vm-a", "img:1"), vm("vm-b")},
	Functions: []Function{fn("f1", 2), fn("f2", 1)},
	Nodes: []Node{
		node("f1", "vm-a", "", 0, 1), node("f1", "vm-b", "vm-a", 0, 2),
		node("f2", "vm-b", "", 0, 1),
	},
}

func testApply(t *testing.T, open opener) {
	tests := []struct {
		name    string
		setup   []Batch
		apply   Batch
		wantErr error // nil: success; else errors.Is target, and state unchanged
		want    State
	}{
		{name: "empty batch on empty store", want: State{}},
		{name: "empty batch", setup: []Batch{base}, want: baseState},
		{name: "puts", apply: base, want: baseState},
		{
			name:  "overwrite",
			setup: []Batch{base},
			apply: Batch{
				PutVMs:       []VM{{Name: "vm-a", Addr: "10.0.0.1:1", Capacity: 3}},
				PutFunctions: []Function{{Name: "f2", Image: "other:2", Generation: 7}},
				PutNodes:     []Node{node("f1", "vm-b", "vm-a", 1, 3)},
			},
			want: State{
				VMs:       []VM{{Name: "vm-a", Addr: "10.0.0.1:1", Capacity: 3}, vm("vm-b")},
				Functions: []Function{fn("f1", 2), {Name: "f2", Image: "other:2", Generation: 7}},
				Nodes: []Node{
					node("f1", "vm-a", "", 0, 1), node("f1", "vm-b", "vm-a", 1, 3),
					node("f2", "vm-b", "", 0, 1),
				},
			},
		},
		{
			name:  "deletes, unknown keys ignored",
			setup: []Batch{base},
			apply: Batch{
				DeleteVMs:   []string{"vm-a", "vm-x"},
				DeleteNodes: []NodeKey{{"f1", "vm-a"}, {"f1", "vm-x"}, {"f9", "vm-a"}},
			},
			want: State{
				VMs:       []VM{vm("vm-b")},
				Functions: baseState.Functions,
				Nodes:     []Node{node("f1", "vm-b", "vm-a", 0, 2), node("f2", "vm-b", "", 0, 1)},
			},
		},
		{
			name:  "function delete cascades to its nodes only",
			setup: []Batch{base},
			apply: Batch{DeleteFunctions: []string{"f1", "f9"}},
			want: State{
				VMs:       baseState.VMs,
				Functions: []Function{fn("f2", 1)},
				Nodes:     []Node{node("f2", "vm-b", "", 0, 1)},
			},
		},
		{
			name:  "recreated function starts without old nodes",
			setup: []Batch{base},
			apply: Batch{
				DeleteFunctions: []string{"f1"},
				PutFunctions:    []Function{fn("f1", 9)},
				PutNodes:        []Node{node("f1", "vm-b", "", 0, 9)},
			},
			want: State{
				VMs:       baseState.VMs,
				Functions: []Function{fn("f1", 9), fn("f2", 1)},
				Nodes:     []Node{node("f1", "vm-b", "", 0, 9), node("f2", "vm-b", "", 0, 1)},
			},
		},
		{
			name:  "put wins over delete, last put wins",
			setup: []Batch{base},
			apply: Batch{
				DeleteVMs:   []string{"vm-a"},
				PutVMs:      []VM{vm("vm-a", "x"), vm("vm-a", "y")},
				DeleteNodes: []NodeKey{{"f2", "vm-b"}},
				PutNodes:    []Node{node("f2", "vm-b", "", 0, 5), node("f2", "vm-b", "", 0, 6)},
			},
			want: State{
				VMs:       []VM{vm("vm-a", "y"), vm("vm-b")},
				Functions: baseState.Functions,
				Nodes: []Node{
					node("f1", "vm-a", "", 0, 1), node("f1", "vm-b", "vm-a", 0, 2),
					node("f2", "vm-b", "", 0, 6),
				},
			},
		},
		{
			name: "load order is by name, nodes by function then vm",
			apply: Batch{
				PutVMs:       []VM{vm("b"), vm("a"), vm("B"), vm("aa")},
				PutFunctions: []Function{fn("y", 0), fn("x", 0)},
				PutNodes:     []Node{node("y", "a", "", 0, 0), node("x", "b", "", 0, 0), node("x", "a", "b", 0, 0)},
			},
			want: State{
				VMs:       []VM{vm("B"), vm("a"), vm("aa"), vm("b")},
				Functions: []Function{fn("x", 0), fn("y", 0)},
				Nodes:     []Node{node("x", "a", "b", 0, 0), node("x", "b", "", 0, 0), node("y", "a", "", 0, 0)},
			},
		},
		{
			name: "spec is kept, compacted",
			apply: Batch{PutFunctions: []Function{{
				Name: "f", Image: "i", Spec: json.RawMessage(" {\"env\": [\"A=<b>&\"], \"n\": 1.50}\n"),
			}}},
			want: State{Functions: []Function{{Name: "f", Image: "i", Spec: json.RawMessage(`{"env":["A=<b>&"],"n":1.50}`)}}},
		},
		{
			name:  "empty images load as nil",
			apply: Batch{PutVMs: []VM{{Name: "v", Images: []string{}}}},
			want:  State{VMs: []VM{{Name: "v"}}},
		},
		{
			name:  "odd but valid names",
			apply: Batch{PutVMs: []VM{{Name: "a/b"}, {Name: "\x00"}, {Name: "ü 🐳"}, {Name: strings.Repeat("n", MaxNameLen)}}},
			want:  State{VMs: []VM{{Name: "\x00"}, {Name: "a/b"}, {Name: strings.Repeat("n", MaxNameLen)}, {Name: "ü 🐳"}}},
		},
		{
			name:  "tokens and certs: put, revoke, delete",
			setup: []Batch{{PutTokens: []token.Record{tok("b1"), tok("a0")}, PutCerts: []Cert{cert("02", "vm-a"), cert("01", "vm-b")}}},
			apply: Batch{
				PutTokens:   []token.Record{revokedTok("b1")},
				PutCerts:    []Cert{revokedCert("01", "vm-b"), cert("03", "vm-a")},
				DeleteCerts: []string{"02", "99"},
			},
			want: State{
				Tokens: []token.Record{tok("a0"), revokedTok("b1")},
				Certs:  []Cert{revokedCert("01", "vm-b"), cert("03", "vm-a")},
			},
		},
		// Refused batches: each has valid entries besides the bad one, and
		// none of them may be applied.
		{name: "empty token id", setup: []Batch{base}, wantErr: ErrInvalid, apply: Batch{
			DeleteVMs: []string{"vm-a"}, PutTokens: []token.Record{tok("")},
		}},
		{name: "empty cert serial", setup: []Batch{base}, wantErr: ErrInvalid, apply: Batch{
			DeleteVMs: []string{"vm-a"}, PutCerts: []Cert{cert("", "vm-a")},
		}},
		{name: "cert without vm", setup: []Batch{base}, wantErr: ErrInvalid, apply: Batch{
			DeleteVMs: []string{"vm-a"}, PutCerts: []Cert{cert("01", "")},
		}},
		{name: "empty delete cert", setup: []Batch{base}, wantErr: ErrInvalid, apply: Batch{
			DeleteVMs: []string{"vm-a"}, DeleteCerts: []string{""},
		}},
		{name: "node of unknown function", setup: []Batch{base}, wantErr: ErrUnknownFunction, apply: Batch{
			PutVMs: []VM{vm("vm-c")}, DeleteVMs: []string{"vm-a"}, PutNodes: []Node{node("f1", "vm-c", "vm-b", 0, 3), node("f9", "vm-c", "", 0, 1)},
		}},
		{name: "node of function deleted in the batch", setup: []Batch{base}, wantErr: ErrUnknownFunction, apply: Batch{
			DeleteFunctions: []string{"f2"}, PutNodes: []Node{node("f2", "vm-a", "", 0, 1)},
		}},
		{name: "empty vm name", setup: []Batch{base}, wantErr: ErrInvalid, apply: Batch{
			DeleteVMs: []string{"vm-a"}, PutVMs: []VM{vm("vm-c"), vm("")},
		}},
		{name: "empty delete vm", setup: []Batch{base}, wantErr: ErrInvalid, apply: Batch{
			DeleteVMs: []string{"vm-a", ""},
		}},
		{name: "empty delete function", setup: []Batch{base}, wantErr: ErrInvalid, apply: Batch{
			DeleteFunctions: []string{""}, PutVMs: []VM{vm("vm-c")},
		}},
		{name: "empty function name", setup: []Batch{base}, wantErr: ErrInvalid, apply: Batch{
			PutFunctions: []Function{fn("", 1)}, DeleteVMs: []string{"vm-a"},
		}},
		{name: "empty node vm", setup: []Batch{base}, wantErr: ErrInvalid, apply: Batch{
			PutNodes: []Node{node("f1", "", "", 0, 1)}, DeleteVMs: []string{"vm-a"},
		}},
		{name: "empty delete node function", setup: []Batch{base}, wantErr: ErrInvalid, apply: Batch{
			DeleteNodes: []NodeKey{{"f1", "vm-a"}, {"", "vm-a"}},
		}},
		{name: "name too long", setup: []Batch{base}, wantErr: ErrInvalid, apply: Batch{
			DeleteVMs: []string{"vm-a"}, PutVMs: []VM{vm(strings.Repeat("n", MaxNameLen+1))},
		}},
		{name: "name not UTF-8", setup: []Batch{base}, wantErr: ErrInvalid, apply: Batch{
			DeleteVMs: []string{"vm-a"}, PutVMs: []VM{vm("vm-\xff")},
		}},
		{name: "image not UTF-8", setup: []Batch{base}, wantErr: ErrInvalid, apply: Batch{
			DeleteVMs: []string{"vm-a"}, PutVMs: []VM{vm("vm-c", "ok", "\xc3")},
		}},
		{name: "parent not UTF-8", setup: []Batch{base}, wantErr: ErrInvalid, apply: Batch{
			DeleteVMs: []string{"vm-a"}, PutNodes: []Node{node("f1", "vm-b", "\xfe", 0, 1)},
		}},
		{
			name:  "striped function and nodes",
			setup: []Batch{base},
			apply: Batch{
				PutFunctions: []Function{{Name: "f3", Image: "i", Stripes: 2, BlockSize: 64 << 10}},
				PutNodes: []Node{
					{Function: "f3", VM: "vm-a", Positions: []int{0, 1}, Generation: 1},
					{Function: "f3", VM: "vm-b", Parent: "vm-a", Positions: []int{1, 0}, Home: 1, Generation: 2},
				},
			},
			want: State{
				VMs:       baseState.VMs,
				Functions: []Function{fn("f1", 2), fn("f2", 1), {Name: "f3", Image: "i", Stripes: 2, BlockSize: 64 << 10}},
				Nodes: append(slices.Clone(baseState.Nodes),
					Node{Function: "f3", VM: "vm-a", Positions: []int{0, 1}, Generation: 1},
					Node{Function: "f3", VM: "vm-b", Parent: "vm-a", Positions: []int{1, 0}, Home: 1, Generation: 2}),
			},
		},
		{name: "negative position", setup: []Batch{base}, wantErr: ErrInvalid, apply: Batch{
			DeleteVMs: []string{"vm-a"}, PutNodes: []Node{{Function: "f1", VM: "vm-b", Positions: []int{0, -1}}},
		}},
		{name: "home beyond the stripes", setup: []Batch{base}, wantErr: ErrInvalid, apply: Batch{
			DeleteVMs: []string{"vm-a"}, PutNodes: []Node{{Function: "f1", VM: "vm-b", Positions: []int{0, 1}, Home: 2}},
		}},
		{name: "home without positions", setup: []Batch{base}, wantErr: ErrInvalid, apply: Batch{
			DeleteVMs: []string{"vm-a"}, PutNodes: []Node{{Function: "f1", VM: "vm-b", Home: 1}},
		}},
		{name: "too many positions", setup: []Batch{base}, wantErr: ErrInvalid, apply: Batch{
			DeleteVMs: []string{"vm-a"}, PutNodes: []Node{{Function: "f1", VM: "vm-b", Positions: make([]int, MaxStripes+1)}},
		}},
		{name: "too many stripes", setup: []Batch{base}, wantErr: ErrInvalid, apply: Batch{
			DeleteVMs: []string{"vm-a"}, PutFunctions: []Function{{Name: "f3", Stripes: MaxStripes + 1}},
		}},
		{name: "negative stripes", setup: []Batch{base}, wantErr: ErrInvalid, apply: Batch{
			DeleteVMs: []string{"vm-a"}, PutFunctions: []Function{{Name: "f3", Stripes: -1}},
		}},
		{name: "negative block size", setup: []Batch{base}, wantErr: ErrInvalid, apply: Batch{
			DeleteVMs: []string{"vm-a"}, PutFunctions: []Function{{Name: "f3", BlockSize: -1}},
		}},
		{name: "spec not JSON", setup: []Batch{base}, wantErr: ErrInvalid, apply: Batch{
			DeleteVMs: []string{"vm-a"}, PutFunctions: []Function{{Name: "f3", Spec: json.RawMessage("{")}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			for _, b := range tt.setup {
				mustApply(t, s, b)
			}
			before := mustLoad(t, s)
			err := s.Apply(t.Context(), tt.apply)
			want := tt.want
			switch {
			case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
				t.Fatalf("Apply = %v, want %v", err, tt.wantErr)
			case tt.wantErr != nil:
				want = before // refused: nothing may change
			case err != nil:
				t.Fatalf("Apply: %v", err)
			}
			if got := mustLoad(t, s); !reflect.DeepEqual(got, want) {
				t.Errorf("Load:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func mustApply(t testing.TB, s Store, b Batch) {
	t.Helper()
	if err := s.Apply(context.Background(), b); err != nil {
		t.Fatalf("Apply(%+v): %v", b, err)
	}
}

func mustLoad(t testing.TB, s Store) State {
	t.Helper()
	st, err := s.Load(context.Background())
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return st
}

// testIsolation checks that neither the batch given to Apply nor the state
// returned by Load share memory with the store.
func testIsolation(t *testing.T, open opener) {
	s := open(t)
	b := Batch{
		PutVMs:       []VM{vm("v", "i1")},
		PutFunctions: []Function{{Name: "f", Spec: json.RawMessage(`{"a":1}`)}},
	}
	mustApply(t, s, b)
	b.PutVMs[0].Images[0] = "changed"
	b.PutFunctions[0].Spec[1] = 'X'
	st := mustLoad(t, s)
	st.VMs[0].Images[0] = "changed"
	st.Functions[0].Spec[1] = 'X'
	want := State{VMs: []VM{vm("v", "i1")}, Functions: []Function{{Name: "f", Spec: json.RawMessage(`{"a":1}`)}}}
	if got := mustLoad(t, s); !reflect.DeepEqual(got, want) {
		t.Errorf("Load after mutating inputs and outputs:\n got %+v\nwant %+v", got, want)
	}
}

func testCanceled(t *testing.T, open opener) {
	s := open(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.Apply(ctx, base); !errors.Is(err, context.Canceled) {
		t.Errorf("Apply with canceled context = %v, want context.Canceled", err)
	}
	if _, err := s.Load(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Load with canceled context = %v, want context.Canceled", err)
	}
	if got := mustLoad(t, s); !reflect.DeepEqual(got, State{}) {
		t.Errorf("canceled Apply changed the state: %+v", got)
	}
}

func testClosed(t *testing.T, open opener) {
	s := open(t)
	mustApply(t, s, base)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := s.Apply(t.Context(), base); !errors.Is(err, ErrClosed) {
		t.Errorf("Apply after Close = %v, want ErrClosed", err)
	}
	if err := s.Apply(t.Context(), Batch{}); !errors.Is(err, ErrClosed) {
		t.Errorf("empty Apply after Close = %v, want ErrClosed", err)
	}
	if _, err := s.Load(t.Context()); !errors.Is(err, ErrClosed) {
		t.Errorf("Load after Close = %v, want ErrClosed", err)
	}
}

func TestBatchEmpty(t *testing.T) {
	tests := []struct {
		b    Batch
		want bool
	}{
		{Batch{}, true},
		{Batch{PutVMs: []VM{}, DeleteNodes: []NodeKey{}}, true},
		{Batch{PutVMs: []VM{{}}}, false},
		{Batch{DeleteVMs: []string{""}}, false},
		{Batch{PutFunctions: []Function{{}}}, false},
		{Batch{DeleteFunctions: []string{"f"}}, false},
		{Batch{PutNodes: []Node{{}}}, false},
		{Batch{DeleteNodes: []NodeKey{{}}}, false},
		{Batch{PutTokens: []token.Record{{}}}, false},
		{Batch{PutCerts: []Cert{{}}}, false},
		{Batch{DeleteCerts: []string{"01"}}, false},
	}
	for i, tt := range tests {
		if got := tt.b.Empty(); got != tt.want {
			t.Errorf("%d: %+v.Empty() = %v, want %v", i, tt.b, got, tt.want)
		}
	}
}

// testConcurrent applies batches from several goroutines while loading, and
// checks that every Load sees whole batches only and that no batch is lost.
func testConcurrent(t *testing.T, open opener) {
	const writers, each = 4, 25
	s := open(t)
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				name := fmt.Sprintf("x-%d-%d", w, i)
				err := s.Apply(context.Background(), Batch{
					PutVMs:       []VM{{Name: name}},
					PutFunctions: []Function{{Name: name}},
					PutNodes:     []Node{{Function: name, VM: name}},
				})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for loading := true; loading; {
		select {
		case <-done:
			loading = false
		default:
		}
		st := mustLoad(t, s)
		if len(st.VMs) != len(st.Functions) || len(st.VMs) != len(st.Nodes) {
			t.Fatalf("Load saw part of a batch: %d vms, %d functions, %d nodes", len(st.VMs), len(st.Functions), len(st.Nodes))
		}
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if st := mustLoad(t, s); len(st.Nodes) != writers*each {
		t.Errorf("after all writers: %d nodes, want %d", len(st.Nodes), writers*each)
	}
}
