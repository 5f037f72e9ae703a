package main

import (
	"fmt"

	"github.com/faasnet/faasnet/containerdcfg"
	"github.com/spf13/cobra"
)

func init() { subcommands = append(subcommands, newContainerdCmd) }

func newContainerdCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "containerd",
		Short: "Set up a node's containerd to pull through its faasnet worker",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newContainerdConfigCmd())
	return cmd
}

func newContainerdConfigCmd() *cobra.Command {
	n := containerdcfg.Node{
		Dir:               "/etc/containerd",
		Worker:            containerdcfg.DefaultWorker,
		Snapshotter:       containerdcfg.SnapshotterName,
		SnapshotterSocket: containerdcfg.DefaultSnapshotterSocket,
		CNIBinDir:         "/usr/lib/cni",
		CNIConfDir:        "/etc/cni/net.d",
	}
	var registries []string
	cmd := &cobra.Command{
		Use:   "config --registry HOST [--registry HOST ...] [--worker ADDR] [--dir DIR]",
		Short: "Write containerd's registry mirror files and its configuration fragment for a faasnet node",
		Long: `Writes, for containerd 1.6 (configuration version 2):

  DIR/certs.d/HOST/hosts.toml   for each --registry: pulls of HOST's images go
                                to the worker's local runtime endpoint
                                (--worker, the worker's --oci-listen) first,
                                then to HOST itself
  DIR/conf.d/faasnet.toml       the fragment that points CRI at DIR/certs.d,
                                selects the snapshotter, keeps snapshot
                                annotations on (a lazy snapshotter needs them)
                                and declares the faasnet snapshotter as a
                                proxy plugin on --snapshotter-socket

containerd goes to HOST itself when the worker does not answer (as it
does for any mirror), so a node pulls even while its worker restarts.
--no-fallback makes the worker HOST's only server: with the worker down,
pulls fail instead, and the node never contacts HOST; it can then pull from
HOST only the images of the functions its worker runs.

Import the fragment from containerd's config.toml (imports =
["DIR/conf.d/faasnet.toml"]) and restart containerd. containerd 1.6 replaces
the whole CRI section from an import, so the fragment also carries the CNI
directories, runc's cgroup driver (--systemd-cgroup), --sandbox-image and
--restrict-oom-score-adj.

The faasnet snapshotter (faasnet snapshotter, on --snapshotter-socket)
mounts eStargz layers lazily through the worker; --snapshotter overlayfs
pulls whole images through the worker's mirror instead, still down the
function tree.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			for _, s := range registries {
				r, err := containerdcfg.ParseRegistry(s)
				if err != nil {
					return fmt.Errorf("--registry: %w", err)
				}
				n.Registries = append(n.Registries, r)
			}
			if len(n.Registries) == 0 {
				return fmt.Errorf("--registry: name at least one registry whose images the node pulls through the worker")
			}
			paths, err := n.Write()
			for _, p := range paths {
				fmt.Fprintln(cmd.OutOrStdout(), p)
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&n.Dir, "dir", n.Dir, "containerd's configuration directory (absolute): writes DIR/certs.d and DIR/conf.d/faasnet.toml")
	f.StringVar(&n.Worker, "worker", n.Worker, "the worker's local runtime endpoint, its --oci-listen host:port (plain HTTP; not a unix socket)")
	f.StringArrayVar(&registries, "registry", nil, "registry whose pulls go through the worker: HOST[:PORT], or http://HOST[:PORT] for a registry without TLS (repeatable)")
	f.BoolVar(&n.NoFallback, "no-fallback", false, "pull from the registries through the worker only, never from the registries themselves")
	f.StringVar(&n.Snapshotter, "snapshotter", n.Snapshotter, `CRI's snapshotter: "faasnet" for lazy starts (faasnet snapshotter, declared as a proxy plugin), or a built-in one such as overlayfs for whole pulls`)
	f.StringVar(&n.SnapshotterSocket, "snapshotter-socket", n.SnapshotterSocket, "socket of the faasnet snapshotter")
	f.StringVar(&n.SandboxImage, "sandbox-image", "", "CRI's sandbox (pause) image (default: containerd's)")
	f.BoolVar(&n.RestrictOOMScoreAdj, "restrict-oom-score-adj", false, "cap containers' oom_score_adj at containerd's own, for hosts where root cannot lower it")
	f.BoolVar(&n.SystemdCgroup, "systemd-cgroup", false, "have runc use systemd's cgroups, for a kubelet with the systemd cgroup driver")
	f.StringVar(&n.CNIBinDir, "cni-bin-dir", n.CNIBinDir, "CRI's CNI plugin directory (Debian's containernetworking-plugins install to /usr/lib/cni)")
	f.StringVar(&n.CNIConfDir, "cni-conf-dir", n.CNIConfDir, "CRI's CNI configuration directory")
	return cmd
}
