package main

import (
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/uploadbox/uploadbox/internal/cli"
	"github.com/uploadbox/uploadbox/uploader"
	"github.com/uploadbox/uploadbox/uploader/spool"
)

type uploadOptions struct {
	state, spool string
}

func newUploadCommand() *cobra.Command {
	var o uploadOptions
	cmd := &cobra.Command{
		Use:   "upload --state DIR --spool DIR",
		Short: "Upload every sealed segment once, commit it, check the receipt and wipe it",
		Args:  cli.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := uploader.LoadState(o.state)
			if err != nil {
				return err
			}
			sp, err := spool.Open(o.spool, spool.Options{Device: st.Device.Public(), Logger: slog.Default()})
			if err != nil {
				return err
			}
			defer sp.Close()
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			out := cmd.OutOrStdout()
			var progress func(string, int64, int64)
			if isTerminal(os.Stderr) {
				progress = func(name string, off, size int64) {
					n := 0
					if size > 0 {
						n = int(off * 30 / size)
					}
					fmt.Fprintf(cmd.ErrOrStderr(), "\r%s [%s%s] %3d%%", name, strings.Repeat("#", n), strings.Repeat(" ", 30-n), n*100/30)
				}
			}
			sum, err := uploader.New(st, sp, slog.Default()).Drain(ctx, func(r uploader.Result) {
				if progress != nil {
					fmt.Fprintln(cmd.ErrOrStderr())
				}
				if q := r.Quarantined; q != nil {
					fmt.Fprintf(out, "quarantined %s: the receiver refused it (%s); kept in the spool\n", r.Name, q)
					return
				}
				again := ""
				if r.Repeated {
					again = ", already stored"
				}
				fmt.Fprintf(out, "committed %s (%d bytes, %s%s) -> %s; local copy wiped\n", r.Name, r.Size, r.Outcome, again, r.Key)
			}, progress)
			if err != nil {
				return err
			}
			stats, err := sp.Stats()
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "uploaded %d segments, %d bytes (%d sent, %d retries); %d quarantined; %d segments left in the spool\n",
				sum.Segments, sum.Bytes, sum.BytesSent, sum.Retries, sum.Quarantined, stats.Count)
			if stats.Count > 0 {
				return fmt.Errorf("%d segments could not be uploaded (quarantined, corrupt or missing): see the log above and %s", stats.Count, o.spool)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&o.state, "state", "", "state directory from uploadbox enroll")
	cmd.Flags().StringVar(&o.spool, "spool", "", "spool directory with sealed segments")
	cmd.MarkFlagRequired("state")
	cmd.MarkFlagRequired("spool")
	return cmd
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
