package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/uploadbox/uploadbox/agent"
	"github.com/uploadbox/uploadbox/agent/config"
	"github.com/uploadbox/uploadbox/agent/control"
	"github.com/uploadbox/uploadbox/internal/cli"
	"github.com/uploadbox/uploadbox/uploader/spool"
)

// configPath is --config, else $UPLOADBOX_CONFIG, else the packaged path.
func configPath(flag string) string {
	if flag != "" {
		return flag
	}
	if env := os.Getenv("UPLOADBOX_CONFIG"); env != "" {
		return env
	}
	return config.DefaultPath
}

func newRunCommand() *cobra.Command {
	var cfgFlag, cpuProfile, memProfile string
	cmd := &cobra.Command{
		Use:   "run --config FILE",
		Short: "Run the daemon: sessions on request, sealing, background upload, control socket",
		Args:  cli.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := configPath(cfgFlag)
			cfg, err := config.Load(path, nil)
			if err != nil {
				return err
			}
			level := new(slog.LevelVar)
			level.Set(agent.LogLevel(cfg.Log.Level))
			hopts := &slog.HandlerOptions{Level: level}
			var h slog.Handler = slog.NewTextHandler(cmd.ErrOrStderr(), hopts)
			if cfg.Log.Format == "json" {
				h = slog.NewJSONHandler(cmd.ErrOrStderr(), hopts)
			}
			log := slog.New(h)
			stopProfiles, err := cli.StartProfiles(cpuProfile, memProfile)
			if err != nil {
				return err
			}
			a, err := agent.New(cfg, agent.Options{ConfigPath: path, Logger: log, LogLevel: level})
			if err != nil {
				return errors.Join(err, stopProfiles())
			}
			return errors.Join(a.Run(cmd.Context()), stopProfiles())
		},
	}
	cmd.Flags().StringVar(&cfgFlag, "config", "", "daemon config file (default $UPLOADBOX_CONFIG or "+config.DefaultPath+")")
	cmd.Flags().StringVar(&cpuProfile, "cpu-profile", "", "write a pprof CPU profile of the whole run to FILE when the daemon stops (for profiling; off by default)")
	cmd.Flags().StringVar(&memProfile, "mem-profile", "", "write a pprof allocation profile to FILE when the daemon stops (for profiling; off by default)")
	return cmd
}

// ctlFlags find the daemon's control socket: --socket, else the config's.
type ctlFlags struct {
	config string
	socket string
	json   bool
}

func (f *ctlFlags) add(cmd *cobra.Command, withJSON bool) {
	cmd.Flags().StringVar(&f.config, "config", "", "daemon config file, to find its control socket (default $UPLOADBOX_CONFIG or "+config.DefaultPath+")")
	cmd.Flags().StringVar(&f.socket, "socket", "", "control socket path (overrides the config's)")
	if withJSON {
		cmd.Flags().BoolVar(&f.json, "json", false, "print JSON")
	}
}

func (f *ctlFlags) path() string {
	if f.socket != "" {
		return f.socket
	}
	if env := os.Getenv("UPLOADBOX_SOCKET"); env != "" {
		return env
	}
	if cfg, err := config.Load(configPath(f.config), nil); err == nil {
		return cfg.SocketPath()
	}
	return config.Default().SocketPath()
}

func (f *ctlFlags) call(ctx context.Context, method string, params, result any) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return control.Call(ctx, f.path(), method, params, result)
}

func printJSON(w io.Writer, v any) error {
	e := json.NewEncoder(w)
	e.SetIndent("", "  ")
	return e.Encode(v)
}

