package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/uploadbox/uploadbox/internal/cli"
	"github.com/uploadbox/uploadbox/internal/ownership"
	"github.com/uploadbox/uploadbox/internal/viewtoken"
)

type viewerTokenOptions struct {
	name string
	ttl  time.Duration
	stateFlags
}

func newViewersCommand() *cobra.Command {
	viewer := &cobra.Command{Use: "viewer", Short: "Viewer tokens for live view"}
	viewer.AddCommand(newViewerTokenCommand())
	return viewer
}

func newViewerTokenCommand() *cobra.Command {
	var o viewerTokenOptions
	cmd := &cobra.Command{
		Use:   "token --name NAME [--ttl 1h] [--state DIR | --config FILE] [--user NAME]",
		Short: "Mint a viewer token with this box's local key (for a rig whose receiver is not reachable)",
		Long: "Mint a viewer token naming NAME, signed with the box's local key " + viewtoken.LocalKeyFile +
			" in the state directory (made, 0600, on first use, with its public half " + viewtoken.LocalPublicFile +
			", which the box trusts). The files belong to the user the daemon runs as (--user, else the state directory's owner). The token is printed on stdout and nowhere else.",
		Args: cli.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !viewtoken.ValidName(o.name) {
				return cli.Usagef("--name %q: %v", o.name, viewtoken.ErrBadName)
			}
			if o.ttl <= 0 || o.ttl > viewtoken.MaxTTL {
				return cli.Usagef("--ttl %s: %v", o.ttl, viewtoken.ErrBadTTL)
			}
			dir, err := o.dir()
			if err != nil {
				return err
			}
			u, err := o.become(dir)
			if err != nil {
				return fmt.Errorf("viewer token: %w", err)
			}
			tok, err := viewtoken.MintLocal(dir, o.name, o.ttl, time.Now())
			if err != nil {
				return ownership.Annotate(dir, u, err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), tok)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.name, "name", "", "the viewer the token names")
	f.DurationVar(&o.ttl, "ttl", time.Hour, "how long the token is valid (at most 12h)")
	o.add(cmd, "the box's state directory")
	cmd.MarkFlagRequired("name")
	return cmd
}
