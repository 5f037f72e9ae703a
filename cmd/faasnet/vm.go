package main

import (
	"crypto/x509"
	"fmt"
	"os"

	"github.com/faasnet/faasnet/enroll"
	"github.com/faasnet/faasnet/pki"
	"github.com/faasnet/faasnet/token"
	"github.com/spf13/cobra"
)

func init() { subcommands = append(subcommands, vmCmd) }

// vmCmd is "faasnet vm", the verbs about one VM's membership of the
// cluster; each verb is added here.
func vmCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "vm", Short: "Enroll a VM in the cluster, or end its membership"}
	cmd.AddCommand(vmEnrollCmd(), vmRevokeCmd())
	return cmd
}

func vmEnrollCmd() *cobra.Command {
	var id, manager, caFile, joinFile, out string
	cmd := &cobra.Command{
		Use:   "enroll --id NAME --manager URL --ca FILE --join-token FILE --out DIR",
		Short: "Enroll a VM: make its key here, have the manager sign its certificate, write DIR/NAME.key and DIR/NAME.crt",
		Long: `Enroll makes a new key for VM NAME on this machine (it never leaves it),
sends the manager a certificate request with the join token, checks the
certificate it gets against the CA file, and writes DIR/NAME.key (mode 0600)
and DIR/NAME.crt (PEM). A worker started with --cert-dir DIR --id NAME uses
them; provisioning tools and tests use them to act as the VM.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ca, err := readCAFile(caFile)
			if err != nil {
				return fmt.Errorf("--ca: %w", err)
			}
			join, err := token.ReadFile(joinFile)
			if err != nil {
				return fmt.Errorf("--join-token: %w", err)
			}
			c, err := enroll.Enroll(cmd.Context(), manager, ca, join, id)
			if err != nil {
				return err
			}
			if err := enroll.Save(out, id, c); err != nil {
				return err
			}
			keyPath, certPath := pki.VMFiles(out, id)
			fmt.Printf("enrolled VM %s: %s, %s (expires %s)\n", id, keyPath, certPath, c.Leaf.NotAfter.Format("2006-01-02 15:04:05 MST"))
			return nil
		},
	}
	def := os.Getenv("FAASNET_MANAGER")
	if def == "" {
		def = "https://127.0.0.1:7070"
	}
	f := cmd.Flags()
	f.StringVar(&id, "id", "", "the VM's name")
	f.StringVar(&manager, "manager", def, "manager URL (https; default from $FAASNET_MANAGER)")
	f.StringVar(&caFile, "ca", os.Getenv("FAASNET_CA"), "the cluster CA certificate, PEM (default from $FAASNET_CA)")
	f.StringVar(&joinFile, "join-token", "", "file holding the join token")
	f.StringVar(&out, "out", "", "directory to write NAME.key and NAME.crt to")
	for _, name := range []string{"id", "join-token", "out"} {
		cmd.MarkFlagRequired(name)
	}
	return cmd
}

// readCAFile reads the cluster CA certificate (one PEM block).
func readCAFile(path string) (*x509.Certificate, error) {
	if path == "" {
		return nil, fmt.Errorf("no CA file given")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := pki.ParseCert(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if !c.IsCA {
		return nil, fmt.Errorf("%s is not a CA certificate", path)
	}
	return c, nil
}
