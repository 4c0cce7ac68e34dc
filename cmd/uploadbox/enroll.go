package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/uploadbox/uploadbox/internal/cli"
	"github.com/uploadbox/uploadbox/uploader"
)

type enrollOptions struct {
	receiver, token, fingerprint, state string
}

func newEnrollCommand() *cobra.Command {
	var o enrollOptions
	cmd := &cobra.Command{
		Use:   "enroll --receiver URL --token T --ca-fingerprint FP --state DIR",
		Short: "Enroll this box with a receiver: make the device key, get a client certificate",
		Args:  cli.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := uploader.Enroll(cmd.Context(), o.receiver, o.token, o.fingerprint, o.state)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "enrolled with %s as %s\ndevice key: %s\nstate in %s (keys 0600)\n",
				st.Receiver, st.DeviceCert.Leaf.Subject.CommonName, st.Device.Public(), st.Dir)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.receiver, "receiver", "", "receiver URL, https://HOST:PORT")
	f.StringVar(&o.token, "token", "", "one-time token from uploadbox-receiver devices add")
	f.StringVar(&o.fingerprint, "ca-fingerprint", "", "the receiver CA's SHA-256 fingerprint from devices add")
	f.StringVar(&o.state, "state", "", "state directory for the device key, certificate and receiver keys")
	for _, n := range []string{"receiver", "token", "ca-fingerprint", "state"} {
		cmd.MarkFlagRequired(n)
	}
	return cmd
}
