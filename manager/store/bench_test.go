package store

import (
	"fmt"
	"testing"

	"github.com/faasnet/faasnet/internal/testenv"
)

// populate fills s with vms VMs and fns functions of per nodes each, in
// batches of at most 100 VMs or one function with its nodes, which keeps each
// within one etcd transaction.
func populate(b *testing.B, s Store, vms, fns, per int) {
	var batch Batch
	for i := range vms {
		batch.PutVMs = append(batch.PutVMs, VM{Name: fmt.Sprint("vm-", i), Addr: "127.0.0.1:7000", Capacity: 20, Images: []string{"registry.test/app:1"}})
		if len(batch.PutVMs) == 100 {
			mustApply(b, s, batch)
			batch = Batch{}
		}
	}
	for f := range fns {
		name := fmt.Sprint("fn-", f)
		batch.PutFunctions = append(batch.PutFunctions, Function{Name: name, Image: "registry.test/app:1", Generation: uint64(per), Spec: []byte(`{"memory":"512MiB"}`)})
		for i := range per {
			batch.PutNodes = append(batch.PutNodes, Node{Function: name, VM: fmt.Sprint("vm-", (f+i)%vms), Parent: fmt.Sprint("vm-", (f+i/2)%vms), Slot: i % 2, Generation: uint64(i)})
		}
		mustApply(b, s, batch)
		batch = Batch{}
	}
	mustApply(b, s, batch)
}

func benchBackends(b *testing.B) map[string]func(b *testing.B) Store {
	return map[string]func(b *testing.B) Store{
		"memory": func(*testing.B) Store { return NewMemory() },
		"bolt": func(b *testing.B) Store {
			s, err := OpenBolt(b.TempDir() + "/state.db")
			if err != nil {
				b.Fatal(err)
			}
			return s
		},
		// A one-member etcd on loopback, with its data on the same disk
		// as bolt's file: the cost of etcd's own sync and of the round
		// trips, without replication.
		"etcd1": func(b *testing.B) Store {
			s, err := OpenEtcd(b.Context(), EtcdOptions{Endpoints: testenv.StartEtcd(b, 1).Endpoints()})
			if err != nil {
				b.Fatal(err)
			}
			return s
		},
	}
}

// BenchmarkApply measures one typical mutation, a scale-out step (the
// function's generation and one new node), on a store with 1000 VMs and
// 100 functions. For Bolt this is dominated by the sync to disk.
func BenchmarkApply(b *testing.B) {
	for name, open := range benchBackends(b) {
		b.Run(name, func(b *testing.B) {
			s := open(b)
			defer s.Close()
			populate(b, s, 1000, 100, 20)
			i := 0
			for b.Loop() {
				i++
				mustApply(b, s, Batch{
					PutFunctions: []Function{{Name: "fn-0", Image: "registry.test/app:1", Generation: uint64(i)}},
					PutNodes:     []Node{{Function: "fn-0", VM: fmt.Sprint("vm-", i%1000), Parent: "vm-0", Generation: uint64(i)}},
				})
			}
		})
	}
}

// BenchmarkLoad measures a manager start: loading 1000 VMs, 100 functions
// and 2000 nodes.
func BenchmarkLoad(b *testing.B) {
	for name, open := range benchBackends(b) {
		b.Run(name, func(b *testing.B) {
			s := open(b)
			defer s.Close()
			populate(b, s, 1000, 100, 20)
			for b.Loop() {
				mustLoad(b, s)
			}
		})
	}
}
