package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/bench"
	"github.com/faasnet/faasnet/cluster"
	"github.com/faasnet/faasnet/units"
	"github.com/spf13/cobra"
)

func init() { subcommands = append(subcommands, newBenchCmd) }

func newBenchCmd() *cobra.Command {
	cfg := bench.Config{Timeout: 10 * time.Minute}
	tcfg := bench.TraceConfig{Window: 30 * time.Minute, Speedup: 20, Pool: 64, IdleTimeout: 15 * time.Minute, Drain: 10 * time.Minute}
	var (
		size      = units.Size(16 << 20)
		blocks    blockSizes
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
		Short: "Measure provisioning: faasnet's trees against registry pulls, a Kraken-like swarm and lazy fetching",
		Long: `bench runs each strategy on the same emulated VMs, images and bandwidth
limits, one after another with fresh caches, at each VM count of --vms, and
prints per strategy the makespan (scale request to last VM ready), the
percentiles of the VMs' ready times, the registry's egress, the busiest
VM's upload, the scenario's lower bound and the efficiency (lower bound /
makespan). Strategies: ` + strings.Join(cluster.Strategies(), ", ") + `.

With --lazy the function is real, and a VM is ready when its container
answers: a Python 3 image with numpy and scipy (about 260 MiB, built from
Debian packages the first time, then cached) and its eStargz conversion.
faasnet mounts the eStargz image lazily, fetching blocks through the tree
as the container reads them; ondemand does the same with no tree, every
VM fetching from the registry (the paper's optimized baseline); registry
pulls the whole plain image, unpacks it and starts the container, with
faasnet's worker and no tree; containerd gives every VM a containerd and
a faasnet snapshotter beside its worker, and starts the container through
containerd's CRI as kubelet does (needs containerd, ctr and the CNI
loopback plugin), the layers mounted lazily and read through the tree.
swarm cannot start containers. The table
adds the bytes fetched before each container answered and the median
time of each phase; the lower bound is then for the least any VM
fetched before it was ready. --lazy needs root, runc and /dev/fuse; its
defaults differ: ` + lazyDefaults + `.

With --lazy --replay-reads, the container runs once, on one VM fetching
from the registry, and its lazy mount records the byte ranges of the
layer blobs it reads until the container answers; then every VM of every
run replays exactly those reads, as concurrent as recorded, through its
worker's lazy path (the tree, or the registry), with no container and no
mount, and is ready when they completed. This takes the 2-core machine's
CPU out of lazy starts at 128 VMs and beyond; registry VMs are ready once
the whole image is fetched (no unpacking). --compare-containers runs each
strategy with real containers too, so that the two modes are side by
side.

With --trace DIR, bench replays a window of an Azure Functions trace
(2019 format) instead: the most bursty --window of it for --functions
functions, by the criterion it prints, with the invocations scaled so that
a pool of --pool VMs (one instance each) holds every instance, played
--speedup times faster. The real manager scales each function's tree out
at every minute's cold starts and in at its reclaims (idle for
--idle-timeout); a reclaimed VM starts again with an empty cache. Each
strategy (default faasnet, ondemand, registry) replays the same schedule,
with --replay-reads unless --replay-reads=false, and the simulator replays
the same window at the same scale beside it. It reports per strategy the
cold starts, the percentiles of their latency, the registry's egress and
the largest tree, and plots latency over trace time.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if tcfg.Dir != "" {
				return runTraceBench(cmd, &tcfg, &cfg, functions, bw, regBW, blocks.one(cmd.Flags().Changed), level)
			}
			if cfg.Lazy {
				lazyBenchDefaults(cmd.Flags().Changed, &cfg, &bw, &regBW)
			}
			if (cfg.ReplayReads && !cfg.Lazy) || (cfg.CompareContainers && !cfg.ReplayReads) {
				return errors.New("--replay-reads needs --lazy, and --compare-containers needs --replay-reads")
			}
			cfg.Scenario = cluster.Scenario{
				ImageSize: int64(size), Layers: layers, Functions: functions,
				Bandwidth: int64(bw), RegistryBandwidth: int64(regBW),
				BlockSize: blocks.one(cmd.Flags().Changed), PieceSize: int64(piece), Seed: seed,
			}
			if len(blocks) > 1 {
				cfg.BlockSizes = blocks
			}
			cfg.Out = cmd.OutOrStdout()
			cfg.Command = "faasnet " + strings.Join(os.Args[1:], " ")
			cfg.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
			_, err := bench.Run(cmd.Context(), cfg)
			return err
		},
	}
	f := cmd.Flags()
	f.TextVar(&level, "log-level", level, "log level of the components (debug, info, warn, error)")
	f.IntSliceVar(&cfg.VMs, "vms", []int{16}, "VM counts, one or a list for a sweep (16,32,64,128)")
	f.StringSliceVar(&cfg.Strategies, "strategies", []string{"faasnet", "registry", "swarm"}, "strategies to compare, in order")
	f.IntSliceVar(&cfg.Stripes, "stripes", nil, fmt.Sprintf("stripe trees per function for the faasnet strategies (default %d; 1: the paper's single tree); a list (1,2) runs them with each, side by side", api.DefaultStripes))
	f.Var(&size, "image-size", "approximate size of each generated image")
	f.IntVar(&layers, "layers", layers, "layers of each image")
	f.IntVar(&functions, "functions", functions, "functions per VM, overlapping, each with its own image")
	f.Var(&bw, "bandwidth", "each VM's upload and download limit (0: unlimited)")
	f.Var(&regBW, "registry-bandwidth", "the registry's egress limit (0: unlimited)")
	f.Var(&blocks, "block-size", "the block faasnet's manager assigns, or auto: picked per image (stripe.BlockFor); 512KiB with --lazy and --trace unless given; a list (512KiB,auto) runs the faasnet strategies with each, side by side")
	f.Var(&piece, "piece-size", "the swarm's piece size (Kraken's default 4MiB)")
	f.Int64Var(&seed, "seed", seed, "seed of the generated images and the swarm's random choices")
	f.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "give up on a run's VMs not ready after this long")
	f.StringVar(&cfg.JSON, "json", "", "write the results to this file as JSON")
	f.StringVar(&cfg.Plot, "plot", "", "draw the results to this SVG file")
	f.BoolVar(&cfg.Lazy, "lazy", false, "start the Python function's container on every VM (needs root, runc, /dev/fuse); see above")
	f.BoolVar(&cfg.ReplayReads, "replay-reads", false, "with --lazy: record once, on one VM, what the container reads before it answers, then have every VM replay those reads through its lazy path instead of starting a container (the network without this machine's CPU)")
	f.StringVar(&tcfg.Dir, "trace", "", "replay the most bursty window of the Azure Functions trace in this directory (invocations.csv, durations.csv); see above")
	f.DurationVar(&tcfg.Window, "window", tcfg.Window, "--trace: length of the window, in trace time")
	f.Float64Var(&tcfg.Speedup, "speedup", tcfg.Speedup, "--trace: play the trace this many times faster (the links keep their speed; at 60 a trace minute is shorter than a burst's cold starts through the registry, which are then reclaimed before they are ready)")
	f.IntVar(&tcfg.Pool, "pool", tcfg.Pool, "--trace: VMs in the pool, each hosting one instance at a time")
	f.DurationVar(&tcfg.IdleTimeout, "idle-timeout", tcfg.IdleTimeout, "--trace: reclaim an instance idle this long, in trace time")
	f.Float64Var(&tcfg.Scale, "scale-factor", 0, "--trace: multiply every invocation count (0: the most at which the pool holds every instance)")
	f.DurationVar(&tcfg.Drain, "drain", tcfg.Drain, "--trace: after the window, wait at most this long for starts under way")
	f.BoolVar(&cfg.CompareContainers, "compare-containers", false, "with --replay-reads: also run every strategy with real containers, side by side with its replay")
	return cmd
}

// The defaults of bench --lazy, where a flag does not say otherwise: the
// demo's links, and a timeout that lets the registry strategy finish at 32
// VMs on a 2-core machine (measured: pulling 32 times 258 MiB through the
// registry's 32 MiB/s takes 260 s, then unpacking 32 times 866 MB to disk
// another 330 s).
var (
	lazyStrategies = []string{"faasnet", "ondemand", "registry"}
	lazyBandwidth  = units.Rate(32 << 20)
	lazyVMs        = []int{16}
	lazyTimeout    = 20 * time.Minute
	lazyDefaults   = fmt.Sprintf("--strategies %s --vms %d --bandwidth %s --registry-bandwidth %s --timeout %v",
		strings.Join(lazyStrategies, ","), lazyVMs[0], lazyBandwidth.String(), lazyBandwidth.String(), lazyTimeout)
)

// lazyBenchDefaults applies the defaults of --lazy to the flags not given.
func lazyBenchDefaults(changed func(flag string) bool, cfg *bench.Config, bw, regBW *units.Rate) {
	if !changed("strategies") {
		cfg.Strategies = lazyStrategies
	}
	if !changed("vms") {
		cfg.VMs = lazyVMs
	}
	if !changed("bandwidth") {
		*bw = lazyBandwidth
	}
	if !changed("registry-bandwidth") {
		*regBW = lazyBandwidth
	}
	if !changed("timeout") {
		cfg.Timeout = lazyTimeout
	}
}

// runTraceBench runs bench --trace with the lazy bench's links.
func runTraceBench(cmd *cobra.Command, tcfg *bench.TraceConfig, cfg *bench.Config, functions int, bw, regBW units.Rate, block int64, level slog.Level) error {
	changed := cmd.Flags().Changed
	lazyBenchDefaults(changed, cfg, &bw, &regBW)
	tcfg.Functions = 8
	if changed("functions") {
		tcfg.Functions = functions
	}
	tcfg.Strategies, tcfg.Stripes = cfg.Strategies, cfg.Stripes
	tcfg.Replay = cfg.ReplayReads || !changed("replay-reads")
	tcfg.Scenario = cluster.Scenario{Bandwidth: int64(bw), RegistryBandwidth: int64(regBW), BlockSize: block}
	tcfg.JSON, tcfg.Plot, tcfg.Out = cfg.JSON, cfg.Plot, cmd.OutOrStdout()
	tcfg.Command = "faasnet " + strings.Join(os.Args[1:], " ")
	tcfg.RecordFor = cfg.Timeout
	tcfg.Logger = slog.New(slog.NewTextHandler(cmd.ErrOrStderr(), &slog.HandlerOptions{Level: level}))
	_, err := bench.RunTrace(cmd.Context(), *tcfg)
	return err
}

// blockSizes is --block-size: sizes, or auto (0) for the manager's pick.
type blockSizes []int64

func (b *blockSizes) Set(v string) error {
	*b = (*b)[:0]
	for _, f := range strings.Split(v, ",") {
		if f == "auto" {
			*b = append(*b, 0)
			continue
		}
		n, err := units.ParseSize(f)
		if err != nil || n <= 0 {
			return fmt.Errorf("block size %q: want a positive size or auto", f)
		}
		*b = append(*b, n)
	}
	return nil
}

func (b blockSizes) String() string {
	if len(b) == 0 {
		return "auto"
	}
	out := make([]string, len(b))
	for i, n := range b {
		out[i] = "auto"
		if n > 0 {
			out[i] = units.Size(n).String()
		}
	}
	return strings.Join(out, ",")
}

func (blockSizes) Type() string { return "sizes" }

// lazyBlock is the block of --lazy and --trace runs when --block-size is
// not given: the block their recorded results were measured with.
const lazyBlock = 512 << 10

// one is the scenario's block: the only one given (0: auto), or with
// --lazy or --trace and none given, lazyBlock.
func (b blockSizes) one(changed func(string) bool) int64 {
	switch {
	case len(b) == 1:
		return b[0]
	case len(b) == 0 && !changed("block-size") && (changed("lazy") || changed("trace")):
		return lazyBlock
	}
	return 0
}
