package main

import (
	"github.com/spf13/cobra"

	"github.com/uploadbox/uploadbox/internal/cli"
)

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "uploadbox-receiver",
		Short: "Cloud receiver for uploadbox segments",
	}
	keys := &cobra.Command{Use: "keys", Short: "Manage organisation keys"}
	keys.AddCommand(newKeysGenerateCommand())
	root.AddCommand(newBackupCommand(), newRestoreCommand(), newMigrateCommand())
	root.AddCommand(cli.NewVersionCommand("uploadbox-receiver"), keys, newOpenCommand(), newVerifyCommand(), newExportCommand(),
		newServeCommand(), newDevicesCommand(), newRecordingsCommand(), newAuditCommand())
	root.AddCommand(newViewersCommand())
	root.AddCommand(newTURNCommand())
	root.AddCommand(newConsentCommand())
	root.AddCommand(newCertsCommand())
	root.AddCommand(newMigrateCommand())
	root.AddCommand(cli.NewManCommand())
	return root
}
