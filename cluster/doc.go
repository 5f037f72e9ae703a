// Package cluster runs a whole image-distribution system in one process, for
// `faasnet demo` and `faasnet bench`: an OCI registry on a loopback listener
// whose egress is limited and counted, the scenario's generated images
// pushed to it, and emulated VMs provisioned by one Strategy at a time.
//
// Emulated VMs are the production components: faasnet workers and a
// manager (Faasnet, and OnDemand: the same without trees), plain registry
// pullers (RegistryPull), or the agents, origin and tracker of package
// swarm (Swarm). Each VM listens on a
// loopback address of its own (127.1.x.y), and has its own upload and
// download limiters (bwlimit), shared by all its streams as a NIC would
// be. Caches live in a fresh directory per run, in memory (/dev/shm) where
// there is room, so that a shared disk's fsyncs do not pace an emulated
// network.
//
// A Harness holds the registry and the images; Run deploys a strategy on
// fresh VMs, starts provisioning every image on every VM at once, waits,
// checks every VM's content against the digests, stops everything, and
// returns a Result: ready times, makespan and percentiles, registry egress,
// the busiest VM's upload, the lower bound (package bound) and the efficiency,
// and the CPU used meanwhile by this process and by the whole machine
// (numbers measured on a saturated CPU describe the machine, not the
// network).
//
// With a Function (Options.Function, e.g. PythonFunction) runs go all the
// way to a running container: the harness pushes the function's image and
// its eStargz conversion, and every VM's worker starts the container with
// runc (over a lazy FUSE mount of the eStargz image for Faasnet and
// OnDemand; after a whole pull and unpacking of the plain image for
// RegistryPull); with Containerd, each VM's containerd starts it through
// CRI over faasnet snapshotter's lazy layers (package crinode). A VM is
// ready when the container answers. Results then
// also carry what each VM fetched before it was ready and the time of
// each phase.
package cluster
