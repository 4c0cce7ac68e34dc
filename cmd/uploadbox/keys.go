package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/internal/cli"
)

type keysDeviceOptions struct {
	out       string
	publicOut string
}

func (o *keysDeviceOptions) AddFlags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&o.out, "out", "", "write the device private key to this file (created 0600, never overwritten)")
	cmd.Flags().StringVar(&o.publicOut, "public-out", "", "also write the public key to this file")
	cmd.MarkFlagRequired("out")
}

func newKeysDeviceCommand() *cobra.Command {
	var o keysDeviceOptions
	cmd := &cobra.Command{
		Use:   "device --out dev.key",
		Short: "Generate the box's Ed25519 signing key and print its public key",
		Args:  cli.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			pub, err := crypto.GenerateDeviceKeyFile(o.out, o.publicOut)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), pub)
			return nil
		},
	}
	o.AddFlags(cmd)
	return cmd
}
