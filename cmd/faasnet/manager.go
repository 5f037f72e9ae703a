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
	"strings"
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
	f.StringVar(&state.cacert, "etcd-cacert", "", "with --etcd: verify the etcd members' certificates with this CA bundle (PEM), as etcdctl --cacert; https:// endpoints without it use the system's CAs")
	f.StringVar(&state.cert, "etcd-cert", "", "with --etcd: client certificate (PEM) for etcd members run with --client-cert-auth, as etcdctl --cert")
	f.StringVar(&state.key, "etcd-key", "", "with --etcd: key (PEM) of --etcd-cert, as etcdctl --key")
	f.StringVar(&state.userFile, "etcd-user-file", "", "with --etcd: file holding name:password of the etcd user, as etcdctl --user takes them (a password is never given on the command line); for etcd with auth enabled")
	f.DurationVar(&state.ttl, "etcd-session-ttl", store.DefaultSessionTTL, "lease of the manager's campaign for the leadership of its etcd prefix: how long a leader that died keeps the others waiting, and how long one cut off from etcd (or paused) leads before it steps down")
	f.StringVar(&state.url, "advertise-url", "", "with --etcd: the URL other managers send clients to while this one leads (default https:// and the first --advertise name or the --listen host, with the port listened on)")
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
	url    string // --advertise-url
	// Client TLS and user of etcd: --etcd-cacert, --etcd-cert, --etcd-key,
	// --etcd-user-file.
	cacert, cert, key, userFile string
}

// etcdOptions returns the store options the flags name: endpoints, prefix,
// client TLS (with any https:// endpoint, or any TLS flag) and user.
func (f stateFlags) etcdOptions() (store.EtcdOptions, error) {
	opts := store.EtcdOptions{Endpoints: f.etcd, Prefix: f.prefix, Elect: true}
	https := false
	for _, u := range f.etcd {
		https = https || strings.HasPrefix(u, "https://")
	}
	if https || f.cacert != "" || f.cert != "" || f.key != "" {
		cfg, err := store.EtcdClientTLS(f.cacert, f.cert, f.key)
		if err != nil {
			return opts, fmt.Errorf("--etcd-cacert, --etcd-cert, --etcd-key: %w", err)
		}
		opts.TLS = cfg
	}
	if f.userFile != "" {
		data, err := os.ReadFile(f.userFile)
		if err != nil {
			return opts, fmt.Errorf("--etcd-user-file: %w", err)
		}
		if opts.Username, opts.Password, err = store.ParseEtcdUser(data); err != nil {
			return opts, fmt.Errorf("--etcd-user-file %s: %w", f.userFile, err)
		}
	}
	return opts, nil
}

// etcdOpenTimeout bounds connecting to etcd and reading the schema.
const etcdOpenTimeout = 15 * time.Second

// openStore opens the state store the flags name.
func openStore(ctx context.Context, dataDir string, f stateFlags) (store.Store, error) {
	if len(f.etcd) == 0 {
		if f.cacert != "" || f.cert != "" || f.key != "" || f.userFile != "" {
			return nil, errors.New("--etcd-cacert, --etcd-cert, --etcd-key and --etcd-user-file need --etcd")
		}
		return store.OpenBolt(filepath.Join(dataDir, "manager.db"))
	}
	opts, err := f.etcdOptions()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, etcdOpenTimeout)
	defer cancel()
	st, err := store.OpenEtcd(ctx, opts)
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
	// Listening first: with port 0 the advertised URL needs the port.
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", listen, err)
	}
	defer ln.Close()
	e, _ := st.(*store.Etcd)
	leads, url := true, ""
	if e != nil {
		url = advertisedURL(state.url, ln.Addr().String(), opts.Security.Names)
		if opts.Election, err = e.Elector(url, state.ttl); err != nil {
			return err
		}
		if leads, err = joinCluster(ctx, e, opts.Election, dataDir); err != nil {
			return err
		}
		opts.SaveClusterFiles = func(ctx context.Context) error { return saveFiles(ctx, e, dataDir) }
	}
	m, err := manager.New(ctx, st, opts)
	if err != nil {
		return err
	}
	defer m.Close()
	if e != nil {
		e.SetObserver(m.StoreObserver())
		if leads {
			if err := saveFiles(ctx, e, dataDir); err != nil {
				return err
			}
		}
	}
	srv := httpserver.New(m.Handler(), limits)
	tlsLn := tls.NewListener(httpserver.Listener(ln, limits), m.TLSConfig())
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	runDone := make(chan struct{})
	go func() {
		defer close(runDone)
		m.Run(ctx)
	}()
	defer func() { <-runDone }() // the last term ends, and hands over, before the store closes
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shutdown)
	}()
	caFile, adminFile, joinFile := m.SecurityFiles()
	slog.Info("manager serving over TLS", "addr", ln.Addr().String(), "data", dataDir, "etcd", state.etcd, "url", url, "vm_timeout", opts.VMTimeout,
		"ca", caFile, "admin_token", adminFile, "join_token", joinFile)
	if err := srv.Serve(tlsLn); !errors.Is(err, http.ErrServerClosed) {
		stop()
		return err
	}
	return nil
}

// advertisedURL is where other managers send clients while this one leads:
// flag if set, else https:// and the first advertised name, or the
// listener's host, with the listener's port.
func advertisedURL(flag, addr string, names []string) string {
	if flag != "" {
		return strings.TrimRight(flag, "/")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "https://" + addr
	}
	if len(names) > 0 {
		host = names[0]
	}
	return "https://" + net.JoinHostPort(host, port)
}

// joinInterval is how long a manager that finds the cluster's files not yet
// in etcd campaigns before it looks again.
const joinInterval = time.Second

// joinCluster gets the cluster's files (CA, tokens) from etcd into dataDir.
// If they are not there yet, the cluster is new: only a leader may create
// them (manager.New writes the first state), so the manager campaigns until
// it leads or another manager has stored them. leads reports that it won.
func joinCluster(ctx context.Context, e *store.Etcd, el *store.Elector, dataDir string) (leads bool, err error) {
	for {
		files, err := e.Files(ctx)
		if err != nil {
			return false, err
		}
		complete := true
		for name := range clusterFiles {
			if _, ok := files[name]; !ok {
				complete = false
			}
		}
		if complete {
			return false, restoreFiles(ctx, e, dataDir)
		}
		cctx, cancel := context.WithTimeout(ctx, joinInterval)
		_, err = el.Campaign(cctx)
		cancel()
		if err == nil {
			return true, restoreFiles(ctx, e, dataDir)
		}
		if ctx.Err() != nil {
			return false, fmt.Errorf("joining the managers on etcd: %w", ctx.Err())
		}
	}
}
