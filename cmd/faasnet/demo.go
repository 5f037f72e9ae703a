package main

import (
	"log/slog"
	"os"
	"strconv"

	"github.com/faasnet/faasnet/demo"
	"github.com/faasnet/faasnet/progress"
	"github.com/faasnet/faasnet/units"
	"github.com/spf13/cobra"
)

func init() { subcommands = append(subcommands, newDemoCmd) }

func newDemoCmd() *cobra.Command {
	cfg := demo.Defaults
	size, block := units.Size(cfg.ImageSize), units.Size(cfg.BlockSize)
	bw, regBW := units.Rate(cfg.Bandwidth), units.Rate(cfg.RegistryBandwidth)
	level := slog.LevelError // the workers' transient warnings would break the live view
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the whole system on this machine: a registry, a manager and workers streaming an image down a function tree",
		Long: `demo starts, in this process and on loopback only, a registry holding a
generated multi-layer image, a manager and --vms workers with per-VM
bandwidth limits; scales a function onto all workers at once; shows the
progress and ends with the tree, each VM's ready time and the bytes the
registry served. It exits non-zero if any VM did not end with the image
complete and verified. Everything it starts is stopped and removed.

With --lazy the function is real: a Python 3 image with numpy and scipy
(about 260 MiB, built from Debian packages with debootstrap the first
time, a minute or two, then cached), converted to eStargz (cached too).
Every worker mounts the image through FUSE, starts the function's
container with runc, and is ready when the container answers its
readiness check; blocks are fetched as the container reads them, through
the tree. The summary adds the bytes each VM fetched before its container
answered and the time of each phase. --lazy needs root, runc and
/dev/fuse; --image-size and --layers do not apply. Its default VM count
is ` + strconv.Itoa(demo.LazyVMs) + `, as without: on a 2-core machine all 16 containers answer
within about 5 s of the scale request, 32 within 11 to 14 s (the CPU is
the limit).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.ImageSize, cfg.BlockSize = int64(size), int64(block)
			if cfg.Lazy && !cmd.Flags().Changed("vms") {
				cfg.VMs = demo.LazyVMs
			}
			cfg.Bandwidth, cfg.RegistryBandwidth = int64(bw), int64(regBW)
			cfg.Out = cmd.OutOrStdout()
			cfg.Live = cfg.Out == os.Stdout && progress.IsTerminal(os.Stdout)
			cfg.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
			_, err := demo.Run(cmd.Context(), cfg)
			return err
		},
	}
	f := cmd.Flags()
	f.TextVar(&level, "log-level", level, "log level of the components (debug, info, warn, error)")
	f.IntVar(&cfg.VMs, "vms", cfg.VMs, "number of emulated VMs (workers)")
	f.Var(&size, "image-size", "approximate size of the generated image")
	f.IntVar(&cfg.Layers, "layers", cfg.Layers, "layers of the generated image")
	f.Var(&bw, "bandwidth", "each VM's upload and download limit (0: unlimited)")
	f.Var(&regBW, "registry-bandwidth", "the registry's egress limit (0: unlimited)")
	f.Var(&block, "block-size", "block size of the caches and the peer protocol (0: the default, 512KiB)")
	f.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "give up on VMs not ready after this long")
	f.StringVar(&cfg.JSON, "json", "", "write the summary to this file as JSON")
	f.BoolVar(&cfg.UI, "ui", false, "print the manager's live view address (/ui/) and keep the cluster up after the scale-out until Ctrl-C")
	f.BoolVar(&cfg.Lazy, "lazy", false, "run the Python function's containers over lazy eStargz mounts (needs root, runc, /dev/fuse)")
	f.BoolVar(&cfg.CompareSandbox, "compare-sandbox", false, "with --lazy: run the scale-out four times, the containers' sandbox off and on in turn, and print what the sandbox adds to a start")
	return cmd
}
