package store

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/faasnet/faasnet/internal/testenv"
)

// rawEtcd returns a plain client of the cluster, to write what the store
// would not.
func rawEtcd(t *testing.T, endpoints []string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: endpoints})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

func TestEtcd(t *testing.T) {
	cluster := testenv.StartEtcd(t, 1)
	ep := cluster.Endpoints()
	var n int
	prefix := func() string { n++; return fmt.Sprintf("/etcd-test/%d/", n) }

	// A function's nodes are spread over a bounded number of values, so
	// a batch of many nodes of one function fits one transaction however
	// large the tree.
	t.Run("large tree in one batch", func(t *testing.T) {
		s := openEtcd(t, ep, prefix())
		b := Batch{PutFunctions: []Function{fn("f", 1)}}
		for i := range 3 * DefaultMaxTxnOps {
			b.PutNodes = append(b.PutNodes, node("f", fmt.Sprintf("vm-%04d", i), "", 0, uint64(i)))
		}
		mustApply(t, s, b)
		if got := len(mustLoad(t, s).Nodes); got != len(b.PutNodes) {
			t.Fatalf("loaded %d nodes, want %d", got, len(b.PutNodes))
		}
		mustApply(t, s, Batch{DeleteFunctions: []string{"f"}})
		if got := mustLoad(t, s); !reflect.DeepEqual(got, State{}) {
			t.Fatalf("after deleting the function: %+v", got)
		}
	})

	// More keys than one transaction may hold: refused whole, before
	// anything is sent.
	t.Run("too many keys", func(t *testing.T) {
		s := openEtcd(t, ep, prefix())
		mustApply(t, s, base)
		var b Batch
		for i := range DefaultMaxTxnOps {
			b.PutVMs = append(b.PutVMs, vm(fmt.Sprint("big-", i)))
		}
		if err := s.Apply(t.Context(), b); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("Apply of %d VMs = %v, want ErrTooLarge", len(b.PutVMs), err)
		}
		if got := mustLoad(t, s); !reflect.DeepEqual(got, baseState) {
			t.Fatalf("a refused batch changed the state:\n got %+v\nwant %+v", got, baseState)
		}
		b.PutVMs = b.PutVMs[:DefaultMaxTxnOps-1] // and the batch key
		mustApply(t, s, b)
	})

	// Two stores on one prefix are two managers' views: every batch of
	// both is applied, none overwrites the other's tree.
	t.Run("two writers of one tree", func(t *testing.T) {
		p := prefix()
		stores := []*Etcd{openEtcd(t, ep, p), openEtcd(t, ep, p)}
		mustApply(t, stores[0], Batch{PutFunctions: []Function{fn("f", 0)}})
		const each = 20
		var wg sync.WaitGroup
		errs := make(chan error, len(stores))
		for w, s := range stores {
			wg.Go(func() {
				for i := range each {
					err := s.Apply(context.Background(), Batch{PutNodes: []Node{node("f", fmt.Sprintf("vm-%d-%d", w, i), "", 0, 1)}})
					if err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if got := len(mustLoad(t, stores[1]).Nodes); got != len(stores)*each {
			t.Fatalf("%d nodes, want %d: a writer lost another's batch", got, len(stores)*each)
		}
	})

	// A store caches the trees it wrote; another writer's changes must
	// neither be lost nor refuse a valid batch.
	t.Run("stale cache", func(t *testing.T) {
		p := prefix()
		a, b := openEtcd(t, ep, p), openEtcd(t, ep, p)
		mustApply(t, a, Batch{PutFunctions: []Function{fn("f", 0)}, PutNodes: []Node{node("f", "n1", "", 0, 1)}, DeleteFunctions: []string{"g"}})
		mustApply(t, b, Batch{PutFunctions: []Function{fn("g", 0)}, PutNodes: []Node{node("f", "n2", "n1", 0, 1)}})
		mustApply(t, a, Batch{PutNodes: []Node{node("f", "n3", "n1", 1, 1), node("g", "n1", "", 0, 1)}})
		want := State{
			Functions: []Function{fn("f", 0), fn("g", 0)},
			Nodes:     []Node{node("f", "n1", "", 0, 1), node("f", "n2", "n1", 0, 1), node("f", "n3", "n1", 1, 1), node("g", "n1", "", 0, 1)},
		}
		if got := mustLoad(t, a); !reflect.DeepEqual(got, want) {
			t.Fatalf("Load:\n got %+v\nwant %+v", got, want)
		}
	})

	t.Run("prefixes are separate", func(t *testing.T) {
		a, b := openEtcd(t, ep, prefix()), openEtcd(t, ep, strings.TrimSuffix(prefix(), "/"))
		mustApply(t, a, base)
		if got := mustLoad(t, b); !reflect.DeepEqual(got, State{}) {
			t.Fatalf("other prefix sees %+v", got)
		}
		// Keys of the prefix outside state/ (leader election) are not
		// the store's.
		if _, err := rawEtcd(t, ep).Put(t.Context(), a.Prefix()+"leader/x", "m1"); err != nil {
			t.Fatal(err)
		}
		if got := mustLoad(t, a); !reflect.DeepEqual(got, baseState) {
			t.Fatalf("Load:\n got %+v\nwant %+v", got, baseState)
		}
	})

	t.Run("reopen", func(t *testing.T) {
		p := prefix()
		s := openEtcd(t, ep, p)
		mustApply(t, s, base)
		mustApply(t, s, Batch{Revision: 42})
		s.Close()
		want := baseState
		want.Revision = 42
		if got := mustLoad(t, openEtcd(t, ep, p)); !reflect.DeepEqual(got, want) {
			t.Fatalf("after reopening:\n got %+v\nwant %+v", got, want)
		}
	})

	t.Run("newer schema", func(t *testing.T) {
		p := prefix()
		if _, err := rawEtcd(t, ep).Put(t.Context(), p+"state/schema", fmt.Sprint(SchemaVersion+1)); err != nil {
			t.Fatal(err)
		}
		_, err := OpenEtcd(t.Context(), EtcdOptions{Endpoints: ep, Prefix: p})
		if !errors.Is(err, ErrUnsupportedSchema) {
			t.Fatalf("OpenEtcd = %v, want ErrUnsupportedSchema", err)
		}
	})
}

func TestEtcdCorrupt(t *testing.T) {
	ep := testenv.StartEtcd(t, 1).Endpoints()
	tests := []struct {
		name, key, val string
		where          []string // what the error must name
	}{
		{"vm not JSON", "state/vms/vm-a", "{not json", []string{`"vms"`, `"vm-a"`}},
		{"vm under wrong key", "state/vms/vm-a", `{"name":"vm-z"}`, []string{`"vm-a"`, `"vm-z"`}},
		{"function not JSON", "state/functions/f1", "[", []string{`"functions"`, `"f1"`}},
		{"function under wrong key", "state/functions/f1", `{"name":"f2"}`, []string{`"f1"`, `"f2"`}},
		{"shard not JSON", "state/nodes/f1/" + shardOf("vm-a"), "[", []string{`"nodes/f1"`}},
		{"node of other function", "state/nodes/f1/" + shardOf("vm-a"), `{"vm-a":{"function":"f2","vm":"vm-a"}}`, []string{`"nodes/f1"`, `"vm-a"`, `"f2"`}},
		{"node under wrong vm", "state/nodes/f1/" + shardOf("vm-a"), `{"vm-a":{"function":"f1","vm":"vm-z"}}`, []string{`"nodes/f1"`, `"vm-a"`, `"vm-z"`}},
		{"node in wrong shard", "state/nodes/f1/" + shardOf("vm-b") + "x", `{"vm-b":{"function":"f1","vm":"vm-b"}}`, []string{`"nodes/f1"`, `"vm-b"`}},
		{"nodes of missing function", "state/nodes/f9/" + shardOf("vm-a"), `{"vm-a":{"function":"f9","vm":"vm-a"}}`, []string{`"nodes"`, `"f9"`}},
		{"unknown kind", "state/things/x", "{}", []string{"things/x"}},
		{"bad escape", "state/vms/%zz", "{}", []string{"%zz"}},
		{"revision not a number", "state/revision", "many", []string{"revision"}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openEtcd(t, ep, fmt.Sprintf("/corrupt/%d/", i))
			mustApply(t, s, base)
			if _, err := rawEtcd(t, ep).Put(t.Context(), s.Prefix()+tt.key, tt.val); err != nil {
				t.Fatal(err)
			}
			_, err := s.Load(t.Context())
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Load = %v, want ErrCorrupt", err)
			}
			for _, w := range append(tt.where, s.Prefix()) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Load error %q does not name %s", err, w)
				}
			}
		})
	}
}

