package main

import (
	"github.com/spf13/cobra"

	"github.com/faasnet/faasnet/containerdcfg"
	"github.com/faasnet/faasnet/lazy"
	"github.com/faasnet/faasnet/snapshotter"
)

func init() { subcommands = append(subcommands, newSnapshotterCmd) }

func newSnapshotterCmd() *cobra.Command {
	cfg := snapshotter.Config{
		Root:        "/var/lib/faasnet/snapshotter",
		Socket:      containerdcfg.DefaultSnapshotterSocket,
		Worker:      containerdcfg.DefaultWorker,
		ReadTimeout: lazy.DefaultReadTimeout,
	}
	cmd := &cobra.Command{
		Use:   "snapshotter [--root DIR] [--socket PATH] [--worker ADDR]",
		Short: "Serve containerd a snapshotter that mounts eStargz layers lazily through the node's worker",
		Long: `Serves containerd's snapshots API on --socket, as the proxy plugin
"` + containerdcfg.SnapshotterName + `" that ` + "`faasnet containerd config`" + ` declares. CRI pulls of
eStargz images become lazy mounts: every read of a layer goes to the
worker's local runtime endpoint (--worker, the worker's --oci-listen), which
fetches it through the function tree. The registry is never contacted from
here; with the worker down a layer cannot be mounted and containerd's pull
goes to its hosts.toml mirror, the worker again. Other layers are unpacked
by containerd as with overlayfs.

Snapshots live under --root and survive a restart: at start the remote
ones are mounted again through the worker. It must run as root.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := snapshotter.New(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			return s.Serve(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.Root, "root", cfg.Root, "directory of the snapshots and their metadata")
	f.StringVar(&cfg.Socket, "socket", cfg.Socket, "unix socket containerd's proxy plugin names")
	f.StringVar(&cfg.Worker, "worker", cfg.Worker, "the worker's local runtime endpoint (its --oci-listen), host:port")
	f.DurationVar(&cfg.ReadTimeout, "read-timeout", cfg.ReadTimeout, "a read from a lazy layer not served in this time fails with EIO")
	return cmd
}