func newSessionCommand() *cobra.Command {
	cmd := &cobra.Command{Use: "session", Short: "Start, stop or show the recording session (nothing is recorded outside one)"}
	var sf ctlFlags
	var length time.Duration
	var mode string
	start := &cobra.Command{
		Use:   "start [--for 60m] [--anonymise off|whole|masks]",
		Short: "Start recording now, for a limited time",
		Args:  cli.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("for") && length <= 0 {
				return cli.Usagef("--for must be positive")
			}
			p := agent.SessionStart{Anonymise: mode}
			if length > 0 {
				p.For = length.String()
			}
			var st agent.SessionStatus
			if err := sf.call(cmd.Context(), "session.start", p, &st); err != nil {
				return err
			}
			if sf.json {
				return printJSON(cmd.OutOrStdout(), st)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "recording %s until %s, anonymise %s\n", st.Recording, st.Until.Local().Format(time.DateTime), st.Anonymise)
			return nil
		},
	}
	sf.add(start, true)
	start.Flags().DurationVar(&length, "for", 0, "session length (default recording.session_default)")
	start.Flags().StringVar(&mode, "anonymise", "", "filter every frame before the encoder for this session: off, whole or masks (capture.masks) (default recording.anonymise)")

	var tf ctlFlags
	stop := &cobra.Command{
		Use:   "stop",
		Short: "Stop recording: the current segment is sealed and queued for upload",
		Args:  cli.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st agent.SessionStatus
			if err := tf.call(cmd.Context(), "session.stop", nil, &st); err != nil {
				return err
			}
			if tf.json {
				return printJSON(cmd.OutOrStdout(), st)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "stopped %s: %d segments sealed (%s)\n", st.Recording, st.Segments, cli.Bytes(st.Bytes))
			return nil
		},
	}
	tf.add(stop, true)

	var uf ctlFlags
	status := &cobra.Command{
		Use:   "status",
		Short: "Show whether a session records, until when, and why the last one stopped",
		Args:  cli.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st agent.SessionStatus
			if err := uf.call(cmd.Context(), "session.status", nil, &st); err != nil {
				return err
			}
			if uf.json {
				return printJSON(cmd.OutOrStdout(), st)
			}
			out := cmd.OutOrStdout()
			switch {
			case st.Active:
				fmt.Fprintf(out, "recording %s since %s until %s: %d segments sealed (%s)\n", st.Recording,
					st.Started.Local().Format(time.TimeOnly), st.Until.Local().Format(time.TimeOnly), st.Segments, cli.Bytes(st.Bytes))
			case st.Recording != "" && st.StopReason == agent.StopCrashed:
				fmt.Fprintf(out, "idle: last session %s ended by a crash at about %s, %d segments\n", st.Recording, st.Ended.Local().Format(time.DateTime), st.Segments)
			case st.Recording != "":
				fmt.Fprintf(out, "idle: last session %s ended %s (%s), %d segments\n", st.Recording, st.Ended.Local().Format(time.DateTime), st.StopReason, st.Segments)
				if st.Error != "" && st.Alert == "" {
					fmt.Fprintf(out, "error: %s\n", st.Error)
				}
			default:
				fmt.Fprintln(out, "idle: no session since the daemon started")
			}
			if st.Alert != "" {
				fmt.Fprintf(out, "ALERT: %s\n", st.Alert)
			}
			return nil
		},
	}
	uf.add(status, true)
	cmd.AddCommand(start, stop, status)
	return cmd
}

func newQueueCommand() *cobra.Command {
	var f ctlFlags
	cmd := &cobra.Command{
		Use:   "queue [--json]",
		Short: "Show the upload backlog: segments, bytes, age of the oldest, and the segments held for a technician",
		Args:  cli.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var q agent.Queue
			if err := f.call(cmd.Context(), "queue", nil, &q); err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd.OutOrStdout(), q)
			}
			out := cmd.OutOrStdout()
			if q.Count == 0 && q.EndsPending == 0 {
				fmt.Fprintln(out, "queue empty: every segment is uploaded and wiped")
				return nil
			}
			if q.EndsPending > 0 {
				fmt.Fprintf(out, "%d stopped recording(s) wait for their end to be sealed and uploaded (the spool had no room); the daemon retries with every upload round\n", q.EndsPending)
			}
			if q.Count == 0 {
				return nil
			}
			var states []string
			for _, s := range []string{"recording", "sealed", "truncated", "uploading", "committed", "quarantined", "corrupt", "missing"} {
				if n := q.ByState[s]; n > 0 {
					if s == "recording" {
						s = "being recorded"
					}
					states = append(states, fmt.Sprintf("%d %s", n, s))
				}
			}
			fmt.Fprintf(out, "%d segments, %s, oldest %s ago (%s)\n", q.Count, cli.Bytes(q.Bytes),
				(time.Duration(q.Age) * time.Second).Round(time.Second), strings.Join(states, ", "))
			return printHeld(out, q.Held)
		},
	}
	f.add(cmd, true)
	cmd.AddCommand(newQueueRetryCommand(), newQueueDiscardCommand())
	return cmd
}

// printHeld lists the segments that wait for a technician, with the
// receiver's reason and what to do.
func printHeld(out io.Writer, held []agent.HeldSegment) error {
	if len(held) == 0 {
		return nil
	}
	fmt.Fprintln(out, "\nheld for a technician (not uploaded, not blocking the others):")
	w := tabwriter.NewWriter(out, 2, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tSTATE\tSIZE\tWHY")
	quarantined := false
	for _, h := range held {
		why := h.Message
		if h.State == "quarantined" {
			quarantined = true
			why = "receiver refused it: " + spool.Refusal{Status: h.Status, Reason: h.Reason, Message: h.Message}.String()
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", h.ID, h.State, cli.Bytes(h.Bytes), why)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if quarantined {
		fmt.Fprintln(out, "fix the cause, then `uploadbox queue retry ID`; or delete it for good with `uploadbox queue discard ID --yes`")
	}
	return nil
}

func newQueueRetryCommand() *cobra.Command {
	var f ctlFlags
	cmd := &cobra.Command{
		Use:   "retry ID",
		Short: "Put a quarantined segment back in the upload queue (verified again first)",
		Args:  cli.Args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			var h agent.HeldSegment
			if err := f.call(cmd.Context(), "queue.retry", agent.QueueID{ID: args[0]}, &h); err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd.OutOrStdout(), h)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s is %s again and will be uploaded afresh\n", h.ID, h.State)
			return nil
		},
	}
	f.add(cmd, true)
	return cmd
}