// TestEtcdSurvivesMemberKill checks that a batch Apply reported applied is
// still there after the only member is killed with SIGKILL and restarted.
func TestEtcdSurvivesMemberKill(t *testing.T) {
	cluster := testenv.StartEtcd(t, 1)
	s := openEtcd(t, cluster.Endpoints(), "/kill/")
	mustApply(t, s, base)
	mustApply(t, s, Batch{Revision: 7, DeleteNodes: []NodeKey{{"f1", "vm-b"}}})
	want := mustLoad(t, s)
	cluster.Kill(0)
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	if err := s.Apply(ctx, Batch{Revision: 8}); err == nil {
		t.Fatal("Apply with no etcd member running succeeded")
	}
	if err := cluster.Restart(0); err != nil {
		t.Fatal(err)
	}
	if got := mustLoad(t, openEtcd(t, cluster.Endpoints(), "/kill/")); !reflect.DeepEqual(got, want) {
		t.Fatalf("after kill -9 and restart:\n got %+v\nwant %+v", got, want)
	}
}

// TestEtcdExclusive checks the lock of an Exclusive store: a second one
// waits for it, gets it when the first closes, and a holder whose lease is
// gone can write nothing.
func TestEtcdExclusive(t *testing.T) {
	ep := testenv.StartEtcd(t, 1).Endpoints()
	opts := EtcdOptions{Endpoints: ep, Prefix: "/excl/", Exclusive: true, SessionTTL: 2 * time.Second}
	open := func(ctx context.Context) (*Etcd, error) {
		s, err := OpenEtcd(ctx, opts)
		if err == nil {
			t.Cleanup(func() { s.Close() })
		}
		return s, err
	}
	a, err := open(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	mustApply(t, a, base)

	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	if _, err := open(ctx); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "another process holds the lock") {
		t.Fatalf("second OpenEtcd while the first holds the prefix = %v, want a wait that ends with the context", err)
	}

	a.Close() // releases the lease: no wait for it to expire
	ctx, cancel = context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	b, err := open(ctx)
	if err != nil {
		t.Fatalf("OpenEtcd after the holder closed: %v", err)
	}
	mustApply(t, b, Batch{Revision: 3})
	files := map[string][]byte{"ca.crt": []byte("cert"), "a/b": {0, 1}}
	if err := b.PutFiles(t.Context(), files); err != nil {
		t.Fatal(err)
	}

	// The lease ends as if b had been paused past its TTL.
	if _, err := rawEtcd(t, ep).Revoke(t.Context(), b.lock.session.Lease()); err != nil {
		t.Fatal(err)
	}
	if err := b.Apply(t.Context(), Batch{Revision: 4, DeleteVMs: []string{"vm-a"}}); !errors.Is(err, ErrFenced) {
		t.Fatalf("Apply after the lease was revoked = %v, want ErrFenced", err)
	}
	if err := b.PutFiles(t.Context(), map[string][]byte{"ca.crt": []byte("other")}); !errors.Is(err, ErrFenced) {
		t.Fatalf("PutFiles after the lease was revoked = %v, want ErrFenced", err)
	}
	if got, err := b.Files(t.Context()); err != nil || !reflect.DeepEqual(got, files) {
		t.Fatalf("Files = %q, %v; want %q", got, err, files)
	}
	select {
	case <-b.Lost():
	case <-time.After(10 * time.Second): // bounds a hang; the keep-alive notices within a TTL
		t.Fatal("Lost not closed after the lease was revoked")
	}
	want := baseState
	want.Revision = 3
	if got := mustLoad(t, b); !reflect.DeepEqual(got, want) {
		t.Fatalf("a fenced batch changed the state:\n got %+v\nwant %+v", got, want)
	}
}

