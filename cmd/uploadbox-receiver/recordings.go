package main

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"math"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/uploadbox/uploadbox/internal/cli"
	"github.com/uploadbox/uploadbox/receiver"
)

func newRecordingsCommand() *cobra.Command {
	recs := &cobra.Command{Use: "recordings", Short: "List, export, delete, restore, purge and scrub stored recordings"}
	var deleted bool
	list := adminCommand("list [--deleted] [--json]", "List recordings: room, start, duration, size, whether complete and why they ended", cobra.NoArgs,
		func(cmd *cobra.Command, a receiver.Admin, _ []string, asJSON bool) error {
			list := a.ListRecordings
			if deleted {
				list = a.ListDeletedRecordings
			}
			rs, err := list()
			if err != nil {
				return err
			}
			if asJSON {
				if rs == nil {
					rs = []receiver.Recording{}
				}
				return printJSON(cmd, rs)
			}
			printRecordings(cmd.OutOrStdout(), rs, deleted)
			return nil
		})
	list.Flags().BoolVar(&deleted, "deleted", false, "list the deleted recordings not yet purged, with when they will be")
	recs.AddCommand(list, newRecordingsExportCommand(),
		adminCommand("delete ID", "Delete a recording: hidden from list and export at once, purged from the store after the grace period (serve --delete-grace)", cobra.ExactArgs(1),
			func(cmd *cobra.Command, a receiver.Admin, args []string, asJSON bool) error {
				r, err := a.DeleteRecording(args[0])
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd, r)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "recording %s deleted; it can be restored until %s (recordings restore %s), then it is purged\n",
					r.ID, r.PurgeAfter.Local().Format(timeLayout), r.ID)
				return nil
			}),
		adminCommand("restore ID", "Restore a deleted recording within the grace period", cobra.ExactArgs(1),
			func(cmd *cobra.Command, a receiver.Admin, args []string, asJSON bool) error {
				r, err := a.RestoreRecording(args[0])
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd, r)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "recording %s restored\n", r.ID)
				return nil
			}),
		adminCommand("purge", "Apply retention and purge the deleted recordings whose grace period ended, now (serve does it hourly)", cobra.NoArgs,
			func(cmd *cobra.Command, a receiver.Admin, _ []string, asJSON bool) error {
				rep, err := a.PurgeRecordings()
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd, rep)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%d recordings deleted by retention; %d purged (%d segments, %s)\n",
					len(rep.Expired), len(rep.Purged), rep.Segments, cli.Bytes(rep.Bytes))
				return nil
			}),
		newRecordingsScrubCommand(),
	)
	return recs
}

const timeLayout = "2006-01-02 15:04"

// errDamaged makes scrub exit 1 after its report.
var errDamaged = errors.New("damaged segments found")

func newRecordingsScrubCommand() *cobra.Command {
	var all bool
	cmd := adminCommand("scrub --all | ID", "Re-read stored segments and check size, segment hash (BLAKE3, or SHA-256 for older boxes), signature and chain; exit 1 if any is damaged", cobra.MaximumNArgs(1),
		func(cmd *cobra.Command, a receiver.Admin, args []string, asJSON bool) error {
			if all == (len(args) == 1) {
				return cli.Usagef("give a recording ID or --all")
			}
			var id string
			if !all {
				id = args[0]
			}
			rep, err := a.ScrubRecordings(id)
			if err != nil {
				return err
			}
			if asJSON {
				if err := printJSON(cmd, rep); err != nil {
					return err
				}
			} else {
				w := cmd.OutOrStdout()
				for _, d := range rep.Damaged {
					fmt.Fprintf(w, "DAMAGED %s segment %d (room %s, %s): %s\n", d.Recording, d.Sequence, d.Device, d.Key, d.Problem)
				}
				fmt.Fprintf(w, "scrubbed %d segments (%s): %d damaged\n", rep.Segments, cli.Bytes(rep.Bytes), len(rep.Damaged))
				if rep.TimesFilled > 0 {
					fmt.Fprintf(w, "filled in the start and size of %d segments committed before the receiver kept them\n", rep.TimesFilled)
				}
			}
			if len(rep.Damaged) > 0 {
				return fmt.Errorf("%w: %d of %d segments", errDamaged, len(rep.Damaged), rep.Segments)
			}
			return nil
		})
	cmd.Flags().BoolVar(&all, "all", false, "scrub every stored recording (deleted ones not yet purged included)")
	return cmd
}

