package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/faasnet/faasnet/enroll"
	"github.com/faasnet/faasnet/lazy"
	"github.com/faasnet/faasnet/pki"
	"github.com/faasnet/faasnet/runc"
	"github.com/faasnet/faasnet/token"
	"github.com/faasnet/faasnet/units"
	"github.com/faasnet/faasnet/unpack"
	"github.com/faasnet/faasnet/upstream"
	"github.com/faasnet/faasnet/worker"
	"github.com/spf13/cobra"
)

func init() { subcommands = append(subcommands, newWorkerCmd) }

func newWorkerCmd() *cobra.Command {
	var (
		cfg       worker.Config
		listen    string
		ociListen string
		ociPublic bool
		cacheSize units.Size
		blockSize = units.Size(512 << 10)
		up, down  units.Rate
		caFile    string
		joinFile  string
		certDir   string
		sandbox   = sandboxFlags{egress: "allow", cidr: "auto"}
		limits    = struct{ manifest, config, toc, span, unpackBytes, log units.Size }{
			units.Size(upstream.MaxManifestSize), units.Size(worker.DefaultMaxConfigSize),
			units.Size(lazy.DefaultMaxTOCSize), units.Size(lazy.DefaultMaxChunkSpan), units.Size(unpack.DefaultMaxBytes),
			units.Size(runc.DefaultMaxLogSize),
		}
	)
	cmd := &cobra.Command{
		Use:   "worker",
		Short: "Run the agent of one VM: fetch images down the function trees and serve them",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) (err error) {
			if cfg.ID == "" {
				host, _ := os.Hostname()
				cfg.ID = host
			}
			cfg.CacheSize, cfg.BlockSize = int64(cacheSize), int64(blockSize)
			cfg.UploadLimit, cfg.DownloadLimit = int64(up), int64(down)
			if int64(limits.manifest) > upstream.MaxManifestSize {
				return fmt.Errorf("--max-manifest-size %s: at most %s (a manifest is parsed in memory)", limits.manifest, units.Size(upstream.MaxManifestSize))
			}
			cfg.Limits.MaxManifestSize, cfg.Limits.MaxConfigSize = int64(limits.manifest), int64(limits.config)
			cfg.Limits.MaxTOCSize, cfg.Limits.MaxChunkSpan = int64(limits.toc), int64(limits.span)
			cfg.Limits.MaxUnpackBytes, cfg.Limits.MaxLogSize = int64(limits.unpackBytes), int64(limits.log)
			if cfg.CacheDir == "" {
				cfg.CacheDir = "faasnet-cache-" + cfg.ID
			}
			if cfg.Sandbox, err = sandbox.parse(); err != nil {
				return err
			}
			if certDir == "" {
				certDir = filepath.Clean(cfg.CacheDir) + ".pki"
			}
			oci, err := worker.ListenOCI(cmd.Context(), ociListen, ociPublic)
			if errors.Is(err, worker.ErrNotLoopback) {
				return fmt.Errorf("--oci-listen %s: the endpoint serves this VM's images without authentication, pass --oci-listen-public to listen there (%w)", ociListen, err)
			}
			if err != nil {
				return fmt.Errorf("--oci-listen: %w", err)
			}
			cfg.OCI = oci
			cfg.Security, err = workerSecurity(cmd.Context(), cfg.Manager, caFile, joinFile, cfg.ID, certDir)
			if err != nil {
				closeListener(oci)
				return err
			}
			w, err := worker.New(cfg)
			if err != nil {
				closeListener(oci)
				return err
			}
			ln, err := net.Listen("tcp", listen)
			if err != nil {
				closeListener(oci)
				return fmt.Errorf("listening on %s: %w", listen, err)
			}
			return w.Serve(cmd.Context(), ln)
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.ID, "id", "", "VM name (default: the host name)")
	f.StringVar(&listen, "listen", "127.0.0.1:7071", "address for peers, the manager's pushes, /metrics and /healthz")
	f.StringVar(&ociListen, "oci-listen", "127.0.0.1:5050", `address of the read-only OCI registry mirror for the local containerd or skopeo: host:port (loopback unless --oci-listen-public), a unix socket "unix:/path" (or any path with a "/"), or "" or "none" for no endpoint`)
	f.BoolVar(&ociPublic, "oci-listen-public", false, "allow a non-loopback --oci-listen address (the endpoint has no authentication)")
	f.StringVar(&cfg.Advertise, "advertise", "", "address registered with the manager (default: the listening address)")
	f.StringVar(&cfg.Manager, "manager", "https://127.0.0.1:7070", "manager URL (https), or several of one cluster, comma-separated: the worker moves to the next when one cannot be reached")
	f.StringVar(&caFile, "ca", "", "the cluster CA certificate (PEM; the manager's DATA/ca.crt): the manager, peers and grants are checked against it (required)")
	f.StringVar(&joinFile, "join-token", "", "file holding the join token (the manager's DATA/join.token), to enroll; not needed while --cert-dir holds a valid certificate for --id")
	f.StringVar(&certDir, "cert-dir", "", "directory of this VM's key and certificate, ID.key and ID.crt (default CACHE.pki)")
	f.StringVar(&cfg.CacheDir, "cache", "", "cache directory (default faasnet-cache-ID)")
	f.Var(&cacheSize, "cache-size", "cache size limit, e.g. 10GiB (0: unlimited)")
	f.Var(&blockSize, "block-size", "block size of the peer protocol and cache")
	f.Var(&up, "upload-limit", "upload bandwidth to children, e.g. 4MiB/s or 1Gbps (0: unlimited)")
	f.Var(&down, "download-limit", "download bandwidth from parent or registry (0: unlimited)")
	f.IntVar(&cfg.MaxUploads, "max-uploads", 16, "concurrent child streams")
	f.IntVar(&cfg.Capacity, "capacity", 0, "functions this VM may host (0: the manager's default, 20)")
	f.DurationVar(&cfg.Heartbeat, "heartbeat", time.Second, "heartbeat interval")
	f.DurationVar(&cfg.ParentTimeout, "parent-timeout", 5*time.Second, "how long to wait for a failed parent's replacement before fetching from the registry")
	f.DurationVar(&cfg.BusyTimeout, "busy-timeout", 30*time.Second, "how long to wait for a parent at its upload cap (503) before fetching from the registry")
	f.BoolVar(&cfg.Containers, "containers", false, "run the containers of functions with a readiness check (needs root and runc)")
	f.StringVar(&cfg.RunDir, "run-dir", "", "directory for container bundles, runc state and mounts (default CACHE.run)")
	f.BoolVar(&sandbox.on, "sandbox", true, "fence containers in: a network and a user namespace of their own (--sandbox=false only to measure what that costs)")
	f.StringVar(&sandbox.cidr, "container-cidr", sandbox.cidr, `IPv4 range of the containers' addresses, each takes a /30 ("auto": the first free /16 of a few private ones); workers sharing a machine need ranges of their own`)
	f.StringVar(&sandbox.egress, "container-egress", sandbox.egress, `"allow": containers reach what the VM's routing reaches, except the worker, the managers, other containers and link-local addresses; "deny": nothing beyond the VM`)
	f.StringVar(&sandbox.uids, "container-uids", "", fmt.Sprintf("host uids and gids of the containers' users, FIRST:COUNT (default %d:%d)", worker.DefaultUsers.Host, worker.DefaultUsers.Size))
	f.DurationVar(&cfg.StallTimeout, "stall-timeout", 10*time.Second, "a stream that delivers nothing this long counts as failed")
	// Budgets of one image: the registry and the tree parent are outside
	// input (see worker.Limits).
	f.Var(&limits.manifest, "max-manifest-size", "largest image manifest fetched (at most 4MiB)")
	f.Var(&limits.config, "max-config-size", "largest image config fetched and parsed")
	f.Var(&limits.toc, "max-toc-size", "largest eStargz table of contents of a layer, compressed and as JSON (held in memory)")
	f.Var(&limits.span, "max-chunk-span", "largest compressed span of one eStargz chunk (read into memory whole)")
	f.Var(&limits.unpackBytes, "max-unpack-bytes", "most bytes of files one image unpacks to, and of its layers read uncompressed (images that are not eStargz)")
	f.Int64Var(&cfg.Limits.MaxUnpackFiles, "max-unpack-files", unpack.DefaultMaxFiles, "most files one image unpacks to")
	f.Var(&limits.log, "max-log-size", "a container's log on disk (container.log and container.log.1 in its bundle): the newest output is kept")
	addServerFlags(f, &cfg.HTTP)
	return cmd
}

