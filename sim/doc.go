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
// # Strategies
//
//   - faasnet: the tree streams the whole image; the root pulls from the
//     registry.
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
