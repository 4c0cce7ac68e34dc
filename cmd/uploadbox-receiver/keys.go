package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/internal/cli"
)

type keysGenerateOptions struct {
	out       string
	publicOut string
	suite     string
}

func (o *keysGenerateOptions) AddFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.out, "out", "", "write the private key to this file (created 0600, never overwritten)")
	f.StringVar(&o.publicOut, "public-out", "", "also write the public key (the recipients file for boxes) here")
	f.StringVar(&o.suite, "suite", "xwing", "key suite: xwing (ML-KEM-768 + X25519), x25519 or p256")
	cmd.MarkFlagRequired("out")
}

func newKeysGenerateCommand() *cobra.Command {
	var o keysGenerateOptions
	cmd := &cobra.Command{
		Use:   "generate --out org.key [--public-out org.pub] [--suite xwing|x25519|p256]",
		Short: "Generate an organisation key pair and print its public key",
		Args:  cli.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			suite, err := crypto.ParseSuite(o.suite)
			if err != nil {
				return cli.Usagef("--suite: %v", err)
			}
			rc, err := crypto.GenerateIdentityFile(suite, o.out, o.publicOut)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), rc)
			return nil
		},
	}
	o.AddFlags(cmd)
	return cmd
}
