package main

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/internal/cli"
	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/receiver/kv"
)

// auditDatabaseHelp describes the audit commands' --database.
const auditDatabaseHelp = "the PostgreSQL database serve keeps the state in (serve --database): the audit chain every receiver on it shares is there; the password from PGPASSWORD or the URL"

// newAuditListCommand is `audit list`: the receiver's audit log, read
// from the data directory or, with --database, the chain the receivers
// share in PostgreSQL (it needs no server and takes no lock a server
// waits on for long).
func newAuditListCommand() *cobra.Command {
	var data, database string
	var asJSON bool
	var o cli.AuditFlags
	cmd := &cobra.Command{
		Use:   "list --data DIR [--database URL] [--since 24h] [--type login] [--last N] [--json]",
		Short: "List audit events (logins, enrollments, account and device changes, …), oldest first",
		Args:  cli.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := o.Filter(time.Now())
			if err != nil {
				return err
			}
			es, err := receiver.AuditEntries(data, database, f)
			if err != nil {
				return err
			}
			if asJSON {
				if es == nil {
					es = []audit.Entry{}
				}
				return printJSON(cmd, es)
			}
			return cli.PrintAudit(cmd.OutOrStdout(), es)
		},
	}
	o.AddFlags(cmd.Flags())
	cmd.Flags().StringVar(&data, "data", "", "the receiver's data directory")
	cmd.Flags().StringVar(&database, "database", "", auditDatabaseHelp)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the entries as a JSON array, as they are in the log")
	cmd.MarkFlagRequired("data")
	return cmd
}

// auditVerifyJSON is what `audit verify --json` prints.
type auditVerifyJSON struct {
	// Path is the audit file; Database, instead, the PostgreSQL database
	// (without its password) holding the receivers' shared chain.
	Path       string            `json:"path,omitempty"`
	Database   string            `json:"database,omitempty"`
	Entries    int               `json:"entries"`
	First      uint64            `json:"first"`
	Last       uint64            `json:"last"`
	Checkpoint *audit.Checkpoint `json:"checkpoint,omitempty"`
}

func printAuditReport(cmd *cobra.Command, data, database string, rep audit.Report, asJSON bool) error {
	if asJSON {
		v := auditVerifyJSON{Path: filepath.Join(data, receiver.AuditFile), Entries: rep.Entries, First: rep.First, Last: rep.Last, Checkpoint: rep.Checkpoint}
		if database != "" {
			v.Path, v.Database = "", kv.Redact(database)
		}
		return printJSON(cmd, v)
	}
	what := "audit log"
	if database != "" {
		what = "audit chain in " + kv.Redact(database)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "%s OK: %d entries, seq %d to %d\n", what, rep.Entries, rep.First, rep.Last)
	if c := rep.Checkpoint; c != nil {
		fmt.Fprintf(cmd.OutOrStdout(), "last checkpoint: seq %d at %s, signed with the receipt key\n", c.Seq, c.Time.Format(time.RFC3339))
	}
	return nil
}
