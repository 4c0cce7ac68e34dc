package main

import (
	"fmt"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/uploadbox/uploadbox/internal/cli"
	"github.com/uploadbox/uploadbox/receiver"
)

func newMigrateCommand() *cobra.Command {
	var from, to string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "migrate --from bolt:DIR --to postgres://USER@HOST/DB [--json]",
		Short: "Move a stopped receiver's state from its bbolt file, and its audit chain, into an empty PostgreSQL database (then serve --database)",
		Args:  cli.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			data, ok := strings.CutPrefix(from, "bolt:")
			if !ok || data == "" {
				return cli.Usagef("--from %q: give bolt:DIR, the receiver's data directory", from)
			}
			if to == "" {
				return cli.Usagef("--to: give the PostgreSQL database, postgres://USER@HOST/DB?sslmode=… (the password from PGPASSWORD or the URL)")
			}
			rep, err := receiver.Migrate(cmd.Context(), data, to)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd, rep)
			}
			names := make([]string, 0, len(rep.Buckets))
			for n := range rep.Buckets {
				names = append(names, n)
			}
			sort.Strings(names)
			o := cmd.OutOrStdout()
			fmt.Fprintf(o, "moved the state of %s into %s: %d keys in %d buckets, counted back\n", data, rep.Database, rep.Keys, len(names))
			for _, n := range names {
				fmt.Fprintf(o, "  %-20s %d\n", n, rep.Buckets[n])
			}
			fmt.Fprintf(o, "the bbolt file is kept as %s (serve no longer reads it)\n", rep.KeptAs)
			if a := rep.Audit; a != nil {
				fmt.Fprintf(o, "copied the audit chain: %d entries (seq %d to %d) and %d checkpoints, every hash kept; the receivers continue it in the database; the file is kept as %s\n",
					a.Entries, a.First, a.Last, a.Checkpoints, a.KeptAs)
			}
			fmt.Fprintf(o, "start the receiver with: uploadbox-receiver serve --data %s --database %s (or database: in its config file)\n", data, rep.Database)
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "bolt:DIR, the data directory of the stopped receiver")
	cmd.Flags().StringVar(&to, "to", "", "the empty PostgreSQL database, postgres://USER@HOST/DB?sslmode=…; the password from PGPASSWORD or the URL")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	cmd.MarkFlagRequired("from")
	cmd.MarkFlagRequired("to")
	return cmd
}
