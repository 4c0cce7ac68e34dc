package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/uploadbox/uploadbox/agent"
	"github.com/uploadbox/uploadbox/consent"
	"github.com/uploadbox/uploadbox/internal/cli"
)

func newConsentCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "consent", Short: "The teacher's decisions on live viewing: list, accept, deny, revoke; audit"}

	var lf ctlFlags
	list := &cobra.Command{
		Use:   "list [--json]",
		Short: "List viewing requests (pending first) and grants",
		Args:  cli.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var rs []consent.Request
			if err := lf.call(cmd.Context(), "consent.list", nil, &rs); err != nil {
				return err
			}
			if lf.json {
				return printJSON(cmd.OutOrStdout(), rs)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tVIEWER\tAUDIO\tTALK\tSTATE\tASKED\tUNTIL")
			for _, r := range rs {
				until := ""
				if !r.Expires.IsZero() {
					until = r.Expires.Local().Format(time.TimeOnly)
				}
				state := r.State
				if r.Reason != "" {
					state += " (" + r.Reason + ")"
				}
				fmt.Fprintf(w, "%s\t%s\t%v\t%v\t%s\t%s\t%s\n", r.ID, r.Viewer, r.Audio, r.Talk, state, r.Created.Local().Format(time.TimeOnly), until)
			}
			return w.Flush()
		},
	}
	lf.add(list, true)

	var af ctlFlags
	var length time.Duration
	var noAudio, talk bool
	accept := &cobra.Command{
		Use:   "accept ID [--for 45m] [--no-audio] [--talk]",
		Short: "Let the viewer of request ID watch, for a limited time (and hear, unless --no-audio; and speak to the teacher with --talk)",
		Args:  cli.Args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if cmd.Flags().Changed("for") && length <= 0 {
				return cli.Usagef("--for must be positive")
			}
			p := agent.ConsentAccept{ID: args[0], NoAudio: noAudio, Talk: talk}
			if length > 0 {
				p.For = length.String()
			}
			var g consent.Grant
			if err := af.call(cmd.Context(), "consent.accept", p, &g); err != nil {
				return err
			}
			if af.json {
				return printJSON(cmd.OutOrStdout(), g)
			}
			what := "video and audio"
			if !g.Audio {
				what = "video only"
			}
			if g.Talk {
				what += "; may speak to the teacher"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s may watch (%s) until %s\n", g.Viewer, what, g.Expires.Local().Format(time.TimeOnly))
			return nil
		},
	}
	af.add(accept, true)
	accept.Flags().DurationVar(&length, "for", 0, "grant length (default live.grant_default; never past the session's end)")
	accept.Flags().BoolVar(&noAudio, "no-audio", false, "video only: no audio is sent to this viewer")
	accept.Flags().BoolVar(&talk, "talk", false, "let the viewer speak to the teacher (talk-back, played on live.talkback_device) while the grant lasts")

	var df ctlFlags
	deny := &cobra.Command{
		Use:   "deny ID",
		Short: "Refuse request ID",
		Args:  cli.Args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			var r consent.Request
			if err := df.call(cmd.Context(), "consent.deny", agent.ConsentID{ID: args[0]}, &r); err != nil {
				return err
			}
			if df.json {
				return printJSON(cmd.OutOrStdout(), r)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "denied: %s may not watch\n", r.Viewer)
			return nil
		},
	}
	df.add(deny, true)

	var rf ctlFlags
	revoke := &cobra.Command{
		Use:   "revoke VIEWER",
		Short: "End VIEWER's grant now: the live view stops within a second",
		Args:  cli.Args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := rf.call(cmd.Context(), "consent.revoke", agent.ConsentViewer{Viewer: args[0]}, nil); err != nil {
				return err
			}
			if rf.json {
				return printJSON(cmd.OutOrStdout(), map[string]string{"revoked": args[0]})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked: %s no longer sees or hears anything\n", args[0])
			return nil
		},
	}
	rf.add(revoke, true)

	var vf ctlFlags
	var verify bool
	var file string
	var last int
	auditCmd := &cobra.Command{
		Use:   "audit [--last N] | audit --verify [--file PATH]",
		Short: "Show the box's audit log (who decided what, for which viewer, when), or check its hash chain and that nothing its last checkpoint covers is missing",
		Args:  cli.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !verify {
				if last < 0 {
					return cli.Usagef("--last %d: give a number of entries (0: all)", last)
				}
				es, err := readAudit(cmd, vf, file, agent.AuditList{Last: last})
				if err != nil || vf.json {
					return err
				}
				w := tabwriter.NewWriter(cmd.OutOrStdout(), 2, 4, 2, ' ', 0)
				fmt.Fprintln(w, "TIME\tEVENT\tVIEWER\tBY\tOUTCOME\tDETAIL")
				for _, e := range es {
					fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", e.Time.Local().Format(time.DateTime), e.Event, dash(e.Identity), dash(e.By), e.Outcome, e.Detail)
				}
				return w.Flush()
			}
			return verifyAudit(cmd, vf, file)
		},
	}
	vf.add(auditCmd, true)
	auditCmd.Flags().BoolVar(&verify, "verify", false, "verify the hash chain and name the first bad entry")
	auditCmd.Flags().StringVar(&file, "file", "", "read this audit file directly instead of asking the daemon")
	auditCmd.Flags().IntVar(&last, "last", 20, "show the last N entries (0: all)")

	cmd.AddCommand(list, accept, deny, revoke, auditCmd)
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