// workerSecurity loads the CA, then reuses the VM's certificate from
// certDir or enrolls (see enroll.LoadOrEnroll). A manager that cannot be
// reached yet is waited for: VMs may boot before it.
func workerSecurity(ctx context.Context, manager, caFile, joinFile, vm, certDir string) (*worker.Security, error) {
	if caFile == "" {
		return nil, errors.New("--ca FILE is required: the cluster CA certificate, the manager's DATA/ca.crt")
	}
	ca, err := readCAFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("--ca: %w", err)
	}
	var join string
	if joinFile != "" {
		if join, err = token.ReadFile(joinFile); err != nil {
			return nil, fmt.Errorf("--join-token: %w", err)
		}
	}
	for {
		cert, err := enroll.LoadOrEnroll(ctx, manager, ca, join, vm, certDir)
		switch {
		case errors.Is(err, enroll.ErrNoJoinToken):
			return nil, fmt.Errorf("%w: pass --join-token FILE", err)
		case err != nil && unreachable(err) && ctx.Err() == nil:
			slog.Warn("the manager cannot be reached yet; retrying", "manager", manager, "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
			continue
		case err != nil:
			return nil, err
		}
		return &worker.Security{Keeper: pki.NewKeeper(cert), CA: ca, CertDir: certDir}, nil
	}
}

