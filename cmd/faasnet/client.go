package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/pki"
	"github.com/faasnet/faasnet/token"
	"github.com/faasnet/faasnet/treeview"
	"github.com/faasnet/faasnet/units"
	"github.com/spf13/cobra"
)

// managerFlag adds --manager, --ca and --token-file to cmd and returns a
// getter for the client. The defaults come from $FAASNET_MANAGER,
// $FAASNET_CA and $FAASNET_TOKEN (the token itself or a file holding it).
func managerFlag(cmd *cobra.Command) func() (*api.Client, error) {
	url := cmd.Flags().String("manager", envOr("FAASNET_MANAGER", "https://127.0.0.1:7070"), "manager URL (default from $FAASNET_MANAGER)")
	ca := cmd.Flags().String("ca", os.Getenv("FAASNET_CA"), "the cluster CA certificate, the manager's DATA/ca.crt (default from $FAASNET_CA)")
	tokenFile := cmd.Flags().String("token-file", "", "file holding an operator token, e.g. the manager's DATA/admin.token (default: $FAASNET_TOKEN, the token or a file holding it)")
	return func() (*api.Client, error) {
		return operatorClient(*url, *ca, *tokenFile)
	}
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// operatorClient returns a client that checks the manager against the
// cluster CA in caFile and sends the operator's token.
func operatorClient(url, caFile, tokenFile string) (*api.Client, error) {
	if strings.HasPrefix(url, "http://") {
		return nil, fmt.Errorf("--manager %s: the manager serves HTTPS only; use https://", url)
	}
	if caFile == "" {
		return nil, errors.New("no cluster CA: pass --ca FILE or set $FAASNET_CA (the manager writes it to DATA/ca.crt)")
	}
	ca, err := readCAFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("cluster CA: %w", err)
	}
	tok, err := operatorToken(tokenFile)
	if err != nil {
		return nil, err
	}
	return api.NewTLSClient(url, pki.NewVerifier(ca, nil).ManagerClient(nil), tok), nil
}

// operatorToken reads --token-file, or else $FAASNET_TOKEN: a token (its
// exact form cannot be a path) or the file holding one.
func operatorToken(file string) (string, error) {
	if file != "" {
		return token.ReadFile(file)
	}
	env := os.Getenv("FAASNET_TOKEN")
	if env == "" {
		return "", errors.New("no operator token: pass --token-file FILE or set $FAASNET_TOKEN (the manager writes an admin token to DATA/admin.token)")
	}
	if t, err := token.ParseSecret(env); err == nil {
		return t, nil
	}
	t, err := token.ReadFile(env)
	if err != nil {
		return "", fmt.Errorf("$FAASNET_TOKEN is neither a token nor a token file: %w", err)
	}
	return t, nil
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func clientCmds() []*cobra.Command {
	return []*cobra.Command{fnCmd(), scaleCmd(), releaseCmd(), treeCmd(), statusCmd(), vmsCmd()}
}

func fnCmd() *cobra.Command {
	fn := &cobra.Command{Use: "fn", Short: "Define functions"}
	var image, spec string
	var stripes int
	create := &cobra.Command{
		Use:   "create NAME --image REF",
		Short: "Define a function or change its image",
		Args:  cobra.ExactArgs(1),
	}
	client := managerFlag(create)
	create.Flags().StringVar(&image, "image", "", "image reference, e.g. registry:5000/repo:tag")
	create.Flags().StringVar(&spec, "spec", "", "function spec as JSON (command, env, readiness)")
	create.Flags().IntVar(&stripes, "stripes", 0, fmt.Sprintf("stripe trees, 1 to %d (0: the manager's --stripes for a new function, unchanged for a defined one; another number rebuilds its trees)", api.MaxStripes))
	create.MarkFlagRequired("image")
	create.RunE = func(cmd *cobra.Command, args []string) error {
		req := api.FunctionRequest{Image: image, Stripes: stripes}
		if spec != "" {
			req.Spec = json.RawMessage(spec)
		}
		c, err := client()
		if err != nil {
			return err
		}
		out, err := c.PutFunction(cmd.Context(), args[0], req)
		if err != nil {
			return err
		}
		fmt.Printf("function %s: image %s pinned to %s, %d VMs, %d stripes, %s blocks\n", out.Function, out.Image, out.Digest, out.VMs, out.Stripes, units.Size(out.BlockSize))
		return nil
	}
	fn.AddCommand(create)
	return fn
}

func scaleCmd() *cobra.Command {
	var count int
	var vms []string
	cmd := &cobra.Command{
		Use:   "scale FUNCTION (--count N | --vms a,b,...)",
		Short: "Add VMs to a function's tree (all or nothing)",
		Args:  cobra.ExactArgs(1),
	}
	client := managerFlag(cmd)
	cmd.Flags().IntVar(&count, "count", 0, "number of VMs the manager picks from the pool")
	cmd.Flags().StringSliceVar(&vms, "vms", nil, "VMs to add, by name")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := client()
		if err != nil {
			return err
		}
		out, err := c.Scale(cmd.Context(), args[0], api.ScaleRequest{VMs: vms, Count: count})
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "VM\tADDR\tPARENT\tDEPTH")
		for _, p := range out.Added {
			parent := "(root: registry)"
			if p.Parent != nil {
				parent = *p.Parent
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", p.VM, p.Addr, parent, p.Depth)
		}
		return tw.Flush()
	}
	return cmd
}

func releaseCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "release FUNCTION VM",
		Short: "Remove a VM from a function's tree (scale in)",
		Args:  cobra.ExactArgs(2),
	}
	client := managerFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := client()
		if err != nil {
			return err
		}
		if err := c.Release(cmd.Context(), args[0], args[1]); err != nil {
			return err
		}
		fmt.Printf("released %s from %s\n", args[1], args[0])
		return nil
	}
	return cmd
}

func treeCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "tree FUNCTION",
		Short: "Draw a function's trees, every stripe's, with each VM's depth and fan-out",
		Args:  cobra.ExactArgs(1),
	}
	client := managerFlag(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the API's JSON instead of a drawing")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := client()
		if err != nil {
			return err
		}
		t, err := c.Tree(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		if asJSON {
			return printJSON(t)
		}
		return treeview.DrawStripes(os.Stdout, t, nil)
	}
	return cmd
}

func statusCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status FUNCTION",
		Short: "Show each VM's state for a function",
		Args:  cobra.ExactArgs(1),
	}
	client := managerFlag(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the API's JSON")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := client()
		if err != nil {
			return err
		}
		s, err := c.Status(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		if asJSON {
			return printJSON(s)
		}
		fmt.Printf("function %s, image %s, %d VMs\n", s.Function, s.Image, len(s.VMs))
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "VM\tSTATE\tDEPTH\tPARENT\tFETCHED\tFROM PARENT\tFROM REGISTRY\tADDRESS\tERROR")
		for _, v := range s.VMs {
			parent, addr := "-", "-"
			if v.Parent != nil {
				parent = *v.Parent
			}
			if v.Address != "" {
				addr = v.Address
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%d\t%d\t%s\t%s\n", v.VM, v.State, v.Depth, parent,
				v.BytesFetched, v.BytesFromParent, v.BytesFromRegistry, addr, strings.ReplaceAll(v.Error, "\n", " "))
		}
		return tw.Flush()
	}
	return cmd
}

func vmsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "vms",
		Short: "List the registered VMs",
		Args:  cobra.NoArgs,
	}
	client := managerFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := client()
		if err != nil {
			return err
		}
		vms, err := c.VMs(cmd.Context())
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "VM\tADDR\tFUNCTIONS\tCAPACITY\tFAN-OUT")
		for _, v := range vms {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\n", v.VM, v.Addr, len(v.Functions), v.Capacity.Functions, v.Fanout)
		}
		return tw.Flush()
	}
	return cmd
}
