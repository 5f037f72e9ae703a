// Package crinode runs one node's containerd and drives it through CRI as
// kubelet does: RunPodSandbox, PullImage, CreateContainer, StartContainer,
// then the function's readiness path. The e2e CRI test and the containerd
// strategy of faasnet bench share it.
//
// A node's containerd keeps to its own directory (root, state, sockets,
// configuration), so that several run on one machine; its CRI settings are
// package containerdcfg's fragment, with pulls of one registry going to the
// node's worker only. Pods use the host network and no hostname, which is
// what this machine's VMs allow (see issue 14).
package crinode

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	cri "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/faasnet/faasnet/containerdcfg"
)

// Config describes a node.
type Config struct {
	// Dir is the node's, fresh; keep it short, it holds unix sockets.
	Dir string
	// Containerd is the containerd binary.
	Containerd string
	// Worker is the node's worker's local runtime endpoint, host:port.
	Worker string
	// Registry is pulled from through the worker only.
	Registry containerdcfg.Registry
	// Snapshotter is CRI's: containerdcfg.SnapshotterName, on
	// SnapshotterSocket, or a built-in one such as overlayfs.
	Snapshotter       string
	SnapshotterSocket string
	// SandboxImage is CRI's pause image; load it with Import, since a
	// node pulls nothing but functions.
	SandboxImage string
	// CNIBinDir holds the CNI loopback plugin, for CRI's NetworkReady.
	CNIBinDir string
}

// Node is a running containerd.
type Node struct {
	cfg  Config
	cmd  *exec.Cmd
	done chan struct{}
	conn *grpc.ClientConn

	Runtime cri.RuntimeServiceClient
	Images  cri.ImageServiceClient
}

// mainConfig keeps a node's containerd to its own directories; the CRI
// settings come from containerdcfg's fragment, imported.
const mainConfig = `version = 2
root = %[1]q
state = %[2]q
imports = [%[3]q]
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = %[4]q

[ttrpc]
  address = %[5]q

[plugins."io.containerd.internal.v1.opt"]
  path = %[6]q
`

// Start writes the node's configuration, starts containerd and waits
// until CRI says its runtime and network are ready (a minute at most).
func Start(ctx context.Context, cfg Config) (*Node, error) {
	if err := writeConfig(cfg); err != nil {
		return nil, fmt.Errorf("crinode: %s: %w", cfg.Dir, err)
	}
	logf, err := os.Create(LogPath(cfg.Dir))
	if err != nil {
		return nil, fmt.Errorf("crinode: %w", err)
	}
	cmd := exec.Command(cfg.Containerd, "--config", filepath.Join(cfg.Dir, "config.toml"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = Environ()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("crinode: starting %s: %w", cfg.Containerd, err)
	}
	n := &Node{cfg: cfg, cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); logf.Close(); close(n.done) }()
	n.conn, err = grpc.NewClient("unix://"+n.Socket(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("crinode: %w", err)
	}
	n.Runtime, n.Images = cri.NewRuntimeServiceClient(n.conn), cri.NewImageServiceClient(n.conn)
	deadline := time.Now().Add(time.Minute)
	for {
		err := n.ready(ctx)
		if err == nil {
			return n, nil
		}
		if n.Exited() || time.Now().After(deadline) || ctx.Err() != nil {
			n.Close()
			return nil, fmt.Errorf("crinode: %s: containerd's CRI is not ready: %w\n%s", cfg.Dir, err, LastLines(n.Log(), 20))
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond): // polling containerd, with a deadline
		}
	}
}

