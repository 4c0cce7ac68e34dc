package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/uploadbox/uploadbox/internal/cli"
	"github.com/uploadbox/uploadbox/receiver"
)

// defaultData is the packaged receiver's data directory.
const defaultData = "/var/lib/uploadbox-receiver"

func newBackupCommand() *cobra.Command {
	var data, out string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "backup --out FILE [--data DIR] [--json]",
		Short: "Write a backup of the data directory (database copied consistently while serve runs, CA, keys, audit log); not the uploaded segments, which are in the store",
		Args:  cli.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			rep, err := receiver.Backup(cmd.Context(), data, out)
			if err != nil {
				return err
			}
			for _, k := range rep.OrgKeys {
				fmt.Fprintf(cmd.ErrOrStderr(), "WARNING: the backup holds the organisation private key %s (it was in the data directory): whoever has the backup can decrypt every recording. Keep the key offline and remove it from %s, or keep this backup as safe as the key\n", k, data)
			}
			if asJSON {
				return printJSON(cmd, rep)
			}
			how := "from the file (no server was running)"
			if rep.Live {
				how = "from the running server"
			}
			names := make([]string, len(rep.Files))
			for i, f := range rep.Files {
				names[i] = f.Name
			}
			o := cmd.OutOrStdout()
			fmt.Fprintf(o, "backup of %s written to %s: %d bytes, mode 0600; it holds the receiver's secret keys\n", data, out, rep.Bytes)
			if rep.State == receiver.StatePostgres {
				fmt.Fprintf(o, "%v (serve --database); files: %s\n", receiver.ErrStatePostgres, strings.Join(names, ", "))
			} else {
				fmt.Fprintf(o, "database copied %s; files: %s\n", how, strings.Join(names, ", "))
			}
			fmt.Fprintf(o, "not in the backup: the uploaded segments, which are in the store (a local store is %s/%s: copy it too; an S3 bucket keeps its own), and unfinished uploads (boxes send them again)\n", data, receiver.StoreDir)
			return nil
		},
	}
	cmd.Flags().StringVar(&data, "data", defaultData, "the receiver's data directory")
	cmd.Flags().StringVar(&out, "out", "", "the backup file to write (replaced atomically, mode 0600)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report (the manifest) as JSON")
	cmd.MarkFlagRequired("out")
	return cmd
}

func newRestoreCommand() *cobra.Command {
	var data, from string
	cmd := &cobra.Command{
		Use:   "restore --from FILE --data DIR",
		Short: "Restore a backup into a new or empty data directory, checking every file against the backup's manifest",
		Args:  cli.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			rep, err := receiver.Restore(from, data)
			if err != nil {
				return err
			}
			for _, w := range rep.Warnings {
				fmt.Fprintln(cmd.ErrOrStderr(), "WARNING: "+w)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "restored %d files of the backup of %s taken %s into %s\n", len(rep.Files), rep.Source, rep.Created.Format("2006-01-02 15:04:05 MST"), data)
			fmt.Fprintf(cmd.OutOrStdout(), "start it with: uploadbox-receiver serve --data %s and the same store (copy a local store into %s/%s first; give the same --s3-* flags for S3)\n", data, data, receiver.StoreDir)
			return nil
		},
	}
	cmd.Flags().StringVar(&data, "data", "", "the data directory to restore into: new or empty")
	cmd.Flags().StringVar(&from, "from", "", "the backup file (uploadbox-receiver backup --out)")
	cmd.MarkFlagRequired("data")
	cmd.MarkFlagRequired("from")
	return cmd
}
