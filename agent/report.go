package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/uploadbox/uploadbox/agent/link"
	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/internal/cli"
	"github.com/uploadbox/uploadbox/wire"
)

// reportWait bounds the wait for the receiver's answer to a report.
const reportWait = 10 * time.Second

// reporter sends the box's health report (wire.OpBoxReport) over the
// control connection: after every new connection (up), when the report's
// change key differs from the last one sent (looked at every check and on
// kick), and at least every every.
type reporter struct {
	build func() (wire.BoxReport, error)
	// send delivers a report; link.ErrNotConnected means "not sent, try
	// again on the next connection".
	send        func(ctx context.Context, r wire.BoxReport) error
	up, kick    <-chan struct{}
	every, tick time.Duration
	log         *slog.Logger
}

func (p *reporter) run(ctx context.Context) error {
	t := time.NewTicker(p.tick)
	defer t.Stop()
	var lastKey string
	var lastSent time.Time
	fresh := false // a connection that has not had a report yet
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-p.up:
			fresh = true
		case <-p.kick:
		case <-t.C:
		}
		r, err := p.build()
		if err != nil {
			p.log.Warn("box report not taken", "err", err)
			continue
		}
		key := changeKey(r)
		if !fresh && key == lastKey && time.Since(lastSent) < p.every {
			continue
		}
		err = p.send(ctx, r)
		if errors.Is(err, link.ErrNotConnected) || ctx.Err() != nil {
			continue // sent after the next connect
		}
		if err != nil {
			// Refused or failed: tried again at the next change or
			// within every, not at every tick.
			p.log.Warn("box report not taken by the receiver", "err", err)
		}
		fresh, lastKey, lastSent = false, key, time.Now()
	}
}

// changeKey is what of a report is worth sending at once when it changes:
// the alerts, the diag summary, the certificate, the held segments, the
// version, and whether the queue is drained. The backlog's size and ages
// go with the periodic report.
func changeKey(r wire.BoxReport) string {
	b, _ := json.Marshal(struct {
		Version string
		Started time.Time
		Alerts  []wire.Alert
		Diag    *wire.DiagSummary
		Cert    time.Time
		Held    int
		Drained bool
	}{r.Version, r.Started, r.Alerts, r.Diag, r.CertExpiry, r.Backlog.Held, r.Backlog.Segments == 0})
	return string(b)
}

// reportLoop runs the reporter while the control connection runs.
func (a *Agent) reportLoop(ctx context.Context) error {
	if !a.Config().LinkOn() {
		return nil
	}
	p := &reporter{
		build: a.boxReport,
		send:  a.sendReport,
		up:    a.reportUp,
		kick:  a.reportKick,
		every: wire.ReportEvery,
		tick:  wire.ReportCheckEvery,
		log:   a.log,
	}
	return p.run(ctx)
}

// kickReport asks the reporter to look for a change now.
func (a *Agent) kickReport() {
	select {
	case a.reportKick <- struct{}{}:
	default:
	}
}

func (a *Agent) sendReport(ctx context.Context, r wire.BoxReport) error {
	a.mu.Lock()
	c := a.link
	a.mu.Unlock()
	if c == nil {
		return link.ErrNotConnected
	}
	rctx, cancel := context.WithTimeout(ctx, reportWait)
	defer cancel()
	resp, err := c.Request(rctx, wire.OpBoxReport, r)
	if err != nil {
		return err
	}
	if resp.Status != http.StatusOK {
		return fmt.Errorf("status %d: %s", resp.Status, resp.Error)
	}
	return nil
}

