package main

import (
	"bufio"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/uploadbox/uploadbox/internal/cli"
	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/wire"
)

func newConsentCommand() *cobra.Command {
	c := &cobra.Command{Use: "consent", Short: "Bring a teacher's decision on live viewing to a box"}
	var as, length, anonymise string
	var fromStdin, talk bool
	decide := adminCommand("decide DEVICE [REQUEST] DECISION --as TEACHER [--for 45m|lesson] [--talk] [--anonymise off|whole|masks] [--json] | decide DEVICE --statement-stdin",
		"Sign a teacher's decision (accept, video_only, decline with the request id; end_all, start_session, stop_session without) and send it to the box, which checks it and acts in the teacher's name",
		cobra.RangeArgs(1, 3),
		func(cmd *cobra.Command, a receiver.Admin, args []string, asJSON bool) error {
			in, err := decideRequest(cmd, args, as, length, fromStdin)
			if err != nil {
				return err
			}
			if talk {
				if in.Statement != "" || (in.Decision != wire.DecisionAccept && in.Decision != wire.DecisionVideoOnly) {
					return cli.Usagef("--talk goes with accept and video_only only (it lets the coach of the grant speak to the teacher)")
				}
				in.Talk = true
			}
			if cmd.Flags().Changed("anonymise") {
				if in.Statement != "" || in.Decision != wire.DecisionStartSession {
					return cli.Usagef("--anonymise goes with start_session only (it chooses how the box filters the session's picture)")
				}
				if anonymise != wire.AnonymiseOff && anonymise != wire.AnonymiseWhole && anonymise != wire.AnonymiseMasks {
					return cli.Usagef("--anonymise %q: want off, whole or masks", anonymise)
				}
				in.Anonymise = anonymise
			}
			ans, err := a.Decide(args[0], in)
			if err != nil {
				return err
			}
			if asJSON {
				if err := printJSON(cmd, ans); err != nil {
					return err
				}
			} else if ans.Status == 200 {
				fmt.Fprintln(cmd.OutOrStdout(), decisionText(ans))
			}
			if ans.Status != 200 {
				return fmt.Errorf("box %s refused the decision (%s): %s", ans.Device, ans.Result.Reason, ans.Error)
			}
			return nil
		})
	decide.Flags().StringVar(&as, "as", "", "the teacher's account (allowed the device's room: viewers allow TEACHER DEVICE)")
	decide.Flags().StringVar(&length, "for", "", `grant length for accept and video_only: e.g. 15m, 45m, or "lesson" (until the recording ends); default: the box's live.grant_default`)
	decide.Flags().BoolVar(&talk, "talk", false, "with accept and video_only: the coach may also speak to the teacher (talk-back) for the grant")
	decide.Flags().StringVar(&anonymise, "anonymise", "", "with start_session: how the box filters the session's picture before encoding (off, whole, masks); default: the box's recording.anonymise")
	decide.Flags().BoolVar(&fromStdin, "statement-stdin", false, "send the signed statement read from stdin as it is (tests, debugging)")
	c.AddCommand(decide)
	return c
}

// decideRequest reads the arguments: DEVICE [REQUEST] DECISION with --as,
// or DEVICE alone with --statement-stdin.
func decideRequest(cmd *cobra.Command, args []string, as, length string, fromStdin bool) (receiver.DecideRequest, error) {
	var in receiver.DecideRequest
	if fromStdin {
		if len(args) != 1 || as != "" || length != "" {
			return in, cli.Usagef("--statement-stdin takes the DEVICE only (the statement says the rest)")
		}
		line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
		if line = strings.TrimSpace(line); line == "" {
			return in, cli.Usagef("--statement-stdin: no statement on stdin (%v)", err)
		}
		in.Statement = line
		return in, nil
	}
	if as == "" {
		return in, cli.Usagef("--as TEACHER is required: the decision is signed in that account's name")
	}
	in.Teacher, in.Grant = as, length
	switch len(args) {
	case 3:
		in.Request, in.Decision = args[1], args[2]
	case 2:
		in.Decision = args[1]
	default:
		return in, cli.Usagef("give the decision: DEVICE REQUEST accept|video_only|decline, or DEVICE end_all|start_session|stop_session")
	}
	if wire.ForRequest(in.Decision) != (in.Request != "") {
		return in, cli.Usagef("%s: accept, video_only and decline take the REQUEST id (see uploadbox consent list on the box, or the teacher's page); end_all, start_session and stop_session take none", in.Decision)
	}
	return in, nil
}

// decisionText says what the box did.
func decisionText(a *receiver.DecideAnswer) string {
	r := a.Result
	switch r.Decision {
	case wire.DecisionAccept, wire.DecisionVideoOnly:
		what := "video and audio"
		if !r.Audio {
			what = "video only"
		}
		if r.Talk {
			what += ", and speak"
		}
		return fmt.Sprintf("%s: %s may watch (%s) until %s", a.Device, r.Viewer, what, r.Expires.Local().Format(time.TimeOnly))
	case wire.DecisionDecline:
		return fmt.Sprintf("%s: declined: %s may not watch", a.Device, r.Viewer)
	case wire.DecisionEndAll:
		return fmt.Sprintf("%s: all viewing ended (%d grants and requests)", a.Device, r.Ended)
	}
	return fmt.Sprintf("%s: %s done", a.Device, strings.ReplaceAll(r.Decision, "_", " "))
}
