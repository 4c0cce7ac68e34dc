package agent

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
	"unicode/utf8"

	"github.com/uploadbox/uploadbox/agent/link"
	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/wire"
)

// TestReporter: a report goes out at each new connection, at once (within
// a check) when an alert appears, and otherwise once a minute; nothing is
// sent while the box is not connected, and the first report after a
// reconnect goes out even when nothing changed.
func TestReporter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		up, kick := make(chan struct{}, 1), make(chan struct{}, 1)
		// Shared with the reporter's goroutine; synctest.Wait orders the
		// steps, the mutex tells the race detector.
		var mu sync.Mutex
		connected := false
		alerts := []wire.Alert{}
		var sent []time.Time
		start := time.Now()
		p := &reporter{
			build: func() (wire.BoxReport, error) {
				mu.Lock()
				defer mu.Unlock()
				return wire.BoxReport{Version: "v1", Alerts: alerts, At: time.Now()}, nil
			},
			send: func(_ context.Context, r wire.BoxReport) error {
				mu.Lock()
				defer mu.Unlock()
				if !connected {
					return link.ErrNotConnected
				}
				sent = append(sent, r.At)
				return nil
			},
			up: up, kick: kick, every: time.Minute, tick: 5 * time.Second, log: slog.New(slog.DiscardHandler),
		}
		done := make(chan error)
		go func() { done <- p.run(ctx) }()
		offsets := func() []time.Duration {
			mu.Lock()
			defer mu.Unlock()
			var out []time.Duration
			for _, s := range sent {
				out = append(out, s.Sub(start))
			}
			return out
		}
		want := func(what string, n int) {
			t.Helper()
			synctest.Wait()
			mu.Lock()
			got := len(sent)
			mu.Unlock()
			if got != n {
				t.Fatalf("%s: %d reports sent at %v, want %d", what, got, offsets(), n)
			}
		}

		time.Sleep(30 * time.Second)
		want("not connected", 0)

		mu.Lock()
		connected = true
		mu.Unlock()
		up <- struct{}{}
		want("connected", 1)

		time.Sleep(50 * time.Second)
		want("nothing changed within the minute", 1)
		time.Sleep(15 * time.Second)
		want("a minute after the last", 2)

		mu.Lock()
		alerts = []wire.Alert{{Kind: wire.AlertRecordingStopped, Message: "spool full"}}
		mu.Unlock()
		kick <- struct{}{}
		want("an alert", 3)
		time.Sleep(6 * time.Second)
		want("the same alert again", 3)

		// Reconnect: sent at once though nothing changed.
		up <- struct{}{}
		want("reconnected", 4)
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}

// TestDiagSummary: a diag run's audit entry becomes the report's diag
// summary; anything else, or a detail that does not read as statuses per
// check, is not one.
func TestDiagSummary(t *testing.T) {
	at := time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)
	tests := []struct {
		name  string
		entry audit.Entry
		want  map[string]string
	}{
		{"through the daemon", audit.Entry{Time: at, Event: "diag.run", Outcome: "warn", Detail: "config=pass camera=warn disk=pass"},
			map[string]string{"config": "pass", "camera": "warn", "disk": "pass"}},
		{"written by diag", audit.Entry{Time: at, Event: "diag", Outcome: "fail", Detail: "daemon=fail"}, map[string]string{"daemon": "fail"}},
		{"another event", audit.Entry{Time: at, Event: "session.start", Outcome: "ok", Detail: "a=pass"}, nil},
		{"a status that is none", audit.Entry{Time: at, Event: "diag.run", Outcome: "pass", Detail: "config=great"}, nil},
		{"a word without a status", audit.Entry{Time: at, Event: "diag.run", Outcome: "pass", Detail: "config=pass /home/alice"}, nil},
		{"a name with a path", audit.Entry{Time: at, Event: "diag.run", Outcome: "pass", Detail: "/home/alice=pass"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := diagSummary(tt.entry)
			if tt.want == nil {
				if d != nil {
					t.Fatalf("got %+v, want none", *d)
				}
				return
			}
			if d == nil || d.Status != tt.entry.Outcome || !d.At.Equal(at) || len(d.Checks) != len(tt.want) {
				t.Fatalf("got %+v, want %v", d, tt.want)
			}
			for k, v := range tt.want {
				if d.Checks[k] != v {
					t.Errorf("check %s = %q, want %q", k, d.Checks[k], v)
				}
			}
		})
	}
}

// TestReportAlerts: each cause is its alert kind; uploads failing is an
// alert only once the oldest segment has waited UploadFailingAfter; a
// long message is cut on a rune boundary; no cause, no alert (never null).
func TestReportAlerts(t *testing.T) {
	long := strings.Repeat("é", wire.MaxAlertMessage)
	waited := wire.UploadFailingAfter.Seconds()
	tests := []struct {
		name                    string
		stopped, refused, upErr string
		held                    int
		age                     float64
		kinds                   []string
	}{
		{"none", "", "", "", 0, 0, nil},
		{"recording stopped", "recording stopped on its own: the spool is full", "", "", 0, 0, []string{wire.AlertRecordingStopped}},
		{"refused", "", "the receiver refuses this box", "", 0, 0, []string{wire.AlertDeviceRefused}},
		{"held", "", "", "", 2, 0, []string{wire.AlertSegmentsHeld}},
		{"uploads failing briefly", "", "", "connection refused", 0, waited - 1, nil},
		{"uploads failing for long", "", "", "connection refused", 0, waited, []string{wire.AlertUploadFailing}},
		{"everything", long, "r", "e", 1, waited * 2, []string{wire.AlertRecordingStopped, wire.AlertDeviceRefused, wire.AlertSegmentsHeld, wire.AlertUploadFailing}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := reportAlerts(tt.stopped, tt.refused, tt.upErr, tt.held, tt.age)
			if got == nil {
				t.Fatal("alerts are null")
			}
			var kinds []string
			for _, a := range got {
				kinds = append(kinds, a.Kind)
				if len(a.Message) > wire.MaxAlertMessage || !utf8.ValidString(a.Message) || a.Message == "" {
					t.Errorf("%s: message of %d bytes (valid UTF-8: %t)", a.Kind, len(a.Message), utf8.ValidString(a.Message))
				}
			}
			if strings.Join(kinds, ",") != strings.Join(tt.kinds, ",") {
				t.Errorf("kinds %v, want %v", kinds, tt.kinds)
			}
			r := wire.BoxReport{Alerts: got}
			if err := r.Check(); err != nil {
				t.Errorf("the receiver would refuse them: %v", err)
			}
		})
	}
}
