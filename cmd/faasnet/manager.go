package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/faasnet/faasnet/internal/httpserver"
	"github.com/faasnet/faasnet/manager"
	"github.com/faasnet/faasnet/manager/store"
	"github.com/faasnet/faasnet/upstream"
	"github.com/spf13/cobra"
)

func newManagerCmd() *cobra.Command {
	var (
		listen  string
		dataDir string
		timeout time.Duration
		noPush  bool
		allow   []string
		limits  httpserver.Options
	)
	cmd := &cobra.Command{
		Use:   "manager",
		Short: "Run the control plane: VM pool, function trees, failure detection, HTTP API",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts := manager.Options{VMTimeout: timeout, Push: !noPush,
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
			return runManager(cmd.Context(), listen, dataDir, opts, limits)
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:7070", "address to serve the API on")
	f.StringVar(&dataDir, "data", "faasnet-manager", "directory for the state file (manager.db)")
	f.DurationVar(&timeout, "vm-timeout", 10*time.Second, "remove a VM that sends no heartbeat for this long")
	f.BoolVar(&noPush, "no-push", false, "do not push assignment changes to workers; they learn at their next heartbeat")
	f.StringSliceVar(&allow, "allow-vm-cidr", nil, "let VMs register addresses in these link-local or metadata ranges (CIDR, repeatable), refused by default")
	addServerFlags(f, &limits)
	return cmd
}

func runManager(ctx context.Context, listen, dataDir string, opts manager.Options, limits httpserver.Options) error {
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return fmt.Errorf("creating data directory: %w", err)
	}
	st, err := store.OpenBolt(filepath.Join(dataDir, "manager.db"))
	if err != nil {
		return err
	}
	defer st.Close()
	m, err := manager.New(ctx, st, opts)
	if err != nil {
		return err
	}
	defer m.Close()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", listen, err)
	}
	srv := httpserver.New(m.Handler(), limits)
	go m.Run(ctx)
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(shutdown)
	}()
	slog.Info("manager serving", "addr", ln.Addr().String(), "data", dataDir, "vm_timeout", opts.VMTimeout)
	if err := srv.Serve(httpserver.Listener(ln, limits)); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
