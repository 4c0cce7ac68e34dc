package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/uploadbox/uploadbox/internal/cli"
	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/wire"
)

// printDevices is devices list's table: each box's state, health, control
// connection and what its last report says, as ages and sizes; then the
// active alerts, one per line.
func printDevices(w io.Writer, ds []receiver.DeviceStatus, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tHEALTH\tCONTROL\tVERSION\tBACKLOG\tLAST UPLOAD\tCERT EXPIRES\tDIAG")
	var alerts []string
	for _, d := range ds {
		health, version, backlog, upload, cert, diag := orDash(d.Health), orDash(d.Control.Version), "-", "-", "-", "-"
		if r := d.Report; r != nil {
			version = orDash(r.Version)
			backlog = backlogText(r.Backlog)
			upload = "never"
			if !r.LastUpload.IsZero() {
				upload = cli.Age(now.Sub(r.LastUpload)) + " ago"
			}
			if !r.CertExpiry.IsZero() {
				cert = "in " + cli.Age(r.CertExpiry.Sub(now))
				if now.After(r.CertExpiry) {
					cert = "expired " + cli.Age(now.Sub(r.CertExpiry)) + " ago"
				}
			}
			diag = diagText(r.Diag, now)
			for _, a := range r.Alerts {
				alerts = append(alerts, fmt.Sprintf("  %s %s: %s", d.Name, a.Kind, a.Message))
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.Name, d.State, health, controlText(d.Control, now), version, backlog, upload, cert, diag)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(alerts) > 0 {
		_, err := fmt.Fprintf(w, "alerts (as last reported):\n%s\n", strings.Join(alerts, "\n"))
		return err
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// backlogText is "empty", or "3 seg, 12.0 MiB, oldest 2m" (and held ones).
func backlogText(b wire.Backlog) string {
	if b.Segments == 0 && b.Held == 0 {
		return "empty"
	}
	s := fmt.Sprintf("%d seg, %s, oldest %s", b.Segments, cli.Bytes(b.Bytes), cli.Age(time.Duration(b.OldestAgeSeconds*float64(time.Second))))
	if b.Held > 0 {
		s += fmt.Sprintf(", %d held", b.Held)
	}
	return s
}

// diagText is the last diag run's status, the checks that did not pass,
// and its age: "warn: camera (2h ago)".
func diagText(d *wire.DiagSummary, now time.Time) string {
	if d == nil {
		return "-"
	}
	var bad []string
	for name, st := range d.Checks {
		if st == "warn" || st == "fail" {
			bad = append(bad, name+"="+st)
		}
	}
	slices.Sort(bad)
	s := d.Status
	if len(bad) > 0 {
		s += ": " + strings.Join(bad, ",")
	}
	return s + " (" + cli.Age(now.Sub(d.At)) + " ago)"
}
