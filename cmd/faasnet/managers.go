package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/spf13/cobra"
)

func init() { subcommands = append(subcommands, newManagersCmd) }

// healthTimeout bounds the /healthz call to each manager.
const healthTimeout = 5 * time.Second

func newManagersCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "managers",
		Short: "Show every manager of --manager URL1,URL2,...: its role and the leader it names",
		Long: `Asks each manager of the comma-separated --manager list for /healthz and
prints its role (leader or follower) and the leader it knows of; a manager
that does not answer is listed as unreachable. Exits with an error unless
exactly one of them leads.`,
		Args: cobra.NoArgs,
	}
	client := managerFlag(cmd)
	jsonOut := cmd.Flags().Bool("json", false, "print JSON")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := client()
		if err != nil {
			return err
		}
		rows := managerRoles(cmd.Context(), c)
		if *jsonOut {
			if err := printJSON(rows); err != nil {
				return err
			}
		} else if err := printManagers(os.Stdout, rows); err != nil {
			return err
		}
		return checkOneLeader(rows)
	}
	return cmd
}

// managerRole is one line of "faasnet managers".
type managerRole struct {
	URL    string `json:"url"`
	Role   string `json:"role"` // leader, follower, unreachable
	Leader string `json:"leader,omitempty"`
	Error  string `json:"error,omitempty"`
}

// managerRoles asks every manager of c for its health, in c's order.
func managerRoles(ctx context.Context, c *api.Client) []managerRole {
	var rows []managerRole
	for _, url := range append([]string{c.Base}, c.Others...) {
		hctx, cancel := context.WithTimeout(ctx, healthTimeout)
		h, err := c.HealthOf(hctx, url)
		cancel()
		r := managerRole{URL: url, Role: h.Role, Leader: h.Leader}
		if err != nil {
			r.Role, r.Error = "unreachable", err.Error()
		}
		rows = append(rows, r)
	}
	return rows
}

func printManagers(w io.Writer, rows []managerRole) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MANAGER\tROLE\tLEADER")
	for _, r := range rows {
		leader := r.Leader
		if r.Error != "" {
			leader = r.Error
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.URL, r.Role, leader)
	}
	return tw.Flush()
}

// checkOneLeader fails unless exactly one manager leads.
func checkOneLeader(rows []managerRole) error {
	var leaders []string
	for _, r := range rows {
		if r.Role == api.RoleLeader {
			leaders = append(leaders, r.URL)
		}
	}
	if len(leaders) != 1 {
		return fmt.Errorf("%d of the %d managers lead %v, want exactly one", len(leaders), len(rows), leaders)
	}
	return nil
}
