package main

import (
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/faasnet/faasnet/cluster"
	"github.com/faasnet/faasnet/report"
	"github.com/faasnet/faasnet/units"
	"github.com/spf13/cobra"
)

func init() { subcommands = append(subcommands, newBenchCmd) }

func newBenchCmd() *cobra.Command {
	cfg := report.BenchConfig{Timeout: 10 * time.Minute}
	var (
		size            = units.Size(16 << 20)
		block           = units.Size(512 << 10)
		piece           = units.Size(4 << 20)
		bw              = units.Rate(4 << 20)
		regBW           = units.Rate(16 << 20)
		layers          = 4
		functions       = 1
		seed      int64 = 1
		level           = slog.LevelError
	)
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure provisioning: faasnet's trees against registry pulls and a Kraken-like swarm",
		Long: `bench runs each strategy on the same emulated VMs, images and bandwidth
limits, one after another with fresh caches, at each VM count of --vms, and
prints per strategy the makespan (scale request to last VM ready), the
percentiles of the VMs' ready times, the registry's egress, the busiest
VM's upload, the scenario's lower bound and the efficiency (lower bound /
makespan). Strategies: ` + strings.Join(cluster.Strategies(), ", ") + `.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Scenario = cluster.Scenario{
				ImageSize: int64(size), Layers: layers, Functions: functions,
				Bandwidth: int64(bw), RegistryBandwidth: int64(regBW),
				BlockSize: int64(block), PieceSize: int64(piece), Seed: seed,
			}
			cfg.Out = cmd.OutOrStdout()
			cfg.Command = "faasnet " + strings.Join(os.Args[1:], " ")
			cfg.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
			_, err := report.Bench(cmd.Context(), cfg)
			return err
		},
	}
	f := cmd.Flags()
	f.TextVar(&level, "log-level", level, "log level of the components (debug, info, warn, error)")
	f.IntSliceVar(&cfg.VMs, "vms", []int{16}, "VM counts, one or a list for a sweep (16,32,64,128)")
	f.StringSliceVar(&cfg.Strategies, "strategies", []string{"faasnet", "registry", "swarm"}, "strategies to compare, in order")
	f.Var(&size, "image-size", "approximate size of each generated image")
	f.IntVar(&layers, "layers", layers, "layers of each image")
	f.IntVar(&functions, "functions", functions, "functions per VM, overlapping, each with its own image")
	f.Var(&bw, "bandwidth", "each VM's upload and download limit (0: unlimited)")
	f.Var(&regBW, "registry-bandwidth", "the registry's egress limit (0: unlimited)")
	f.Var(&block, "block-size", "faasnet's block size")
	f.Var(&piece, "piece-size", "the swarm's piece size (Kraken's default 4MiB)")
	f.Int64Var(&seed, "seed", seed, "seed of the generated images and the swarm's random choices")
	f.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "give up on a run's VMs not ready after this long")
	f.StringVar(&cfg.JSON, "json", "", "write the results to this file as JSON")
	f.StringVar(&cfg.Plot, "plot", "", "draw the results to this SVG file")
	return cmd
}
