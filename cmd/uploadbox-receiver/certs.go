package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/uploadbox/uploadbox/internal/cli"
	"github.com/uploadbox/uploadbox/receiver"
)

func newCertsCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "certs", Short: "The receiver's certificates: CA, server, web"}
	var data, webCert string
	var asJSON bool
	show := &cobra.Command{
		Use:   "show --data DIR [--web-cert FILE] [--json]",
		Short: "Print each certificate the receiver holds: names, expiry and SHA-256 fingerprint",
		Args:  cli.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			certs, err := receiver.Certificates(data, webCert)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd, certs)
			}
			out := cmd.OutOrStdout()
			for i, c := range certs {
				if i > 0 {
					fmt.Fprintln(out)
				}
				names := strings.Join(c.Names, ", ")
				if names == "" {
					names = "-"
				}
				fmt.Fprintf(out, "%s  %s\n  subject    %s\n  names      %s\n  not after  %s (%s)\n  sha256     %s\n",
					c.Role, c.Path, c.Subject, names, c.NotAfter.Format(time.RFC3339), left(c.NotAfter), c.SHA256)
			}
			return nil
		},
	}
	f := show.Flags()
	f.StringVar(&data, "data", "", "the receiver's data directory")
	f.StringVar(&webCert, "web-cert", "", "the web listener's certificate (serve's --web-cert), shown too")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	show.MarkFlagRequired("data")
	cmd.AddCommand(show)
	return cmd
}

// left says how long until t, in days, or that it has passed.
func left(t time.Time) string {
	d := time.Until(t)
	if d < 0 {
		return "expired"
	}
	return fmt.Sprintf("in %d days", int(d.Hours()/24))
}
