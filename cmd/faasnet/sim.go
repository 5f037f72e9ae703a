package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/faasnet/faasnet/sim"
	"github.com/faasnet/faasnet/units"
	"github.com/spf13/cobra"
)

func init() { subcommands = append(subcommands, newSimCmd) }

// simFlags are the flags of faasnet sim that need converting.
type simFlags struct {
	vms        string
	stripes    string
	strategies string
	imageSize  units.Size
	blockSize  units.Size
	pieceSize  units.Size
	bandwidth  units.Rate
	registry   units.Rate
	jsonFile   string
	plotFile   string
	traceDir   string
	calibrate  string
	tolerance  float64
	replay     sim.ReplayConfig
}

func newSimCmd() *cobra.Command {
	def := sim.DefaultConfig()
	fl := simFlags{
		vms:        "128",
		strategies: strings.Join(strategyNames(), ","),
		imageSize:  units.Size(def.ImageSize),
		blockSize:  units.Size(def.BlockSize),
		pieceSize:  units.Size(def.PieceSize),
		bandwidth:  units.Rate(def.Bandwidth),
		registry:   units.Rate(def.RegistryBandwidth),
		replay:     sim.ReplayConfig{Config: def, IdleTimeout: 15 * time.Minute, ScaleFactor: 1},
		tolerance:  0.2,
	}
	fl.replay.VMs = 1000
	cfg := &fl.replay.Config
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "Simulate scale-out at any size, or replay a trace, with the real tree and placement code",
		Long: `sim simulates starting containers on many VMs at once: the manager's
placement and function trees (the same code), and a flow-level network in
which every VM has an uplink and a downlink, the registry an egress link,
and concurrent transfers share links max-min fairly. The defaults are the
paper's 128-VM experiment. --vms 8,16,32 sweeps concurrency; --trace DIR
replays an Azure Functions trace over a pool of --pool VMs instead.

--calibrate FILE reads the results of faasnet bench --json FILE and
simulates the same runs: the bench's image (size and layers), links, block
and piece size, VM counts and strategies, with a flow latency of 0 unless
--latency is given; it prints the simulated and the emulated makespans
side by side and marks those more than --tolerance apart.

--read-chain N and --read-latency D model a container whose reads before
start wait one for another (faasnet-lazy and ondemand only): each of the N
reads on the chain pays a round trip of D that no bandwidth overlaps, so
every lazy start comes N x D later. faasnet bench --trace writes the chain
of its recorded reads (cluster.FetchChain) as fetch_chain and the latency
it simulated them with as read_latency_s. The default, 0, leaves a lazy
start at its bytes alone; a chain without a latency costs nothing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runSim(cmd, &fl)
		},
	}
	f := cmd.Flags()
	f.StringVar(&fl.vms, "vms", fl.vms, "VMs, one container each unless --containers; a list (8,16,32) sweeps")
	f.IntVar(&cfg.Containers, "containers", 0, "containers to start at once (default: one per VM)")
	f.IntVar(&cfg.Functions, "functions", 0, "functions the containers belong to, each with its own image and tree (default: containers/VMs, rounded up)")
	f.IntVar(&cfg.FunctionsPerVM, "functions-per-vm", cfg.FunctionsPerVM, "most functions one VM hosts")
	f.Var(&fl.imageSize, "image-size", "image size, e.g. 758MB")
	f.Var(&fl.bandwidth, "bandwidth", "each VM's upload and download bandwidth, e.g. 1Gbps")
	f.Var(&fl.registry, "registry-bandwidth", "registry egress (0: unlimited); the default makes 128 pulls of 758MB take the paper's 83.3s")
	f.StringVar(&fl.strategies, "strategies", fl.strategies, "strategies to compare, comma-separated, or all")
	f.StringVar(&fl.jsonFile, "json", "", "write results as JSON to this file")
	f.StringVar(&fl.plotFile, "plot", "", "write an SVG plot to this file: ready-time CDF, makespan against concurrency for a sweep, cold-start latency CDF for a trace")
	f.Float64Var(&cfg.ReadFraction, "read-fraction", cfg.ReadFraction, "share of the image read before start, for faasnet-lazy and ondemand")
	f.IntVar(&cfg.ReadChain, "read-chain", 0, "reads before start that wait one for another, each paying --read-latency, for faasnet-lazy and ondemand (0: none)")
	f.DurationVar(&cfg.ReadLatency, "read-latency", 0, "round trip of one read on the --read-chain")
	f.StringVar(&fl.traceDir, "trace", "", "replay the Azure Functions trace in this directory (invocations.csv, durations.csv)")
	f.Var(&fl.blockSize, "block-size", "block size forwarded down the tree (0: pick per run from the image, layers, VMs and stripes, see sim.BlockFor)")
	f.Var(&fl.pieceSize, "piece-size", "swarm piece size")
	f.DurationVar(&cfg.Latency, "latency", cfg.Latency, "latency of one hop")
	f.DurationVar(&cfg.StartTime, "start-time", cfg.StartTime, "time a container takes to start once its data is there")
	f.DurationVar(&cfg.Resolution, "resolution", 0, "event time step; coarser is faster (0: a ten-thousandth of the lower bound)")
	f.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "seed of the swarm's random choices")
	f.IntVar(&cfg.Swarm.Conns, "swarm-conns", cfg.Swarm.Conns, "swarm: connections per peer")
	f.IntVar(&cfg.Swarm.Pipeline, "swarm-pipeline", cfg.Swarm.Pipeline, "swarm: outstanding piece requests per connection")
	f.DurationVar(&fl.replay.IdleTimeout, "idle-timeout", fl.replay.IdleTimeout, "trace: reclaim an instance idle this long")
	f.IntVar(&fl.replay.VMs, "pool", fl.replay.VMs, "trace: VMs in the pool")
	f.Float64Var(&fl.replay.ScaleFactor, "scale-factor", fl.replay.ScaleFactor, "trace: multiply every invocation count")
	f.IntVar(&fl.replay.Minutes, "minutes", 0, "trace: replay only the first minutes (0: all)")
	f.StringVar(&fl.stripes, "stripes", fmt.Sprint(sim.DefaultStripes), "stripe trees per function: block i goes down stripe i mod N (1: the paper's single binary tree); a list (1,2,4) runs the tree strategies with each, side by side")
	f.IntVar(&cfg.StripeFanout, "stripe-fanout", 0, "fan-out of the stripe trees: 0 for N (each VM interior in one stripe), 2 for one binary tree per stripe (to compare)")
	f.IntVar(&cfg.Layers, "layers", 1, "layers of each image, moved in parallel (sized as the bench's generated images)")
	f.IntVar(&cfg.Swarm.Endgame, "swarm-endgame", cfg.Swarm.Endgame, "swarm: missing pieces at which a peer asks several peers for each (0: no endgame; the emulation uses 3)")
	f.StringVar(&fl.calibrate, "calibrate", "", "simulate the runs of this faasnet bench --json file and compare")
	f.Float64Var(&fl.tolerance, "tolerance", fl.tolerance, "calibration: relative difference of makespans flagged")
	return cmd
}

func strategyNames() []string {
	out := make([]string, len(sim.Strategies))
	for i, s := range sim.Strategies {
		out[i] = string(s)
	}
	return out
}

func runSim(cmd *cobra.Command, fl *simFlags) error {
	cfg := &fl.replay.Config
	// sim refuses these too, but in one sentence for both and without the
	// flags' names.
	if cfg.ReadChain < 0 {
		return fmt.Errorf("--read-chain %d: must not be negative", cfg.ReadChain)
	}
	if cfg.ReadLatency < 0 {
		return fmt.Errorf("--read-latency %v: must not be negative", cfg.ReadLatency)
	}
	strategies, err := sim.ParseStrategies(fl.strategies)
	if err != nil {
		return fmt.Errorf("--strategies: %w", err)
	}
	cfg.ImageSize, cfg.BlockSize, cfg.PieceSize = int64(fl.imageSize), int64(fl.blockSize), int64(fl.pieceSize)
	cfg.Bandwidth, cfg.RegistryBandwidth = int64(fl.bandwidth), int64(fl.registry)
	stripes, err := parseInts(fl.stripes)
	if err != nil {
		return fmt.Errorf("--stripes: %w", err)
	}
	cfg.Stripes = stripes[0]
	out := cmd.OutOrStdout()
	files := sim.Files{JSON: fl.jsonFile, Plot: fl.plotFile}
	if fl.calibrate != "" {
		for _, name := range []string{"trace", "vms", "containers", "functions", "image-size", "bandwidth", "registry-bandwidth", "block-size", "piece-size", "layers", "strategies"} {
			if cmd.Flags().Changed(name) {
				return fmt.Errorf("--calibrate takes the scenario from the bench's results, not --%s", name)
			}
		}
		if !cmd.Flags().Changed("latency") {
			// Loopback: what the emulation adds per hop is its own
			// cost, which calibration is there to show.
			cfg.Latency = 0
		}
		return sim.CalibrateFile(out, fl.calibrate, *cfg, fl.tolerance, fl.jsonFile)
	}
	if fl.traceDir != "" {
		if cmd.Flags().Changed("vms") || cmd.Flags().Changed("containers") {
			return errors.New("--trace takes the pool size from --pool and the containers from the trace, not --vms or --containers")
		}
		return sim.ReplayTrace(out, fl.traceDir, fl.replay, strategies, stripes, files)
	}
	if cmd.Flags().Changed("pool") || cmd.Flags().Changed("scale-factor") || cmd.Flags().Changed("minutes") || cmd.Flags().Changed("idle-timeout") {
		return errors.New("--pool, --scale-factor, --minutes and --idle-timeout need --trace")
	}
	sizes, err := parseInts(fl.vms)
	if err != nil {
		return fmt.Errorf("--vms: %w", err)
	}
	if len(sizes) > 1 && cfg.Containers != 0 {
		return errors.New("--containers cannot go with a --vms sweep: each point starts one container per VM")
	}
	return sim.Sweep(out, *cfg, sizes, strategies, stripes, files)
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	return out, nil
}
