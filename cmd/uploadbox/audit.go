package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/uploadbox/uploadbox/agent"
	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/internal/cli"
)

// newAuditCommand is `uploadbox audit list|verify`: the box's audit log,
// through the daemon (or read from --file), as on the receiver.
func newAuditCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "List and check the box's audit log"}
	var lf ctlFlags
	var lfile string
	var o cli.AuditFlags
	list := &cobra.Command{
		Use:   "list [--since 24h] [--type login] [--last N] [--json] [--file PATH]",
		Short: "List audit events (consent decisions, joins, enrollment, unclean stops, …), oldest first",
		Args:  cli.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := o.Filter(time.Now())
			if err != nil {
				return err
			}
			es, err := readAudit(cmd, lf, lfile, agent.AuditList{Last: f.Last, Since: f.Since, Types: f.Types})
			if err != nil || lf.json {
				return err
			}
			return cli.PrintAudit(cmd.OutOrStdout(), es)
		},
	}
	lf.add(list, true)
	o.AddFlags(list.Flags())
	list.Flags().StringVar(&lfile, "file", "", "read this audit file directly instead of asking the daemon")

	var vf ctlFlags
	var vfile string
	verify := &cobra.Command{
		Use:   "verify [--json] [--file PATH]",
		Short: "Check the audit log's hash chain (naming the first bad entry) and that nothing its last checkpoint covers is missing",
		Args:  cli.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return verifyAudit(cmd, vf, vfile)
		},
	}
	vf.add(verify, true)
	verify.Flags().StringVar(&vfile, "file", "", "read this audit file directly instead of asking the daemon")
	cmd.AddCommand(list, verify)
	return cmd
}

// readAudit returns the entries p selects, from file or else from the
// daemon; with --json it prints them.
func readAudit(cmd *cobra.Command, f ctlFlags, file string, p agent.AuditList) ([]audit.Entry, error) {
	var es []audit.Entry
	if file != "" {
		var err error
		if es, err = audit.List(file, audit.Filter{Since: p.Since, Types: p.Types, Last: p.Last}); err != nil {
			return nil, err
		}
	} else if err := f.call(cmd.Context(), "audit.list", p, &es); err != nil {
		return nil, err
	}
	if f.json {
		if es == nil {
			es = []audit.Entry{}
		}
		return es, printJSON(cmd.OutOrStdout(), es)
	}
	return es, nil
}

// verifyAudit checks the audit log in file, or else the daemon's, and
// prints the report.
func verifyAudit(cmd *cobra.Command, f ctlFlags, file string) error {
	var rep agent.AuditReport
	if file != "" {
		// Offline, the checkpoints are checked against the key they
		// name; the receiver checks against the enrolled key
		// (uploadbox-receiver devices audit-check).
		r, err := audit.VerifyAnchored(file, nil)
		if err != nil {
			return fmt.Errorf("audit log %s: %w", file, err)
		}
		rep = agent.AuditReport{Path: file, Entries: r.Entries, First: r.First, Last: r.Last, Checkpoint: r.Checkpoint}
	} else if err := f.call(cmd.Context(), "audit.verify", nil, &rep); err != nil {
		return err
	}
	if f.json {
		return printJSON(cmd.OutOrStdout(), rep)
	}
	fmt.Fprintf(cmd.OutOrStdout(), "audit log OK: %s, %d entries, seq %d to %d\n", rep.Path, rep.Entries, rep.First, rep.Last)
	if c := rep.Checkpoint; c != nil {
		fmt.Fprintf(cmd.OutOrStdout(), "last checkpoint: seq %d at %s, signed by %s\n", c.Seq, c.Time.Format(time.RFC3339), c.Key)
	}
	return nil
}
