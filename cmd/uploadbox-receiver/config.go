package main

import (
	"errors"
	"io"
	"slices"

	"github.com/spf13/cobra"

	"github.com/uploadbox/uploadbox/internal/cli"
	"github.com/uploadbox/uploadbox/internal/flagfile"
	"github.com/uploadbox/uploadbox/receiver"
)

// DefaultConfigPath is where the package installs the receiver's config
// file.
const DefaultConfigPath = "/etc/uploadbox-receiver/receiver.yaml"

// serveSchema makes every flag of serve a key of its config file:
// --audit-retention is audit.retention, --turn-listen turn.listen,
// --request-timeout request_timeout, and --hostname the list hostnames.
var serveSchema = flagfile.Schema{
	Sections: []string{"s3", "audit", "auth", "web", "turn", "upload", "viewer"},
	Rename:   map[string]string{"hostname": "hostnames"},
	Skip:     []string{"config"},
}

// reloadable are the flags whose new value a SIGHUP applies; any other
// change waits for the next restart.
var reloadable = []string{"hostname", "web-cert", "web-key", "auth-rate", "auth-burst"}

// withConfigFile wraps serve's RunE: it first sets the flags the command
// line left alone from --config, and names the file's key and line in an
// error about a value it set.
func withConfigFile(cmd *cobra.Command, o *serveOptions) {
	run := cmd.RunE
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		var lines map[string]int
		if o.confPath != "" {
			var err error
			if lines, err = serveSchema.Apply(cmd.Flags(), o.confPath); err != nil {
				return &cli.UsageError{Err: err}
			}
		}
		if o.data == "" {
			return cli.Usagef("serve needs the data directory: give --data DIR, or data: in the --config file")
		}
		return serveSchema.Where(run(cmd, args), o.confPath, lines)
	}
}

// reload answers a SIGHUP. Without --config it reads the web
// certificate's files again; with it, it reads the whole configuration
// again and the receiver applies what can change, and logs what waits
// for a restart. A file that does not load changes nothing.
func reload(running *cobra.Command, o *serveOptions, srv *receiver.Server) {
	if o.confPath == "" {
		srv.ReloadWebCertificate()
		return
	}
	cfg, restart, err := reread(running)
	if err != nil {
		srv.ReloadRefused(o.confPath, err)
		return
	}
	srv.Reload(o.confPath, cfg, restart)
}

// reread parses serve's command line again, reading the config file anew,
// and returns the configuration it gives (checked as at start, with no
// side effect) and the keys whose value differs from the one the receiver
// started with but that take effect only at a restart.
func reread(running *cobra.Command) (receiver.ServerConfig, []string, error) {
	var got *receiver.ServerConfig
	fresh := serveCommand(func(cfg receiver.ServerConfig) { got = &cfg })
	fresh.SetArgs(flagfile.Args(running.Flags()))
	fresh.SetOut(io.Discard)
	fresh.SetErr(io.Discard)
	fresh.SilenceErrors, fresh.SilenceUsage = true, true
	if err := fresh.Execute(); err != nil {
		return receiver.ServerConfig{}, nil, err
	}
	if got == nil {
		return receiver.ServerConfig{}, nil, errors.New("serve did not check its configuration")
	}
	var restart []string
	for _, k := range serveSchema.Differ(running.Flags(), fresh.Flags()) {
		if !slices.ContainsFunc(reloadable, func(name string) bool { return serveSchema.Key(name) == k }) {
			restart = append(restart, k)
		}
	}
	return *got, restart, nil
}
