package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/faasnet/faasnet/api"
	"github.com/faasnet/faasnet/treeview"
	"github.com/spf13/cobra"
)

// managerFlag adds --manager to cmd and returns a getter for the client.
func managerFlag(cmd *cobra.Command) func() *api.Client {
	def := os.Getenv("FAASNET_MANAGER")
	if def == "" {
		def = "http://127.0.0.1:7070"
	}
	url := cmd.Flags().String("manager", def, "manager URL (default from $FAASNET_MANAGER)")
	return func() *api.Client { return api.NewClient(*url) }
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
	create := &cobra.Command{
		Use:   "create NAME --image REF",
		Short: "Define a function or change its image",
		Args:  cobra.ExactArgs(1),
	}
	client := managerFlag(create)
	create.Flags().StringVar(&image, "image", "", "image reference, e.g. registry:5000/repo:tag")
	create.Flags().StringVar(&spec, "spec", "", "function spec as JSON (command, env, readiness)")
	create.MarkFlagRequired("image")
	create.RunE = func(cmd *cobra.Command, args []string) error {
		req := api.FunctionRequest{Image: image}
		if spec != "" {
			req.Spec = json.RawMessage(spec)
		}
		out, err := client().PutFunction(cmd.Context(), args[0], req)
		if err != nil {
			return err
		}
		fmt.Printf("function %s: image %s pinned to %s, %d VMs\n", out.Function, out.Image, out.Digest, out.VMs)
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
		out, err := client().Scale(cmd.Context(), args[0], api.ScaleRequest{VMs: vms, Count: count})
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
		if err := client().Release(cmd.Context(), args[0], args[1]); err != nil {
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
		Short: "Draw a function's tree with each VM's depth and fan-out",
		Args:  cobra.ExactArgs(1),
	}
	client := managerFlag(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the API's JSON instead of a drawing")
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		t, err := client().Tree(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		if asJSON {
			return printJSON(t)
		}
		return treeview.Draw(os.Stdout, t, nil)
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
		s, err := client().Status(cmd.Context(), args[0])
		if err != nil {
			return err
		}
		if asJSON {
			return printJSON(s)
		}
		fmt.Printf("function %s, image %s, %d VMs\n", s.Function, s.Image, len(s.VMs))
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "VM\tSTATE\tDEPTH\tPARENT\tFETCHED\tFROM PARENT\tFROM REGISTRY\tERROR")
		for _, v := range s.VMs {
			parent := "-"
			if v.Parent != nil {
				parent = *v.Parent
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%d\t%d\t%s\n", v.VM, v.State, v.Depth, parent,
				v.BytesFetched, v.BytesFromParent, v.BytesFromRegistry, strings.ReplaceAll(v.Error, "\n", " "))
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
		vms, err := client().VMs(cmd.Context())
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
