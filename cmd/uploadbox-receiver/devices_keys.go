package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/uploadbox/uploadbox/receiver"
)

func newDevicesRevokeCommand() *cobra.Command {
	var compromised bool
	cmd := adminCommand("revoke NAME [--compromised]", "Revoke a box: its certificate is refused from now on", cobra.ExactArgs(1),
		func(cmd *cobra.Command, a receiver.Admin, args []string, _ bool) error {
			if !compromised {
				if err := a.RevokeDevice(args[0]); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "device %s revoked\n", args[0])
				return nil
			}
			if err := a.RevokeCompromised(args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "device %s revoked; its key is marked compromised: segments it signed that reach the receiver from now on are refused for good\n", args[0])
			return nil
		})
	cmd.Flags().BoolVar(&compromised, "compromised", false, "the device key is compromised: also refuse, for good, every segment signed by it that reaches the receiver from now on")
	return cmd
}

func newDevicesRekeyCommand() *cobra.Command {
	return adminCommand("rekey NAME [--json]", "Make a one-time token (valid 24 h) for a new device key under the same name; the old key's certificates stop working, the segments it signed are still accepted", cobra.ExactArgs(1),
		func(cmd *cobra.Command, a receiver.Admin, args []string, asJSON bool) error {
			d, err := a.RekeyDevice(args[0])
			if err != nil {
				return err
			}
			return printToken(cmd, d, asJSON, "re-keyed: enroll the box with a new key (uploadbox enroll into an empty --state directory)")
		})
}

// printToken prints a new enrollment token once (devices add, rekey).
func printToken(cmd *cobra.Command, d *receiver.NewDevice, asJSON bool, what string) error {
	if asJSON {
		return printJSON(cmd, map[string]string{"token": d.Token, "ca_fingerprint": d.CAFingerprint})
	}
	fmt.Fprintf(cmd.OutOrStdout(), "device %s %s; the token is shown once and expires %s\ntoken:          %s\nca fingerprint: %s\n",
		d.Name, what, d.Expires.Format("2006-01-02 15:04 MST"), d.Token, d.CAFingerprint)
	return nil
}

func newDevicesRemoveCommand() *cobra.Command {
	return adminCommand("remove NAME", "Remove a revoked (or never enrolled) box and free its name; its record and key history are kept for audit", cobra.ExactArgs(1),
		func(cmd *cobra.Command, a receiver.Admin, args []string, _ bool) error {
			if err := a.RemoveDevice(args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "device %s removed; the name is free (devices add %s)\n", args[0], args[0])
			return nil
		})
}