func newQueueDiscardCommand() *cobra.Command {
	var f ctlFlags
	var yes bool
	cmd := &cobra.Command{
		Use:   "discard ID --yes",
		Short: "Delete a quarantined or corrupt segment's file for good, without a receipt",
		Long: "The only way a sealed segment leaves the box without the receiver's receipt. Without --yes\n" +
			"nothing is deleted and the command says what it would delete. Audited with the caller's uid.",
		Args: cli.Args(cobra.ExactArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			var h agent.HeldSegment
			if err := f.call(cmd.Context(), "queue.discard", agent.QueueDiscard{ID: args[0], Yes: yes}, &h); err != nil {
				var ce *control.Error
				if errors.As(err, &ce) && ce.Code == "confirm" {
					return &cli.CodeError{Code: cli.ExitUsage, Err: ce}
				}
				return err
			}
			if f.json {
				return printJSON(cmd.OutOrStdout(), h)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "discarded %s: deleted %s (%s) without a receipt\n", h.ID, h.File, cli.Bytes(h.Bytes))
			return nil
		},
	}
	f.add(cmd, true)
	cmd.Flags().BoolVar(&yes, "yes", false, "really delete the file")
	return cmd
}

func newStatusCommand() *cobra.Command {
	var f ctlFlags
	cmd := &cobra.Command{
		Use:   "status [--json]",
		Short: "Show the daemon: version, uptime, enrollment, control connection, live view DTLS fingerprint, session, queue, upload errors",
		Args:  cli.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st agent.Status
			if err := f.call(cmd.Context(), "status", nil, &st); err != nil {
				return err
			}
			if f.json {
				return printJSON(cmd.OutOrStdout(), st)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "daemon:    pid %d, version %s, up %s, %d reloads\n", st.PID, st.Version, (time.Duration(st.Uptime) * time.Second).String(), st.Reloads)
			if st.Enrolled {
				fmt.Fprintf(out, "receiver:  %s\n", st.Receiver)
			} else if st.StateProblem != "" {
				fmt.Fprintf(out, "receiver:  the box's state cannot be used: %s\n", st.StateProblem)
			} else {
				fmt.Fprintln(out, "receiver:  not enrolled (run uploadbox enroll)")
			}
			if c := st.Control; c != nil && c.Connected {
				fmt.Fprintf(out, "control:   connected since %s\n", c.Since.Local().Format(time.DateTime))
			} else if c != nil {
				next := "now"
				if d := time.Until(c.NextRetry); d > 0 {
					next = "in " + d.Round(time.Second).String()
				}
				fmt.Fprintf(out, "control:   disconnected since %s (%s): %s; next retry %s\n", c.Since.Local().Format(time.DateTime), c.Cause, c.LastError, next)
			} else if st.Enrolled {
				fmt.Fprintln(out, "control:   off (link.enabled is false)")
			}
			if st.LiveDTLS != "" {
				fmt.Fprintf(out, "live dtls: %s\n", st.LiveDTLS)
			} else if st.LiveDTLSError != "" {
				fmt.Fprintf(out, "live dtls: none: %s\n", st.LiveDTLSError)
			}
			if st.Talkback != "" {
				speaking := "nobody speaking"
				if st.TalkbackSpeaking != "" {
					speaking = st.TalkbackSpeaking + " speaking"
				}
				fmt.Fprintf(out, "talk-back: %s, %s\n", st.Talkback, speaking)
			}
			session := "idle"
			if st.Session.Active {
				session = fmt.Sprintf("recording %s until %s", st.Session.Recording, st.Session.Until.Local().Format(time.TimeOnly))
			}
			fmt.Fprintf(out, "session:   %s\n", session)
			fmt.Fprintf(out, "queue:     %d segments, %s\n", st.Queue.Count, cli.Bytes(st.Queue.Bytes))
			if st.UploadError != "" {
				fmt.Fprintf(out, "upload:    waiting to retry: %s\n", st.UploadError)
			}
			if st.UploadAlert != "" {
				fmt.Fprintf(out, "ALERT:     %s\n", st.UploadAlert)
			}
			if n := st.Queue.ByState["quarantined"]; n > 0 {
				fmt.Fprintf(out, "ALERT:     %d segment(s) quarantined: see uploadbox queue\n", n)
			}
			if st.Session.Alert != "" {
				fmt.Fprintf(out, "ALERT:     %s\n", st.Session.Alert)
			}
			return nil
		},
	}
	f.add(cmd, true)
	return cmd
}
