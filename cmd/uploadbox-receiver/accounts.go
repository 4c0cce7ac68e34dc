package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/uploadbox/uploadbox/receiver"
)

// newViewerStateCommands are `viewers disable|enable|remove NAME`.
func newViewerStateCommands() []*cobra.Command {
	state := func(use, short, done string, f func(receiver.Admin, string) error) *cobra.Command {
		return adminCommand(use, short, cobra.ExactArgs(1),
			func(cmd *cobra.Command, a receiver.Admin, args []string, asJSON bool) error {
				if err := f(a, args[0]); err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd, map[string]string{"name": args[0], "state": done})
				}
				fmt.Fprintf(cmd.OutOrStdout(), "viewer %s %s\n", args[0], done)
				return nil
			})
	}
	return []*cobra.Command{
		state("disable NAME", "Disable an account: it cannot sign in and the receiver refuses the tokens it holds (enable undoes it)", "disabled",
			receiver.Admin.DisableViewer),
		state("enable NAME", "Let a disabled account sign in again (tokens it held before stay refused)", "enabled",
			receiver.Admin.EnableViewer),
		state("remove NAME", "Delete an account: it cannot sign in, its tokens are refused, and its name can be given to a new account", "removed",
			receiver.Admin.RemoveViewer),
	}
}
