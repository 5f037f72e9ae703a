package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/internal/httpserver"
	"github.com/faasnet/faasnet/manager"
	"github.com/faasnet/faasnet/manager/store"
	"github.com/faasnet/faasnet/units"
	"github.com/faasnet/faasnet/upstream"
	"github.com/spf13/cobra"
)

func newManagerCmd() *cobra.Command {
	var (
		listen    string
		dataDir   string
		timeout   time.Duration
		noPush    bool
		allow     []string
		advertise []string
		limits    httpserver.Options
		state     stateFlags
		stripes   int
		blockSize units.Size
	)
	cmd := &cobra.Command{
		Use:   "manager",
		Short: "Run the control plane: VM pool, function trees, failure detection, HTTP API",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if stripes < 1 || stripes > api.MaxStripes {
				return fmt.Errorf("--stripes %d: want 1 to %d", stripes, api.MaxStripes)
			}
			if blockSize < 0 {
				return fmt.Errorf("--block-size %d: negative", blockSize)
			}
			opts := manager.Options{VMTimeout: timeout, Push: !noPush, Stripes: stripes, BlockSize: int64(blockSize),
				// Registry access as the workers have it: the docker
				// credentials, plain HTTP to loopback registries only.
				Registry: []upstream.Option{upstream.WithUserAgent("faasnet-manager")}}
			for _, s := range allow {
				p, err := netip.ParsePrefix(s)
				if err != nil {
					return fmt.Errorf("--allow-vm-cidr %q: %w", s, err)
				}
				opts.AllowVMNets = append(opts.AllowVMNets, p.Masked())
			}
			// Always secure: there is no flag to serve without TLS.
			opts.Security = &manager.Security{Dir: dataDir, Addr: listen, Names: advertise}
			return runManager(cmd.Context(), listen, dataDir, state, opts, limits)
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:7070", "address to serve the API on")
	f.StringVar(&dataDir, "data", "faasnet-manager", "directory for the state file (manager.db, unless --etcd), the cluster CA (ca.crt, ca.key) and the bootstrap tokens (admin.token, join.token)")
	f.StringSliceVar(&state.etcd, "etcd", nil, "keep the state in etcd at these client URLs (comma-separated, repeatable) instead of DATA/manager.db")
	f.StringVar(&state.prefix, "etcd-prefix", store.DefaultEtcdPrefix, "prefix of the manager's keys in etcd")
	f.DurationVar(&state.ttl, "etcd-session-ttl", store.DefaultSessionTTL, "lease of the manager's lock on its etcd prefix: how long a manager that died keeps the next one waiting, and how long one cut off from etcd writes nothing before it exits")
	f.DurationVar(&timeout, "vm-timeout", 10*time.Second, "remove a VM that sends no heartbeat for this long")
	f.IntVar(&stripes, "stripes", api.DefaultStripes, fmt.Sprintf("stripe trees of a function whose definition names none (1 to %d; 1: the paper's single tree)", api.MaxStripes))
	f.Var(&blockSize, "block-size", "block every function's VMs are assigned (0: picked per function from its image's size and layers, or 512KiB when the registry is not asked)")
	f.BoolVar(&noPush, "no-push", false, "do not push assignment changes to workers; they learn at their next heartbeat")
	f.StringSliceVar(&advertise, "advertise", nil, "further DNS names or IP addresses clients reach the manager by, for its certificate (comma-separated, repeatable); the --listen host is always in it")
	f.StringSliceVar(&allow, "allow-vm-cidr", nil, "let VMs register addresses in these link-local or metadata ranges (CIDR, repeatable), refused by default")
	addServerFlags(f, &limits)
	return cmd
}

// stateFlags say where the manager keeps its state.
type stateFlags struct {
	etcd   []string // etcd client URLs; none: bbolt in the data directory
	prefix string
	ttl    time.Duration
}

// errLostLock ends a manager whose etcd store lost its lock: its writes are
// fenced off, and its state may be stale; a restart loads it anew.
var errLostLock = errors.New("the manager lost its lock on the etcd prefix (cut off from etcd, or paused, for longer than --etcd-session-ttl); exiting so that a restart loads the state anew")

// etcdOpenTimeout bounds connecting to etcd, waiting for the prefix's lock
// (up to a session TTL after a manager died) and reading the schema.
const etcdOpenTimeout = 15 * time.Second

// openStore opens the state store the flags name.
func openStore(ctx context.Context, dataDir string, f stateFlags) (store.Store, error) {
	if len(f.etcd) == 0 {
		return store.OpenBolt(filepath.Join(dataDir, "manager.db"))
	}
	ctx, cancel := context.WithTimeout(ctx, etcdOpenTimeout+f.ttl)
	defer cancel()
	st, err := store.OpenEtcd(ctx, store.EtcdOptions{Endpoints: f.etcd, Prefix: f.prefix, Exclusive: true, SessionTTL: f.ttl})
	if err != nil {
		return nil, fmt.Errorf("opening the state in etcd %v: %w", f.etcd, err)
	}
	return st, nil
}

func runManager(ctx context.Context, listen, dataDir string, state stateFlags, opts manager.Options, limits httpserver.Options) error {
	// The CA key and the tokens live here: private to the manager's user.
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("creating data directory: %w", err)
	}
	st, err := openStore(ctx, dataDir, state)
	if err != nil {
		return err
	}
	defer st.Close()
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	e, _ := st.(*store.Etcd)
	if e != nil {
		go func() { // ends with runManager, which stops ctx
			select {
			case <-e.Lost():
				stop(errLostLock)
			case <-ctx.Done():
			}
		}()
		if err := restoreFiles(ctx, e, dataDir); err != nil {
			return err
		}
	}
	m, err := manager.New(ctx, st, opts)
	if err != nil {
		return err
	}
	defer m.Close()
	if e != nil {
		if err := saveFiles(ctx, e, dataDir); err != nil {
			return err
		}
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", listen, err)
	}
	srv := httpserver.New(m.Handler(), limits)
	tlsLn := tls.NewListener(httpserver.Listener(ln, limits), m.TLSConfig())
	go m.Run(ctx)
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shutdown)
	}()
	caFile, adminFile, joinFile := m.SecurityFiles()
	slog.Info("manager serving over TLS", "addr", ln.Addr().String(), "data", dataDir, "etcd", state.etcd, "vm_timeout", opts.VMTimeout,
		"ca", caFile, "admin_token", adminFile, "join_token", joinFile)
	if err := srv.Serve(tlsLn); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	if cause := context.Cause(ctx); errors.Is(cause, errLostLock) {
		return cause
	}
	return nil
}
