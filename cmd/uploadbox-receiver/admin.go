package main

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/internal/cli"
	"github.com/uploadbox/uploadbox/receiver"
)

func adminCommand(use, short string, args cobra.PositionalArgs, run func(cmd *cobra.Command, a receiver.Admin, args []string, asJSON bool) error) *cobra.Command {
	var data, database string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cli.Args(args),
		RunE: func(cmd *cobra.Command, args []string) error {
			a, err := receiver.OpenAdminDatabase(data, database)
			if err != nil {
				return err
			}
			defer a.Close()
			return run(cmd, a, args, asJSON)
		},
	}
	cmd.Flags().StringVar(&data, "data", "", "the receiver's data directory")
	cmd.Flags().StringVar(&database, "database", "", databaseHelp)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.MarkFlagRequired("data")
	return cmd
}

// databaseHelp describes the admin commands' --database.
const databaseHelp = "the PostgreSQL database serve keeps the state in (serve --database), used when no server runs on --data; the password from PGPASSWORD or the URL"

func printJSON(cmd *cobra.Command, v any) error {
	enc := json.NewEncoder(cmd.OutOrStdout())
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newDevicesCommand() *cobra.Command {
	devs := &cobra.Command{Use: "devices", Short: "Enroll, list, revoke, re-key, remove and unlock boxes"}
	devs.AddCommand(
		adminCommand("add NAME [--json]", "Make a one-time enrollment token (valid 24 h) for a box", cobra.ExactArgs(1),
			func(cmd *cobra.Command, a receiver.Admin, args []string, asJSON bool) error {
				d, err := a.AddDevice(args[0])
				if err != nil {
					return err
				}
				return printToken(cmd, d, asJSON, "added")
			}),
		adminCommand("list [--json]", "List the boxes: health, control connection, last seen, and each box's last report (version, backlog, last upload, certificate expiry, diag, alerts)", cobra.NoArgs,
			func(cmd *cobra.Command, a receiver.Admin, _ []string, asJSON bool) error {
				ds, err := a.ListDevices()
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd, ds)
				}
				return printDevices(cmd.OutOrStdout(), ds, time.Now())
			}),
		newDevicesRevokeCommand(),
		newDevicesRekeyCommand(),
		newDevicesRemoveCommand(),
		adminCommand("unlock NAME", "Unlock a box locked after repeated failed attempts", cobra.ExactArgs(1),
			func(cmd *cobra.Command, a receiver.Admin, args []string, _ bool) error {
				if err := a.UnlockDevice(args[0]); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "device %s unlocked\n", args[0])
				return nil
			}),
		newDevicesAuditCheckCommand(),
	)
	return devs
}

func newAuditCommand() *cobra.Command {
	var data, database string
	var asJSON bool
	a := &cobra.Command{Use: "audit", Short: "List and check the audit log"}
	verify := &cobra.Command{
		Use:   "verify --data DIR [--database URL] [--json]",
		Short: "Check the audit log's hash chain (naming the first bad entry) and that no entry the last checkpoint covers is missing",
		Args:  cli.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			rep, err := receiver.VerifyAudit(data, database)
			if err != nil {
				return err
			}
			return printAuditReport(cmd, data, database, rep, asJSON)
		},
	}
	verify.Flags().StringVar(&data, "data", "", "the receiver's data directory")
	verify.Flags().StringVar(&database, "database", "", auditDatabaseHelp)
	verify.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	verify.MarkFlagRequired("data")
	a.AddCommand(verify, newAuditListCommand())
	return a
}

func newRecordingsExportCommand() *cobra.Command {
	var data, database, identity, out string
	cmd := &cobra.Command{
		Use:   "export ID -o rec.mp4 --identity org.key --data DIR",
		Short: "Export a stored recording as one MP4 (as the export command, from the store)",
		Args:  cli.Args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := crypto.ReadIdentityFile(identity)
			if err != nil {
				return err
			}
			rep, err := receiver.ExportStored(cmd.Context(), data, database, args[0], out, []*crypto.Identity{id})
			if rep != nil {
				printWarnings(cmd.ErrOrStderr(), rep)
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "exported %d segments of recording %s to %s: %s, %d bytes\n",
				len(rep.Segments), args[0], rep.Output, rep.Duration, rep.Bytes)
			return nil
		},
	}
	cmd.Flags().StringVar(&data, "data", "", "the receiver's data directory")
	cmd.Flags().StringVar(&database, "database", "", databaseHelp)
	cmd.Flags().StringVar(&identity, "identity", "", "organisation private key file")
	cmd.Flags().StringVarP(&out, "output", "o", "", "MP4 file to write")
	for _, n := range []string{"data", "identity", "output"} {
		cmd.MarkFlagRequired(n)
	}
	return cmd
}

// controlText says whether a box is connected, and for how long, or when
// it was last seen.
func controlText(c receiver.ControlStatus, now time.Time) string {
	switch {
	case c.Connected:
		return "connected (" + cli.Age(now.Sub(c.Since)) + ")"
	case !c.LastSeen.IsZero():
		return "last seen " + cli.Age(now.Sub(c.LastSeen)) + " ago"
	}
	return "never connected"
}
