package wire

import (
	"errors"
	"fmt"
	"regexp"
	"time"
	"unicode/utf8"
)

// OpBoxReport is the control request the box sends the receiver with its
// health for the fleet view: params BoxReport. The box sends one after
// every (re)connect, when its alerts, diag summary, certificate or held
// segments change (looked at every ReportCheckEvery) and at least every
// ReportEvery. The receiver answers 200, or 400 naming the bad field, and
// keeps the last report per device in its database.
const OpBoxReport = "box.report"

// ReportEvery is the longest time between two reports of a connected box.
const ReportEvery = time.Minute

// ReportCheckEvery is how often the box looks for a change to report.
const ReportCheckEvery = 5 * time.Second

// Bounds of a BoxReport (Check refuses a report beyond them).
const (
	MaxReportAlerts  = 16
	MaxAlertMessage  = 512
	MaxReportChecks  = 32
	maxReportVersion = 64
)

// Alert kinds.
const (
	// AlertRecordingStopped: a recording stopped on its own (spool full,
	// disk reserve reached, a write error) and no session started since.
	AlertRecordingStopped = "recording-stopped"
	// AlertDeviceRefused: the receiver refuses the box's enrollment, so
	// uploads wait.
	AlertDeviceRefused = "device-refused"
	// AlertSegmentsHeld: segments wait for a technician (quarantined,
	// corrupt or missing; `uploadbox queue`).
	AlertSegmentsHeld = "segments-held"
	// AlertUploadFailing: uploads fail and the oldest waiting segment is
	// older than UploadFailingAfter.
	AlertUploadFailing = "upload-failing"
)

// UploadFailingAfter is how long the oldest segment of a box whose uploads
// fail waits before the box raises AlertUploadFailing (a short outage is
// not an alert).
const UploadFailingAfter = 10 * time.Minute

// BoxReport is what a box says about its health: no content, no file
// names, no names of people.
type BoxReport struct {
	// Version is the box's software version.
	Version string `json:"version"`
	// Started is when the daemon started; UptimeSeconds how long ago.
	Started       time.Time `json:"started"`
	UptimeSeconds float64   `json:"uptime_seconds"`
	Backlog       Backlog   `json:"backlog"`
	// LastUpload is when the receiver last committed a segment of the
	// box (zero: none since the daemon started).
	LastUpload time.Time `json:"last_upload,omitzero"`
	// Alerts are the box's active alerts; never null.
	Alerts []Alert `json:"alerts"`
	// CertExpiry is when the box's client certificate expires.
	CertExpiry time.Time `json:"cert_expiry,omitzero"`
	// Diag is the outcome of the last `uploadbox diag` run on the box,
	// nil if none is known.
	Diag *DiagSummary `json:"diag,omitempty"`
	// At is when the box took this report.
	At time.Time `json:"at"`
}

// Backlog is the box's upload queue.
type Backlog struct {
	Segments int   `json:"segments"`
	Bytes    int64 `json:"bytes"`
	// Oldest is when the oldest waiting segment was sealed; zero when
	// the queue is empty.
	Oldest           time.Time `json:"oldest,omitzero"`
	OldestAgeSeconds float64   `json:"oldest_age_seconds"`
	// Held counts the segments that wait for a technician.
	Held int `json:"held"`
}

// Alert is one active alert: a kind (the Alert* constants; a newer box
// may send others) and one sentence saying what happened and what to do.
type Alert struct {
	Kind    string `json:"kind"`
	Message string `json:"message"`
}

// DiagSummary is a diag run reduced to its statuses: pass, warn, fail or
// skip per check name, and the worst of them.
type DiagSummary struct {
	At     time.Time         `json:"at"`
	Status string            `json:"status"`
	Checks map[string]string `json:"checks"`
}

var (
	reportName   = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)
	diagStatuses = map[string]bool{"pass": true, "warn": true, "fail": true, "skip": true}
)

// ErrBadReport is wrapped by Check's errors.
var ErrBadReport = errors.New("bad box report")

// Check refuses a report the receiver should not store or show: fields
// beyond the bounds, unknown statuses, negative counts. The error names
// the field.
func (r *BoxReport) Check() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadReport, fmt.Sprintf(format, args...))
	}
	switch {
	case len(r.Version) > maxReportVersion || !utf8.ValidString(r.Version):
		return bad("version is %d bytes, more than %d (or not UTF-8)", len(r.Version), maxReportVersion)
	case r.UptimeSeconds < 0:
		return bad("uptime_seconds is negative")
	case r.Backlog.Segments < 0 || r.Backlog.Bytes < 0 || r.Backlog.OldestAgeSeconds < 0 || r.Backlog.Held < 0:
		return bad("backlog has a negative count")
	case len(r.Alerts) > MaxReportAlerts:
		return bad("%d alerts, more than %d", len(r.Alerts), MaxReportAlerts)
	}
	for i, a := range r.Alerts {
		if !reportName.MatchString(a.Kind) {
			return bad("alerts[%d].kind %q is not 1-32 characters of [a-z0-9_-]", i, a.Kind)
		}
		if len(a.Message) > MaxAlertMessage || !utf8.ValidString(a.Message) {
			return bad("alerts[%d].message is %d bytes, more than %d (or not UTF-8)", i, len(a.Message), MaxAlertMessage)
		}
	}
	if d := r.Diag; d != nil {
		if len(d.Checks) > MaxReportChecks {
			return bad("diag has %d checks, more than %d", len(d.Checks), MaxReportChecks)
		}
		if !diagStatuses[d.Status] {
			return bad("diag.status %q is not pass, warn, fail or skip", d.Status)
		}
		for name, st := range d.Checks {
			if !reportName.MatchString(name) {
				return bad("diag check name %q is not 1-32 characters of [a-z0-9_-]", name)
			}
			if !diagStatuses[st] {
				return bad("diag.checks.%s %q is not pass, warn, fail or skip", name, st)
			}
		}
	}
	return nil
}