// TestEtcdSettle checks how Apply settles a transaction whose answer was
// lost: applied if the batch key holds its id; otherwise the batch key moves
// on, so that the lost transaction, which compares it, can never apply; and
// a store fenced off leaves the batch key to the new holder.
func TestEtcdSettle(t *testing.T) {
	ep := testenv.StartEtcd(t, 1).Endpoints()
	raw := rawEtcd(t, ep)
	lost := errors.New("answer lost")
	batchKey := func(s *Etcd) (string, int64) {
		resp, err := raw.Get(t.Context(), s.Prefix()+etcdBatch)
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("batch key: %v %v", resp, err)
		}
		return string(resp.Kvs[0].Value), resp.Kvs[0].ModRevision
	}
	s := openEtcd(t, ep, "/settle/")
	mustApply(t, s, base)
	id, rev := batchKey(s)

	if applied, err := s.settle(t.Context(), nil, id, lost); !applied || err != nil {
		t.Errorf("settle with the stored id = %v, %v; want applied", applied, err)
	}
	if _, now := batchKey(s); now != rev {
		t.Errorf("settle of an applied batch wrote the batch key")
	}
	if applied, err := s.settle(t.Context(), nil, "other", lost); applied || !errors.Is(err, lost) {
		t.Errorf("settle with another id = %v, %v; want not applied, the send error", applied, err)
	}
	if _, now := batchKey(s); now == rev {
		t.Errorf("settle of a batch not applied left the batch key at revision %d: the lost transaction could still apply", rev)
	}

	x, err := OpenEtcd(t.Context(), EtcdOptions{Endpoints: ep, Prefix: "/settle-x/", Exclusive: true, SessionTTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer x.Close()
	mustApply(t, x, base)
	_, rev = batchKey(x)
	if _, err := raw.Revoke(t.Context(), x.lock.session.Lease()); err != nil {
		t.Fatal(err)
	}
	if _, err := x.settle(t.Context(), x.lock.fence, "other", lost); !errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, ErrFenced) {
		t.Errorf("settle of a fenced store = %v, want ErrOutcomeUnknown and ErrFenced", err)
	}
	if _, now := batchKey(x); now != rev {
		t.Errorf("a fenced store moved the batch key")
	}
}