// unreachable reports whether err is a failure to connect at all, which
// waiting may cure; a refusal will not go away.
func unreachable(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// closeListener closes the OCI listener of a worker that will not serve it.
func closeListener(ln net.Listener) {
	if ln != nil {
		ln.Close()
	}
}

// sandboxFlags are the worker's --sandbox and --container-* flags.
type sandboxFlags struct {
	on                 bool
	cidr, egress, uids string
}

func (f sandboxFlags) parse() (worker.Sandbox, error) {
	s := worker.Sandbox{Off: !f.on}
	if f.cidr != "auto" && f.cidr != "" {
		p, err := netip.ParsePrefix(f.cidr)
		if err != nil || !p.Addr().Is4() {
			return s, fmt.Errorf("--container-cidr %q: want an IPv4 range such as 10.89.0.0/16, or auto", f.cidr)
		}
		s.CIDR = p.Masked()
	}
	switch f.egress {
	case "allow":
	case "deny":
		s.NoEgress = true
	default:
		return s, fmt.Errorf("--container-egress %q: want allow or deny", f.egress)
	}
	if f.uids != "" {
		first, count, ok := strings.Cut(f.uids, ":")
		h, err1 := strconv.ParseUint(first, 10, 32)
		n, err2 := strconv.ParseUint(count, 10, 32)
		if !ok || err1 != nil || err2 != nil || h == 0 || n < 1 || h+n > 1<<32-1 {
			return s, fmt.Errorf("--container-uids %q: want FIRST:COUNT of host ids, FIRST above 0, e.g. %d:%d", f.uids, worker.DefaultUsers.Host, worker.DefaultUsers.Size)
		}
		s.Users = runc.IDRange{Host: uint32(h), Size: uint32(n)}
	}
	return s, nil
}
