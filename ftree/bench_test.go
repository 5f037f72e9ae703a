package ftree

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

var benchSizes = []int{1_000, 10_000, 100_000}

// benchTree returns a tree of n VMs whose weights vary, and its members.
func benchTree(b *testing.B, n int) (*Tree, *members) {
	b.Helper()
	m := newMembers()
	tr := New(func(vm string) int { return len(vm) % 4 })
	for range n {
		vm := m.fresh()
		if _, err := tr.Insert(vm); err != nil {
			b.Fatal(err)
		}
		m.add(vm)
	}
	return tr, m
}

// batch is how many operations run between untimed repairs that bring the
// tree back to its size; large enough that the timer calls do not matter.
func batch(n int) int { return min(n/10, 1000) }

// BenchmarkInsert measures Insert at a steady size: inserts are timed in
// batches, random deletes between batches restore the size untimed.
func BenchmarkInsert(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			tr, m := benchTree(b, n)
			r := rand.New(rand.NewPCG(1, 1))
			b.ResetTimer()
			for i := 0; i < b.N; {
				for k := 0; k < batch(n) && i < b.N; k, i = k+1, i+1 {
					vm := m.fresh()
					if _, err := tr.Insert(vm); err != nil {
						b.Fatal(err)
					}
					m.add(vm)
				}
				b.StopTimer()
				for len(m.names) > n {
					vm := m.random(r)
					if _, err := tr.Delete(vm); err != nil {
						b.Fatal(err)
					}
					m.remove(vm)
				}
				b.StartTimer()
			}
		})
	}
}

// BenchmarkDelete measures Delete of random VMs at a steady size: deletes
// are timed in batches, inserts between batches restore the size untimed.
func BenchmarkDelete(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			tr, m := benchTree(b, n)
			r := rand.New(rand.NewPCG(1, 2))
			b.ResetTimer()
			for i := 0; i < b.N; {
				for k := 0; k < batch(n) && i < b.N; k, i = k+1, i+1 {
					vm := m.random(r)
					if _, err := tr.Delete(vm); err != nil {
						b.Fatal(err)
					}
					m.remove(vm)
				}
				b.StopTimer()
				for len(m.names) < n {
					vm := m.fresh()
					if _, err := tr.Insert(vm); err != nil {
						b.Fatal(err)
					}
					m.add(vm)
				}
				b.StartTimer()
			}
		})
	}
}

// BenchmarkChurn measures one Delete of a random VM plus one Insert, the
// manager's steady state.
func BenchmarkChurn(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			tr, m := benchTree(b, n)
			r := rand.New(rand.NewPCG(1, 3))
			b.ResetTimer()
			for range b.N {
				vm := m.random(r)
				if _, err := tr.Delete(vm); err != nil {
					b.Fatal(err)
				}
				m.remove(vm)
				vm = m.fresh()
				if _, err := tr.Insert(vm); err != nil {
					b.Fatal(err)
				}
				m.add(vm)
			}
		})
	}
}

// BenchmarkBoundary measures an Insert plus a Delete that make a full tree
// of 2^k-1 VMs gain and lose its deepest level on every step.
func BenchmarkBoundary(b *testing.B) {
	for _, k := range []int{10, 14, 17} {
		b.Run(fmt.Sprintf("2^%d-1", k), func(b *testing.B) {
			tr, m := benchTree(b, 1<<k-1)
			r := rand.New(rand.NewPCG(1, 4))
			b.ResetTimer()
			for range b.N {
				vm := m.fresh()
				if _, err := tr.Insert(vm); err != nil {
					b.Fatal(err)
				}
				m.add(vm)
				// Deleting a random VM: usually an interior one, whose
				// replacement is the single VM on the new deepest level.
				vm = m.random(r)
				if _, err := tr.Delete(vm); err != nil {
					b.Fatal(err)
				}
				m.remove(vm)
			}
		})
	}
}

// BenchmarkReweigh measures re-positioning a random VM.
func BenchmarkReweigh(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			tr, m := benchTree(b, n)
			r := rand.New(rand.NewPCG(1, 5))
			b.ResetTimer()
			for range b.N {
				tr.Reweigh(m.random(r))
			}
		})
	}
}

// BenchmarkLookup measures Parent plus Children of a random VM.
func BenchmarkLookup(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			tr, m := benchTree(b, n)
			r := rand.New(rand.NewPCG(1, 6))
			b.ResetTimer()
			for range b.N {
				vm := m.random(r)
				if _, ok := tr.Parent(vm); !ok {
					b.Fatal(vm)
				}
				_ = tr.Children(vm)
			}
		})
	}
}

// BenchmarkStripedChurn deletes a random VM and inserts a new one in a
// Striped of n VMs: the cost should not grow with n.
func BenchmarkStripedChurn(b *testing.B) {
	for _, k := range []int{2, 4} {
		for _, n := range []int{1000, 100_000} {
			b.Run(fmt.Sprintf("k%d/n%d", k, n), func(b *testing.B) {
				tr, _ := NewStriped(k, nil)
				m := newMembers()
				for range n {
					vm := m.fresh()
					tr.Insert(vm)
					m.add(vm)
				}
				r := rand.New(rand.NewPCG(1, 2))
				b.ResetTimer()
				for range b.N {
					vm := m.random(r)
					tr.Delete(vm)
					m.remove(vm)
					vm = m.fresh()
					tr.Insert(vm)
					m.add(vm)
				}
			})
		}
	}
}
