package main

import (
	"github.com/spf13/cobra"

	"github.com/uploadbox/uploadbox/internal/cli"
)

func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "uploadbox",
		Short: "Classroom capture box: record, seal, upload, wipe",
	}
	keys := &cobra.Command{Use: "keys", Short: "Manage the device signing key"}
	keys.AddCommand(newKeysDeviceCommand())
	root.AddCommand(cli.NewVersionCommand("uploadbox"), keys, newSealCommand(), newRecordCommand(), withRenew(newEnrollCommand()), newUploadCommand())
	root.AddCommand(newViewersCommand())
	root.AddCommand(newAuditCommand())
	root.AddCommand(newRunCommand(), newSessionCommand(), newQueueCommand(), newConsentCommand(), newStatusCommand())
	root.AddCommand(newDiagCommand())
	root.AddCommand(cli.NewManCommand())
	return root
}