// printRecordings prints one line per recording, times in local time.
func printRecordings(out io.Writer, rs []receiver.Recording, deleted bool) {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	head := "RECORDING\tROOM\tSTART\tDURATION\tSEGMENTS\tSIZE\tCOMPLETE\tMISSING\tTRUNCATED\tENDED\tANONYMISE"
	if deleted {
		head += "\tDELETED\tBY\tPURGE AFTER"
	}
	fmt.Fprintln(tw, head)
	for _, r := range rs {
		start := "-"
		if !r.Start.IsZero() {
			start = r.Start.Local().Format(timeLayout)
		}
		anonymise := cmp.Or(r.Anonymise, "-")
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%t\t%d\t%d\t%s\t%s", r.ID, r.Device, start, durationText(r.DurationSeconds), r.Segments, cli.Bytes(r.Bytes), r.Complete, r.Missing, r.Truncated, r.Ended, anonymise)
		if deleted {
			fmt.Fprintf(tw, "\t%s\t%s\t%s", r.Deleted.Local().Format(timeLayout), r.DeletedBy, r.PurgeAfter.Local().Format(timeLayout))
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
}

// durationText is "1h02m03s", "4m05s", "7s", or "-" when unknown.
func durationText(s float64) string {
	if s <= 0 {
		return "-"
	}
	d := time.Duration(math.Round(s)) * time.Second
	h, m, sec := int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60
	switch {
	case h > 0:
		return fmt.Sprintf("%dh%02dm%02ds", h, m, sec)
	case m > 0:
		return fmt.Sprintf("%dm%02ds", m, sec)
	}
	return fmt.Sprintf("%ds", sec)
}

// lifeServeOptions are serve's recording lifecycle settings.
type lifeServeOptions struct {
	retentionDays, graceDays int
	scrubEvery               time.Duration
}

func (o *lifeServeOptions) AddFlags(f *pflag.FlagSet) {
	f.IntVar(&o.retentionDays, "retention", 0, "delete recordings this many days after they started (organisation policy; 0: never), then purge them after --delete-grace")
	f.IntVar(&o.graceDays, "delete-grace", 90, "days a deleted recording is kept (recordings restore) before its segments are purged from the store")
	f.DurationVar(&o.scrubEvery, "scrub-every", 24*time.Hour, "how often every stored segment is re-read and checked (recordings scrub --all; 0: never)")
}

func (o *lifeServeOptions) apply(cfg *receiver.ServerConfig) error {
	if o.retentionDays < 0 || o.retentionDays > 36500 {
		return cli.Usagef("--retention %d: give a number of days from 1 to 36500, or 0 to keep recordings until deleted", o.retentionDays)
	}
	if o.graceDays < 1 || o.graceDays > 3650 {
		return cli.Usagef("--delete-grace %d: give a number of days from 1 to 3650", o.graceDays)
	}
	if o.scrubEvery != 0 && o.scrubEvery < time.Second {
		return cli.Usagef("--scrub-every %s: give at least 1s, or 0 to turn the scrub off", o.scrubEvery)
	}
	day := 24 * time.Hour
	cfg.Retention, cfg.DeleteGrace, cfg.ScrubEvery = time.Duration(o.retentionDays)*day, time.Duration(o.graceDays)*day, o.scrubEvery
	return nil
}
