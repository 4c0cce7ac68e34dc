package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/uploadbox/uploadbox/internal/cli"
	"github.com/uploadbox/uploadbox/uploader"
)

// withRenew adds --renew to the enroll command: renew the enrolled box's
// certificate over its mutual TLS, keeping its device key. With --renew
// only the state directory is asked for, so the flags enroll requires are
// checked here instead of by cobra.
func withRenew(cmd *cobra.Command) *cobra.Command {
	var renew bool
	cmd.Flags().BoolVar(&renew, "renew", false, "renew this enrolled box's certificate now (same device key, over its mutual TLS; the daemon does it by itself at two thirds of the certificate's lifetime and picks up a certificate renewed here)")
	var required []string
	for _, n := range []string{"receiver", "token", "token-file", "ca-fingerprint", "state"} {
		if f := cmd.Flags().Lookup(n); f != nil && f.Annotations[cobra.BashCompOneRequiredFlag] != nil {
			delete(f.Annotations, cobra.BashCompOneRequiredFlag)
			required = append(required, n)
		}
	}
	cmd.Use = strings.Replace(cmd.Use, "enroll ", "enroll (--renew [--state DIR] | ", 1) + ")"
	enroll := cmd.RunE
	cmd.RunE = func(c *cobra.Command, args []string) error {
		var missing []string
		for _, n := range required {
			if !c.Flags().Changed(n) && (!renew || n == "state") {
				missing = append(missing, n)
			}
		}
		if len(missing) > 0 {
			return cli.Usagef(`required flag(s) "%s" not set`, strings.Join(missing, `", "`))
		}
		if !renew {
			return enroll(c, args)
		}
		for _, n := range []string{"receiver", "token", "token-file", "ca-fingerprint"} {
			if c.Flags().Changed(n) {
				return cli.Usagef("--renew uses the enrolled state only: leave out --%s (to enroll again with a token, use a new --state directory)", n)
			}
		}
		st, cert, err := uploader.RenewState(c.Context(), c.Flags().Lookup("state").Value.String())
		if err != nil {
			return err
		}
		fmt.Fprintf(c.OutOrStdout(), "renewed the certificate of %s with %s: serial %s, valid until %s (same device key)\n",
			cert.Subject.CommonName, st.Receiver, cert.SerialNumber, cert.NotAfter.UTC().Format(time.RFC3339))
		return nil
	}
	return cmd
}
