package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/uploadbox/uploadbox/internal/cli"
	"github.com/uploadbox/uploadbox/internal/ownership"
	"github.com/uploadbox/uploadbox/uploader"
)

// withRenew adds --renew to the enroll command: renew the enrolled box's
// certificate over its mutual TLS, keeping its device key. With --renew
// only the state directory is asked for, so the flags enroll requires are
// checked here instead of by cobra. The state directory and the user it
// writes as are chosen as for enroll (stateFlags): as root it becomes the
// daemon's user before it writes device.crt.
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
	cmd.Use = strings.Replace(cmd.Use, "enroll ", "enroll (--renew [--state DIR | --config FILE] [--user NAME] | ", 1) + ")"
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
		sf := stateFlags{state: flagValue(c, "state"), config: flagValue(c, "config"), user: flagValue(c, "user")}
		dir, err := sf.dir()
		if err != nil {
			return err
		}
		// Renewal needs an enrollment: make no directory for it.
		if _, err := os.Stat(dir); err != nil {
			return fmt.Errorf("enroll --renew: state directory %s: %w (is the box enrolled? run uploadbox enroll)", dir, err)
		}
		u, err := sf.become(dir)
		if err != nil {
			return fmt.Errorf("enroll --renew: %w", err)
		}
		st, cert, err := uploader.RenewState(c.Context(), dir)
		if err != nil {
			return ownership.Annotate(dir, u, err)
		}
		fmt.Fprintf(c.OutOrStdout(), "renewed the certificate of %s with %s: serial %s, valid until %s (same device key; %s owner %s, 0600)\n",
			cert.Subject.CommonName, st.Receiver, cert.SerialNumber, cert.NotAfter.UTC().Format(time.RFC3339), filepath.Join(dir, uploader.DeviceCertFile), u)
		return nil
	}
	return cmd
}

// flagValue is the value of c's flag name.
func flagValue(c *cobra.Command, name string) string { return c.Flags().Lookup(name).Value.String() }
