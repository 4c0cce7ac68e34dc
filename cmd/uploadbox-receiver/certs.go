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
	var data, webCert, confPath string
	var asJSON bool
	show := &cobra.Command{
		Use:   "show [--config FILE | --data DIR [--web-cert FILE]] [--json]",
		Short: "Print each certificate the receiver holds: names, expiry and SHA-256 fingerprint",
		Args:  cli.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if data == "" {
				var err error
				if data, webCert, err = fromConfig(confPath, webCert); err != nil {
					return err
				}
			}
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
	f.StringVar(&data, "data", "", "the receiver's data directory (default: data in --config)")
	f.StringVar(&webCert, "web-cert", "", "the web listener's certificate (serve's --web-cert), shown too (default: web.cert in --config)")
	f.StringVar(&confPath, "config", DefaultConfigPath, "serve's config file, read for data and web.cert when --data is not given")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(show)
	return cmd
}

// fromConfig reads the data directory and the web certificate (unless
// webCert is given) from serve's config file at path.
func fromConfig(path, webCert string) (string, string, error) {
	serve := newServeCommand()
	f := serve.Flags()
	if _, err := serveSchema.Apply(f, path); err != nil {
		return "", "", cli.Usagef("give --data DIR, or --config with serve's config file: %v", err)
	}
	data := f.Lookup("data").Value.String()
	if data == "" {
		return "", "", cli.Usagef("%s sets no data directory: give --data DIR", path)
	}
	if webCert == "" {
		webCert = f.Lookup("web-cert").Value.String()
	}
	return data, webCert, nil
}

// left says how long until t, in days, or that it has passed.
func left(t time.Time) string {
	d := time.Until(t)
	if d < 0 {
		return "expired"
	}
	return fmt.Sprintf("in %d days", int(d.Hours()/24))
}
