package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/faasnet/faasnet/internal/testenv"
)

// fuzzReader turns fuzz bytes into batch entries; past the end it reads zeros.
type fuzzReader struct{ data []byte }

func (r *fuzzReader) byte() byte {
	if len(r.data) == 0 {
		return 0
	}
	b := r.data[0]
	r.data = r.data[1:]
	return b
}

var fuzzNames = []string{
	"a", "b", "vm-1", "f", "", "\xff", "a\x00b", "ü",
	strings.Repeat("n", MaxNameLen), strings.Repeat("n", MaxNameLen+1),
}

// str is a name from a small table, so that keys collide, or (high bit set)
// up to 15 raw bytes.
func (r *fuzzReader) str() string {
	b := r.byte()
	if b&0x80 == 0 {
		return fuzzNames[int(b)%len(fuzzNames)]
	}
	n := min(int(b&0x0f), len(r.data))
	s := string(r.data[:n])
	r.data = r.data[n:]
	return s
}

var fuzzSpecs = []string{"", "{}", " {\"a\": [1, \"<&>\"]}\n", "{", "null", `"x"`, "[1,]", "1e999"}

func (r *fuzzReader) spec() json.RawMessage {
	b := r.byte()
	if b&0x80 == 0 {
		if s := fuzzSpecs[int(b)%len(fuzzSpecs)]; s != "" {
			return json.RawMessage(s)
		}
		return nil
	}
	return json.RawMessage(r.str())
}

// batches decodes the whole input into batches.
func (r *fuzzReader) batches() []Batch {
	var out []Batch
	var b Batch
	for len(r.data) > 0 {
		switch r.byte() % 7 {
		case 0:
			v := VM{Name: r.str(), Addr: r.str(), Capacity: int(int8(r.byte()))}
			for range r.byte() % 3 {
				v.Images = append(v.Images, r.str())
			}
			b.PutVMs = append(b.PutVMs, v)
		case 1:
			b.DeleteVMs = append(b.DeleteVMs, r.str())
		case 2:
			b.PutFunctions = append(b.PutFunctions, Function{Name: r.str(), Image: r.str(), Generation: uint64(r.byte()), Spec: r.spec()})
		case 3:
			b.DeleteFunctions = append(b.DeleteFunctions, r.str())
		case 4:
			b.PutNodes = append(b.PutNodes, Node{Function: r.str(), VM: r.str(), Parent: r.str(), Slot: int(r.byte() % 3), Generation: uint64(r.byte())})
		case 5:
			b.DeleteNodes = append(b.DeleteNodes, NodeKey{r.str(), r.str()})
		case 6:
			out, b = append(out, b), Batch{}
		}
	}
	return append(out, b)
}

// FuzzApply applies the same batches to Memory, Bolt and, where etcd is
// installed (always under CI), Etcd: none may panic, all must accept and
// refuse the same batches for the same reason, and load the same state
// after each.
func FuzzApply(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 1, 0, 2, 3, 0, 0, 0, 4, 3, 0, 2, 0, 9, 6, 3, 3, 6, 1, 0})
	f.Add([]byte{2, 3, 0, 7, 2, 4, 2, 0, 7, 1, 4, 3, 2, 0, 1, 1, 6, 5, 3, 2, 6, 4, 3, 0, 0, 0, 0})
	f.Add([]byte{0, 0x83, 'x', 0xff, 'y', 1, 0, 2, 0x82, 'f', 'g', 0, 1, 0x84, 0x83, '{', '}', ' ', 4, 0x82, 'f', 'g', 0, 0, 0, 0})
	f.Add([]byte{2, 8, 0, 0, 2, 4, 8, 0, 0, 0, 6, 0, 9, 0, 0, 6, 4, 3, 4, 0, 0, 0, 6, 3, 3})
	var etcd []string
	if _, err := exec.LookPath("etcd"); err == nil || testenv.InCI() {
		etcd = testenv.StartEtcd(f, 1).Endpoints()
	} else {
		f.Log("etcd not installed (apt-get install etcd-server): fuzzing Memory against Bolt only")
	}
	var prefixes atomic.Int64
	f.Fuzz(func(t *testing.T, data []byte) {
		mem := NewMemory()
		bolt, err := OpenBolt(filepath.Join(t.TempDir(), "state.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer bolt.Close()
		others := map[string]Store{"bolt": bolt}
		if etcd != nil {
			others["etcd"] = openEtcd(t, etcd, fmt.Sprintf("/fuzz/%d/", prefixes.Add(1)))
		}
		r := &fuzzReader{data: data}
		for i, b := range r.batches() {
			errM := mem.Apply(t.Context(), b)
			for name, s := range others {
				err := s.Apply(t.Context(), b)
				if errors.Is(err, ErrTooLarge) {
					return // etcd's own limit: the stores part ways here
				}
				if !sameClass(errM, err) {
					t.Fatalf("batch %d %+v: memory: %v, %s: %v", i, b, errM, name, err)
				}
			}
			want := mustLoad(t, mem)
			for name, s := range others {
				if got := mustLoad(t, s); !reflect.DeepEqual(got, want) {
					t.Fatalf("batch %d %+v:\n%-6s %+v\nmemory %+v", i, b, name, got, want)
				}
			}
		}
	})
}

func sameClass(a, b error) bool {
	return (a == nil) == (b == nil) &&
		errors.Is(a, ErrInvalid) == errors.Is(b, ErrInvalid) &&
		errors.Is(a, ErrUnknownFunction) == errors.Is(b, ErrUnknownFunction)
}
