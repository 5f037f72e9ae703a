package main

import (
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/token"
	"github.com/spf13/cobra"
)

func init() { subcommands = append(subcommands, tokenCmd) }

// tokenCmd manages operator tokens and the join token (admin token needed).
func tokenCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Create, list and revoke operator tokens; rotate the join token"}
	cmd.AddCommand(tokenCreateCmd(), tokenListCmd(), tokenRevokeCmd(), tokenRotateJoinCmd())
	return cmd
}

func tokenCreateCmd() *cobra.Command {
	var role string
	var ttl time.Duration
	cmd := &cobra.Command{
		Use:   "create --role read|admin [--ttl D]",
		Short: "Make an operator token; prints its secret once (the manager keeps only a hash)",
		Args:  cobra.NoArgs,
	}
	client := managerFlag(cmd)
	cmd.Flags().StringVar(&role, "role", "read", "what the token may do: read (GET calls and /metrics) or admin (everything)")
	cmd.Flags().DurationVar(&ttl, "ttl", 0, "lifetime, e.g. 24h (0: until revoked)")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if role != string(token.Read) && role != string(token.Admin) {
			return fmt.Errorf("--role %q: want read or admin", role)
		}
		if ttl < 0 {
			return fmt.Errorf("--ttl %s is negative", ttl)
		}
		c, err := client()
		if err != nil {
			return err
		}
		req := api.TokenRequest{Role: role}
		if ttl > 0 {
			req.TTL = ttl.String()
		}
		t, err := c.CreateToken(cmd.Context(), req)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "token %s, role %s%s; keep the secret below, it is not shown again\n", t.ID, t.Role, expiry(t.Expires))
		fmt.Println(t.Token)
		return nil
	}
	return cmd
}

func expiry(t *time.Time) string {
	if t == nil {
		return ", no expiry"
	}
	return ", expires " + t.Format(time.RFC3339)
}

func tokenListCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "list", Short: "List the tokens (ids and roles, never secrets)", Args: cobra.NoArgs}
	client := managerFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := client()
		if err != nil {
			return err
		}
		toks, err := c.Tokens(cmd.Context())
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tROLE\tCREATED\tEXPIRES\tREVOKED")
		for _, t := range toks {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", t.ID, t.Role, t.Created.Format(time.RFC3339), timeOrDash(t.Expires), timeOrDash(t.Revoked))
		}
		return tw.Flush()
	}
	return cmd
}

func timeOrDash(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Format(time.RFC3339)
}

func tokenRevokeCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "revoke ID", Short: "End a token at once (its id from token list or token create)", Args: cobra.ExactArgs(1)}
	client := managerFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := client()
		if err != nil {
			return err
		}
		if err := c.RevokeToken(cmd.Context(), args[0]); err != nil {
			return err
		}
		fmt.Printf("revoked token %s\n", args[0])
		return nil
	}
	return cmd
}

func tokenRotateJoinCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "rotate-join [--out FILE]",
		Short: "Replace the join token: VMs enrolled already keep working, new ones need the new token",
		Args:  cobra.NoArgs,
	}
	client := managerFlag(cmd)
	cmd.Flags().StringVar(&out, "out", "", "write the new join token to FILE (mode 0600) instead of printing it")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		c, err := client()
		if err != nil {
			return err
		}
		t, err := c.RotateJoinToken(cmd.Context())
		if err != nil {
			return err
		}
		if out != "" {
			if err := token.WriteFile(out, t.Token); err != nil {
				return fmt.Errorf("the join token was rotated but writing it failed (the manager's DATA/join.token has it): %w", err)
			}
			fmt.Fprintf(os.Stderr, "new join token %s written to %s\n", t.ID, out)
			return nil
		}
		fmt.Println(t.Token)
		return nil
	}
	return cmd
}
