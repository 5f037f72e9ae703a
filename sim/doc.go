// Package sim is a discrete-event simulator of container provisioning at
// scales one machine cannot emulate: thousands of VMs, each with its own
// network link, starting containers of functions whose images they fetch.
//
// # Control plane
//
// The simulator runs the real control-plane code: package forest, which
// the manager keeps its VMs and function trees in (FT-aware placement:
// every tree weighs a VM by its fan-out across all its trees), and package
// placement for picking VMs. A test drives the real manager and the
// simulator through the same operations and checks that they build the same
// trees. The trees are kept under every strategy, so that strategies see
// the same placement and differ only in how data moves.
//
// # Network model
//
// The model is fluid (flow-level), not packet-level. Every VM has an uplink
// and a downlink of Config.Bandwidth each (full duplex); the registry has an
// egress link of Config.RegistryBandwidth. A flow crosses its sender's
// uplink (or the registry's egress) and its receiver's downlink. Flows that
// share a link share it max-min fairly, as long-lived TCP flows roughly do;
// rates are recomputed by progressive filling (maxMin) whenever a flow
// starts, ends or changes state, and are constant in between, so the engine
// jumps from event to event.
//
// Trees pipeline blocks (Config.BlockSize): a VM forwards a block once it
// has fully arrived. Modelling each block as a flow would take an event per
// block per VM; instead each VM's copy of an image (of each layer, see
// Config.Layers) is one byte counter fed by one flow from its parent, with
// two rules that give the same timing:
//
//   - a child may hold at most its parent's bytes less one block, until the
//     parent has the whole image (then all of it);
//   - a child that has caught up with that limit cannot go faster than its
//     parent receives: the solver bounds its rate by the parent's (capBy).
//
// So a chain runs at the smallest share along it, and each hop adds one
// block time at that rate plus one Config.Latency (the first block's
// travel; a request also waits one latency). A VM with two children splits
// its uplink between them, so a tree of 2^k VMs with equal links finishes at
// 2S/bw + (2k-2)·B/bw + k·latency, which TestTreeMakespan checks. Layers
// stream in parallel and share the links, so each waits a block at its
// share of the rate: more layers, longer hops.
//
// # Stripes
//
// With Config.Stripes = k > 1 each function has k stripe trees
// (ftree.Striped, through forest as the manager keeps them) and block i of
// every layer goes down stripe i mod k (stripeSizes); a one-block layer
// goes down stripe 0 alone. Each VM holds one replica per layer and stripe,
// fed from its parent in that stripe, with the block rules above applied
// per stripe; each stripe's root fetches that stripe from the registry, so
// the registry still sends every byte once. A VM's uplink is one link,
// shared max-min by everything it forwards (its children in its home
// stripe, every layer), and its downlink by the k stripes it receives.
//
// With fan-out k a VM forwards S/k to each of k children: every flow runs at
// bw/k and the image arrives in S/bw, against 2S/bw for one binary tree. The
// pipeline adds, per tree level, one block at the share one flow gets when
// the level starts, while all layers flow: B·k·L/bw for L layers (B·2·L/bw
// for one tree). In the runs of docs/sim every added level costs exactly
// that: 1 s at 512 KiB, 4 layers, 4 MiB/s, k = 2, and 0.125 s at 64 KiB.
// BlockFor picks B so that this stays near 1% of S/bw.
//
// Measured (docs/sim/paper-stripes.txt, 128 VMs, 758 MB, 1 Gbps, S/bw =
// 6.06 s): one tree 12.19 s; k = 2: 6.12 s; k = 3: 8.14 s; k = 4: 6.13 s.
// With k = 3 and 128 VMs one group is short of a member, so one VM has four
// children and that stripe runs at bw/4: (k+1)/k·S/bw. Binary stripe
// trees (StripeFanout 2) with 3 or 4 stripes take 12.3 s: VMs interior in
// several stripes upload up to 2S. The bench's scenario (16 MiB, 4 layers,
// 4 MiB/s, docs/sim/bench-stripes.txt) gives k = 2 4.4-4.8 s against one
// tree's 8.3-8.7 s at the block BlockFor picks (64 KiB), 7-10 s against
// 10.6-13.6 s at 512 KiB. DefaultStripes is 2: as fast as 4 on the paper's
// scenario and faster on the bench's (shorter hops: k·B/bw per level), never
// short of group members (n mod 2 <= 1, so no VM gets a third child), and
// half the connections per VM.
//
// # Strategies
//
//   - faasnet: the trees stream the whole image; each stripe's root pulls
//     its stripe from the registry.
//   - faasnet-lazy: the same tree moves only the part read before start
//     (Config.ReadFraction), as FaaSNet's on-demand block fetching does;
//     what is read later is not modelled.
//   - registry: every VM pulls the whole image from the registry.
//   - ondemand: every VM fetches only the read part from the registry.
//   - swarm: a Kraken-like swarm (SwarmConfig), as package swarm runs it
//     in the emulation: each layer a torrent of pieces of Config.PieceSize
//     served only once complete, a tracker that hands out complete peers,
//     the origin, then the others, bounded connections (dials count, a
//     peer without room refuses and is not dialed again for a while), a few
//     pipelined requests per connection, rarest piece first, connections
//     closed once both sides are complete. A connection in each direction
//     is one flow carrying its queued pieces one after the other; each
//     completed piece is an event. The registry is the origin.
//
// An image is Config.Layers layers, sized as the bench's generated images
// are; every strategy moves them in parallel, each on its own pipeline or
// torrent, as the emulation's workers and agents do.
//
// A container starts Config.StartTime after its VM has the bytes it needs.
//
// # Time
//
// Event times are rounded up to Config.Resolution (by default a
// ten-thousandth of the scenario's lower bound): events that fall close
// together are handled in one step. Bytes are clamped to what the sender
// has, so rounding only delays events, by less than one resolution each.
//
// # Trace replay
//
// Replay reads an Azure Functions 2019 trace (ReadTrace): per minute, a
// function needs ceil(invocations × average duration / 60 s) instances. It
// reuses warm instances, reclaims those idle for ReplayConfig.IdleTimeout,
// and scales out for the rest over a pool of Config.VMs VMs with at most
// Config.FunctionsPerVM functions each; each new instance is a cold start
// whose provisioning latency is measured. The first minute starts warm.
//
// # Calibration
//
// The emulation (faasnet bench) runs real workers under bandwidth limits.
// ReadBench reads its results, Bench.Config its scenario, and Calibrate
// simulates the same runs, so that both can be put side by side
// (faasnet sim --calibrate). SwarmConfig's defaults are the emulation's
// swarm's, except for endgame (see DefaultSwarm).
//
// # What is left out
//
// TCP dynamics (slow start, loss), CPU, disk and decompression costs, and
// the control plane's own latency. Every function has its own image of
// Config.ImageSize bytes, and a VM keeps no image after its instance is
// reclaimed. The swarm's endgame is off by default (see DefaultSwarm), and
// its piece requests never time out.
package sim
