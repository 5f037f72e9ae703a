// Command faasnet runs faasnet's processes (manager, worker), its one-machine
// demo and benchmark, and the client verbs that drive a manager.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newRoot().ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "faasnet:", err)
		os.Exit(1)
	}
}

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "faasnet",
		Short: "Start containers on many VMs at once by streaming images down function trees",
		Long: `faasnet organises the VMs that run one function into a balanced binary
function tree: the root pulls the image from the registry, every other VM
streams blocks from its parent while forwarding them to its children.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	profileFlag(root)
	root.AddCommand(newManagerCmd())
	root.AddCommand(clientCmds()...)
	for _, c := range subcommands {
		root.AddCommand(c())
	}
	return root
}

// subcommands are added by the files that define them, from init, so that
// each subcommand lives in its own file.
var subcommands []func() *cobra.Command