// writeConfig writes containerdcfg's node files, a loopback CNI network
// and containerd's main configuration under cfg.Dir.
func writeConfig(cfg Config) error {
	cniDir := filepath.Join(cfg.Dir, "cni")
	node := containerdcfg.Node{
		Dir:                 filepath.Join(cfg.Dir, "etc"),
		Worker:              cfg.Worker,
		Registries:          []containerdcfg.Registry{cfg.Registry},
		NoFallback:          true,
		Snapshotter:         cfg.Snapshotter,
		SnapshotterSocket:   cfg.SnapshotterSocket,
		SandboxImage:        cfg.SandboxImage,
		RestrictOOMScoreAdj: true,
		CNIBinDir:           cfg.CNIBinDir,
		CNIConfDir:          cniDir,
	}
	if _, err := node.Write(); err != nil {
		return err
	}
	if err := os.MkdirAll(cniDir, 0o755); err != nil {
		return err
	}
	lo := `{"cniVersion": "0.4.0", "name": "faasnet-lo", "plugins": [{"type": "loopback"}]}`
	if err := os.WriteFile(filepath.Join(cniDir, "10-lo.conflist"), []byte(lo), 0o644); err != nil {
		return err
	}
	sock := filepath.Join(cfg.Dir, "containerd.sock")
	main := fmt.Sprintf(mainConfig, filepath.Join(cfg.Dir, "root"), filepath.Join(cfg.Dir, "state"), node.FragmentPath(),
		sock, sock+".ttrpc", filepath.Join(cfg.Dir, "opt"))
	return os.WriteFile(filepath.Join(cfg.Dir, "config.toml"), []byte(main), 0o644)
}

func (n *Node) ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := n.Runtime.Status(ctx, &cri.StatusRequest{})
	if err != nil {
		return err
	}
	for _, c := range st.Status.Conditions {
		if !c.Status {
			return fmt.Errorf("%s: %s %s", c.Type, c.Reason, c.Message)
		}
	}
	return nil
}

// Socket is containerd's gRPC socket.
func (n *Node) Socket() string { return filepath.Join(n.cfg.Dir, "containerd.sock") }

// LogPath is where the containerd of the node in dir logs.
func LogPath(dir string) string { return filepath.Join(dir, "containerd.log") }

// Log returns containerd's log so far.
func (n *Node) Log() string {
	b, _ := os.ReadFile(LogPath(n.cfg.Dir))
	return string(b)
}

// Exited reports whether containerd has exited.
func (n *Node) Exited() bool {
	select {
	case <-n.done:
		return true
	default:
		return false
	}
}

// Import loads an image archive (docker save or OCI layout tar) into CRI's
// namespace with ctr, unpacked for the node's snapshotter.
func (n *Node) Import(ctx context.Context, ctr, archive string) error {
	cmd := exec.CommandContext(ctx, ctr, "--address", n.Socket(), "--namespace", "k8s.io",
		"images", "import", "--snapshotter", n.cfg.Snapshotter, archive)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("crinode: ctr images import %s: %w\n%s", archive, err, out)
	}
	return nil
}

// ErrStopTimeout means containerd did not stop within 20 s of SIGTERM and
// was killed.
var ErrStopTimeout = errors.New("containerd did not stop within 20s of SIGTERM")

// Close stops containerd: SIGTERM, then SIGKILL after 20 s.
func (n *Node) Close() error {
	if n.conn != nil {
		n.conn.Close()
	}
	n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
		return nil
	case <-time.After(20 * time.Second):
		n.cmd.Process.Kill()
		<-n.done
		return fmt.Errorf("crinode: %s: %w", n.cfg.Dir, ErrStopTimeout)
	}
}

// Pod is a host-network pod on a node.
type Pod struct {
	n      *Node
	ID     string
	Config *cri.PodSandboxConfig
}

// hostNet puts a pod's containers in the node's network namespace.
var hostNet = &cri.NamespaceOption{Network: cri.NamespaceMode_NODE, Pid: cri.NamespaceMode_CONTAINER, Ipc: cri.NamespaceMode_POD}

// RunPod runs a pod sandbox named name, with its logs under the node's
// directory.
func (n *Node) RunPod(ctx context.Context, name string) (*Pod, error) {
	cfg := &cri.PodSandboxConfig{
		Metadata:     &cri.PodSandboxMetadata{Name: name, Namespace: "default", Uid: "uid-" + name},
		LogDirectory: filepath.Join(n.cfg.Dir, "pods"),
		// Host network, and no hostname: CRI refuses to set one there.
		Linux: &cri.LinuxPodSandboxConfig{SecurityContext: &cri.LinuxSandboxSecurityContext{NamespaceOptions: hostNet}},
	}
	pod, err := n.Runtime.RunPodSandbox(ctx, &cri.RunPodSandboxRequest{Config: cfg})
	if err != nil {
		return nil, fmt.Errorf("RunPodSandbox: %w", err)
	}
	return &Pod{n: n, ID: pod.PodSandboxId, Config: cfg}, nil
}