// boxReport is the box's health as the fleet view shows it.
func (a *Agent) boxReport() (wire.BoxReport, error) {
	q, err := a.Queue()
	if err != nil {
		return wire.BoxReport{}, err
	}
	now := time.Now()
	r := wire.BoxReport{
		Version: cli.Version, Started: a.started.UTC(), UptimeSeconds: now.Sub(a.started).Seconds(),
		Backlog: wire.Backlog{Segments: q.Count, Bytes: q.Bytes, Oldest: q.Oldest.UTC(), OldestAgeSeconds: q.Age, Held: len(q.Held)},
		At:      now.UTC(),
	}
	a.mu.Lock()
	stopped, refused, upErr := a.alert, a.upAlert, a.upErr
	r.LastUpload = a.lastCommit.UTC()
	if a.state != nil && a.state.DeviceCert.Leaf != nil {
		r.CertExpiry = a.state.DeviceCert.Leaf.NotAfter.UTC()
	}
	if a.diag != nil {
		d := *a.diag
		r.Diag = &d
	}
	a.mu.Unlock()
	r.Alerts = reportAlerts(stopped, refused, upErr, len(q.Held), q.Age)
	return r, nil
}

// reportAlerts are the box's active alerts: recording stopped on its own
// (stopped, its alert text), the receiver refusing the box (refused),
// held segments, and uploads failing (upErr) while the oldest segment has
// waited wire.UploadFailingAfter (oldestAge, seconds).
func reportAlerts(stopped, refused, upErr string, held int, oldestAge float64) []wire.Alert {
	out := []wire.Alert{}
	add := func(kind, msg string) {
		out = append(out, wire.Alert{Kind: kind, Message: cut(msg, wire.MaxAlertMessage)})
	}
	if stopped != "" {
		add(wire.AlertRecordingStopped, stopped)
	}
	if refused != "" {
		add(wire.AlertDeviceRefused, refused)
	}
	if held > 0 {
		add(wire.AlertSegmentsHeld, fmt.Sprintf("%d segment(s) wait for a technician (quarantined, corrupt or missing): see `uploadbox queue` on the box", held))
	}
	if upErr != "" && oldestAge >= wire.UploadFailingAfter.Seconds() {
		add(wire.AlertUploadFailing, fmt.Sprintf("uploads fail and the oldest segment has waited %s: %s", time.Duration(oldestAge*float64(time.Second)).Round(time.Minute), upErr))
	}
	return out
}

// cut shortens s to at most n bytes, on a rune boundary.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[:n]
	for !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}

// diagEvents are the audit events of a diag run: through the daemon
// (audit.append) or written by diag itself while the daemon was down.
var diagEvents = map[string]bool{"diag.run": true, "diag": true}

// diagSummary reads a diag run's audit entry: its outcome is the run's
// status and its detail "check=status …" (agent/diag). nil if the entry
// is not a diag run or does not read as one.
func diagSummary(e audit.Entry) *wire.DiagSummary {
	if !diagEvents[e.Event] {
		return nil
	}
	d := &wire.DiagSummary{At: e.Time.UTC(), Status: e.Outcome, Checks: map[string]string{}}
	for _, f := range strings.Fields(e.Detail) {
		name, status, ok := strings.Cut(f, "=")
		if !ok {
			return nil
		}
		d.Checks[name] = status
	}
	r := wire.BoxReport{Diag: d}
	if r.Check() != nil {
		return nil
	}
	return d
}

// loadDiag finds the last diag run in the audit log, so that a restarted
// daemon reports it too.
func (a *Agent) loadDiag(path string) {
	es, err := audit.Tail(path, 5000)
	if err != nil {
		a.log.Warn("last diag run not read from the audit log", "err", err)
		return
	}
	for i := len(es) - 1; i >= 0; i-- {
		if d := diagSummary(es[i]); d != nil {
			a.mu.Lock()
			a.diag = d
			a.mu.Unlock()
			return
		}
	}
}

// noteDiag keeps a diag run that was just audited for the next report.
func (a *Agent) noteDiag(e audit.Entry) {
	d := diagSummary(e)
	if d == nil {
		return
	}
	a.mu.Lock()
	a.diag = d
	a.mu.Unlock()
	a.kickReport()
}
