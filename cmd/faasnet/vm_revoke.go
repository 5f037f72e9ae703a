package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// vmRevokeCmd removes a VM and revokes every certificate the manager
// issued to it (DELETE /vms/{vm} with an admin token).
func vmRevokeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "revoke NAME",
		Short: "Remove a VM from every tree and the pool and revoke its certificates",
		Long: `Remove a VM from every tree and the pool and revoke every certificate the
manager issued to it: the manager and the workers refuse it from now on. A VM
that still holds the join token can enroll again; rotate the join token
(faasnet token rotate-join) to stop that.`,
		Args: cobra.ExactArgs(1),
	}
	client := managerFlag(cmd)
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		c, err := client()
		if err != nil {
			return err
		}
		if err := c.LeaveVM(cmd.Context(), args[0]); err != nil {
			return err
		}
		fmt.Printf("removed %s and revoked its certificates\n", args[0])
		return nil
	}
	return cmd
}
