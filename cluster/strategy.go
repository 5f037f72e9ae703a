package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/lazy"
)

// A Strategy is a way of bringing images to VMs: faasnet's function trees,
// a plain registry pull, a P2P swarm, lazy fetching from the registry.
type Strategy interface {
	// Name is how commands and results call the strategy.
	Name() string
	// Deploy starts the strategy's fresh, idle VMs (and whatever servers
	// it needs besides the registry) as env describes them.
	Deploy(ctx context.Context, env *Env) (Deployment, error)
}

// A Deployment is a strategy's VMs, started and idle.
type Deployment interface {
	// Provision starts bringing every image of env to every VM, all at
	// once, and returns when each VM is ready or has failed, or ctx is
	// done. It is called once.
	Provision(ctx context.Context) error
	// Progress describes every VM now. It is safe to call while Provision
	// runs.
	Progress() Snapshot
	// Report describes every VM after Provision, checking the content
	// each VM holds against the images' digests.
	Report(ctx context.Context) []VMReport
	// Close stops everything Deploy started and waits for it.
	Close() error
}

// Env is what a Deployment runs in.
type Env struct {
	Registry *Registry
	// Images are what every VM gets, one per function: generated, or the
	// eStargz conversion of the harness's Function.
	Images []Image
	// Plain are the Function's images before conversion, in the order of
	// Images; nil without a Function.
	Plain    []Image
	VMs      []VM
	Scenario Scenario
	Dir      string // fresh, the deployment's to use; removed after Close
	// Spec is the Function's definition for the workers: VMs run its
	// container and are ready when it answers. Nil without a Function: VMs
	// are ready when they hold the images.
	Spec json.RawMessage
	// RunDir is fresh, on disk, for the VMs' containers (bundles, mounts,
	// unpacked root file systems); removed after Close. Set with Spec.
	RunDir string
	// NoSandbox runs the containers without their network and user
	// namespaces (RunOptions.NoSandbox).
	NoSandbox bool
	// Replay, with Spec, makes worker VMs replay these reads instead of
	// starting the container (see Recording); record records them.
	Replay []lazy.BlobRead
	record *recorder
	Logger *slog.Logger
}

// ImageBytes is what each VM must receive: all images.
func (e *Env) ImageBytes() int64 {
	var n int64
	for _, im := range e.Images {
		n += im.Bytes()
	}
	return n
}

// VM is an emulated VM: a name and the loopback IP it listens on (and
// dials from, where the strategy controls dialing).
type VM struct {
	Name string
	Host string
}

// Snapshot is the progress of every VM of a deployment.
type Snapshot struct {
	VMs []VMProgress
	// Trees are the function trees, for strategies that build them, once
	// the manager placed every VM.
	Trees []api.Tree
}

// VMProgress is how far one VM is.
type VMProgress struct {
	VM       string
	Received int64 // image bytes so far
	Total    int64 // image bytes it needs
	Ready    bool
	Failed   string // why it failed, if it did
}

// VMReport is one VM's outcome.
type VMReport struct {
	VM    string
	Ready time.Time // zero if the VM never became ready
	// Received is the image bytes the VM received, FromRegistry the part
	// that came straight from the registry.
	Received, FromRegistry int64
	// Uploaded is the blob bytes the VM sent to other VMs.
	Uploaded int64
	// Correct says that every blob the VM holds matched its digest (with
	// containers: that the container answered).
	Correct bool
	Err     string
	// BytesBeforeReady is what the VM fetched until it was ready, as its
	// worker counts: the whole image for a whole fetch, what the container
	// read for a lazy one; 0 for strategies without workers.
	BytesBeforeReady int64
	// Phases are when the VM reached each phase of provisioning, for
	// strategies with workers: assigned, manifest, then mount (lazy) or
	// unpacked (whole fetch) and started with containers, and ready. With
	// several functions, the latest of each.
	Phases map[string]time.Time
}

// strategies are the strategies by name.
var strategies = map[string]Strategy{
	"faasnet":           Faasnet{},
	"faasnet-plaintext": Faasnet{Plaintext: true},
	"ondemand":          OnDemand{},
	"registry":          RegistryPull{},
	"containerd":        Containerd{},
	"swarm":             Swarm{},
}

// Strategies returns the names of the strategies, sorted.
func Strategies() []string {
	var names []string
	for n := range strategies {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// StrategyByName returns the strategy called name.
func StrategyByName(name string) (Strategy, error) {
	s, ok := strategies[name]
	if !ok {
		return nil, fmt.Errorf("unknown strategy %q (have %s)", name, strings.Join(Strategies(), ", "))
	}
	return s, nil
}
