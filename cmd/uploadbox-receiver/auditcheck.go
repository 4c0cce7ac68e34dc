package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/uploadbox/uploadbox/internal/cli"
	"github.com/uploadbox/uploadbox/receiver"
)

func newDevicesAuditCheckCommand() *cobra.Command {
	var data, database, file string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "audit-check NAME --file AUDITLOG --data DIR [--json]",
		Short: "Verify a box's audit log against the newest checkpoint the box sent (exit 1 if entries are missing or rewritten)",
		Args:  cli.Args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			res, err := receiver.CheckDeviceAudit(data, database, args[0], file)
			if err != nil {
				return err
			}
			if asJSON {
				if err := printJSON(cmd, res); err != nil {
					return err
				}
			} else if res.OK {
				fmt.Fprintf(cmd.OutOrStdout(), "audit log of %s OK: %d entries, seq %d to %d; holds the head of its checkpoint of %s (seq %d)\n",
					res.Device, res.Entries, res.First, res.Last, res.Checkpoint.Time.Format(time.RFC3339), res.Checkpoint.Seq)
			}
			if !res.OK {
				return &cli.CodeError{Code: cli.ExitError, Err: fmt.Errorf("audit log %s of %s: %s", file, res.Device, res.Problem)}
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&data, "data", "", "the receiver's data directory")
	cmd.Flags().StringVar(&database, "database", "", databaseHelp)
	cmd.Flags().StringVar(&file, "file", "", "the box's audit log (audit.path on the box, copied here)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.MarkFlagRequired("data")
	cmd.MarkFlagRequired("file")
	return cmd
}