// Pull pulls ref for the pod, as kubelet does before creating a container.
func (p *Pod) Pull(ctx context.Context, ref string) error {
	if _, err := p.n.Images.PullImage(ctx, &cri.PullImageRequest{Image: &cri.ImageSpec{Image: ref}, SandboxConfig: p.Config}); err != nil {
		return fmt.Errorf("PullImage %s: %w", ref, err)
	}
	return nil
}

// StartFunction creates and starts the function's container from the
// pulled image ref, listening on 127.0.0.1:port (the function images take
// HOST and PORT from the environment), and returns its id.
func (p *Pod) StartFunction(ctx context.Context, ref string, port int) (string, error) {
	ctr, err := p.n.Runtime.CreateContainer(ctx, &cri.CreateContainerRequest{
		PodSandboxId: p.ID,
		Config: &cri.ContainerConfig{
			Metadata: &cri.ContainerMetadata{Name: "fn"},
			Image:    &cri.ImageSpec{Image: ref},
			Envs:     []*cri.KeyValue{{Key: "PORT", Value: []byte(strconv.Itoa(port))}, {Key: "HOST", Value: []byte("127.0.0.1")}},
			LogPath:  "fn.log",
			Linux:    &cri.LinuxContainerConfig{SecurityContext: &cri.LinuxContainerSecurityContext{NamespaceOptions: hostNet}},
		},
		SandboxConfig: p.Config,
	})
	if err != nil {
		return "", fmt.Errorf("CreateContainer: %w", err)
	}
	if _, err := p.n.Runtime.StartContainer(ctx, &cri.StartContainerRequest{ContainerId: ctr.ContainerId}); err != nil {
		return "", fmt.Errorf("StartContainer: %w", err)
	}
	return ctr.ContainerId, nil
}

// WaitHealthy polls url, the function's readiness path, as kubelet's probe
// does, until it answers 200, failing early if container id exits.
func (p *Pod) WaitHealthy(ctx context.Context, id, url string) error {
	client := &http.Client{Timeout: time.Second}
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		st, err := p.n.Runtime.ContainerStatus(ctx, &cri.ContainerStatusRequest{ContainerId: id})
		if err != nil {
			return fmt.Errorf("ContainerStatus: %w", err)
		}
		if st.Status.State == cri.ContainerState_CONTAINER_EXITED {
			log, _ := os.ReadFile(st.Status.LogPath)
			return fmt.Errorf("the function exited (code %d, %s):\n%s", st.Status.ExitCode, st.Status.Reason, log)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the function did not answer %s: %w", url, ctx.Err())
		case <-time.After(20 * time.Millisecond): // polling the container, as a probe does
		}
	}
}

// Remove stops and removes the pod and its containers.
func (p *Pod) Remove(ctx context.Context) error {
	if _, err := p.n.Runtime.StopPodSandbox(ctx, &cri.StopPodSandboxRequest{PodSandboxId: p.ID}); err != nil {
		return fmt.Errorf("StopPodSandbox: %w", err)
	}
	if _, err := p.n.Runtime.RemovePodSandbox(ctx, &cri.RemovePodSandboxRequest{PodSandboxId: p.ID}); err != nil {
		return fmt.Errorf("RemovePodSandbox: %w", err)
	}
	return nil
}

// Environ returns the environment for a node's containerd, and for the
// daemons a node runs beside it: this process's, without the CONTAINERD_
// variables (address, namespace, snapshotter), which would point them at
// another containerd.
func Environ() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CONTAINERD_") {
			out = append(out, kv)
		}
	}
	return out
}

// LastLines returns the last n lines of a log's text: what an error, or a
// failed test, shows of a daemon's log.
func LastLines(log string, n int) string {
	lines := strings.Split(strings.TrimRight(log, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
