package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/uploadbox/uploadbox/agent"
	"github.com/uploadbox/uploadbox/agent/config"
	"github.com/uploadbox/uploadbox/agent/control"
	"github.com/uploadbox/uploadbox/agent/diag"
	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/internal/cli"
)

type diagOptions struct {
	config string
	json   bool
	check  string
}

// AddFlags registers the diag flags.
func (o *diagOptions) AddFlags(cmd *cobra.Command) {
	def := os.Getenv("UPLOADBOX_CONFIG")
	if def == "" {
		def = config.DefaultPath
	}
	f := cmd.Flags()
	f.StringVar(&o.config, "config", def, "the daemon's config file (env UPLOADBOX_CONFIG)")
	f.BoolVar(&o.json, "json", false, "print the report as JSON (schema in docs/diag.md)")
	f.StringVar(&o.check, "check", "", "run only this check: "+strings.Join(diag.Names, ", "))
}

func newDiagCommand() *cobra.Command {
	var o diagOptions
	cmd := &cobra.Command{
		Use:   "diag [--json] [--check NAME]",
		Short: "Check the box: config, enrollment, receiver, clock, camera, microphone, disk, spool, daemon, power",
		Long: "Runs every check (or one) and prints pass, warn or fail with a remedy for each.\n" +
			"Exit status: 0 all passed, 1 a warning, 2 a failure. Every run is written to the audit log.",
		Args: cli.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error { return runDiag(cmd, o) },
	}
	o.AddFlags(cmd)
	return cmd
}

func runDiag(cmd *cobra.Command, o diagOptions) error {
	if o.check != "" && !isCheck(o.check) {
		return cli.Usagef("--check %q is not a check: use one of %s", o.check, strings.Join(diag.Names, ", "))
	}
	// The daemon is asked over its control socket; when it does not
	// answer, diag asks systemd and scans the spool directory itself.
	sock := ctlFlags{config: o.config}
	opts := diag.Options{ConfigPath: o.config, Check: o.check, Stderr: cmd.ErrOrStderr()}
	opts.Daemon = func(ctx context.Context) (diag.DaemonInfo, error) {
		var st agent.Status
		if err := sock.call(ctx, "status", nil, &st); err != nil {
			return diag.DaemonInfo{}, err
		}
		info := diag.DaemonInfo{Running: true, PID: st.PID, Uptime: time.Duration(st.Uptime * float64(time.Second)), Session: st.Session.Active}
		info.LiveDTLS = st.LiveDTLS
		if c := st.Control; c != nil {
			info.Control = &diag.ControlInfo{Connected: c.Connected, Since: c.Since, LastError: c.LastError, Cause: c.Cause, NextRetry: c.NextRetry}
		}
		return info, nil
	}
	opts.Queue = func(ctx context.Context) (diag.QueueInfo, error) {
		var q agent.Queue
		if err := sock.call(ctx, "queue", nil, &q); err != nil {
			return diag.QueueInfo{}, err
		}
		qi := diag.QueueInfo{Count: q.Count, Bytes: q.Bytes, Oldest: q.Oldest}
		for _, h := range q.Held {
			if h.State == "quarantined" {
				qi.Quarantined = append(qi.Quarantined, diag.Quarantined{ID: h.ID, Status: h.Status, Reason: h.Reason, Message: h.Message})
			}
		}
		return qi, nil
	}
	opts.Audit = func(ctx context.Context, e audit.Entry) error {
		// The daemon owns the audit log; it appends for us. Without a
		// daemon, diag appends to the file itself.
		err := sock.call(ctx, "audit.append", agent.AuditAppend{Event: "diag.run", Outcome: e.Outcome, Detail: e.Detail}, nil)
		if errors.Is(err, control.ErrNotRunning) {
			return diag.ErrAuditDirect
		}
		return err
	}
	rep := diag.Run(cmd.Context(), opts)
	write := diag.WriteText
	if o.json {
		write = diag.WriteJSON
	}
	if err := write(cmd.OutOrStdout(), rep); err != nil {
		return err
	}
	switch rep.ExitCode() {
	case diag.ExitFail:
		return &cli.CodeError{Code: diag.ExitFail, Err: fmt.Errorf("diag: failed: %s", strings.Join(rep.Failed(diag.Fail), ", "))}
	case diag.ExitWarn:
		return &cli.CodeError{Code: diag.ExitWarn, Err: fmt.Errorf("diag: warnings: %s", strings.Join(rep.Failed(diag.Warn), ", "))}
	}
	return nil
}

func isCheck(name string) bool { return slices.Contains(diag.Names, name) }