// TestEtcdQuorum runs a store on three etcd members: with one killed it
// goes on; with two killed (no quorum) Apply fails and Load cannot answer
// consistently; once a member returns, writes work again and nothing
// acknowledged is lost.
func TestEtcdQuorum(t *testing.T) {
	cluster := testenv.StartEtcd(t, 3)
	s := openEtcd(t, cluster.Endpoints(), "/quorum/")
	mustApply(t, s, base)
	cluster.Kill(0)
	mustApply(t, s, Batch{Revision: 5, DeleteNodes: []NodeKey{{"f1", "vm-b"}}})
	want := mustLoad(t, s)
	cluster.Kill(1)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	err := s.Apply(ctx, Batch{Revision: 6, DeleteVMs: []string{"vm-a"}})
	if err == nil {
		t.Fatal("Apply with one of three members left succeeded")
	}
	t.Logf("Apply without quorum: %v", err)
	if err := cluster.Restart(1); err != nil {
		t.Fatal(err)
	}
	got := mustLoad(t, s)
	if errors.Is(err, ErrOutcomeUnknown) {
		// The transaction may have been applied (etcd queued it): all of
		// it or nothing.
		if got.Revision == 6 {
			want.Revision, want.VMs = 6, want.VMs[1:]
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("after quorum returned:\n got %+v\nwant %+v", got, want)
	}
	mustApply(t, s, Batch{Revision: 7})
}

func TestUnavailable(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{status.Error(codes.Unavailable, "error reading from server: EOF"), true},
		{fmt.Errorf("store: apply: %w", status.Error(codes.Unavailable, "connection refused")), true},
		{rpctypes.ErrTimeoutDueToLeaderFail, true},
		{fmt.Errorf("wrapped: %w", rpctypes.ErrLeaderChanged), true},
		{rpctypes.ErrTooManyOps, false},
		{rpctypes.ErrRequestTooLarge, false},
		{context.DeadlineExceeded, false},
		{errors.New("other"), false},
	}
	for _, tt := range tests {
		if got := unavailable(tt.err); got != tt.want {
			t.Errorf("unavailable(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}
