package agent

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/agent/button"
	"github.com/uploadbox/uploadbox/agent/button/buttontest"
	"github.com/uploadbox/uploadbox/agent/config"
	"github.com/uploadbox/uploadbox/consent"
	"github.com/uploadbox/uploadbox/internal/audit"
)

// buttonConfig is a daemon config in dir with a consent button and
// nothing that needs enrollment or a network.
func buttonConfig(dir string) *config.Config {
	cfg := config.Default()
	cfg.StateDir = filepath.Join(dir, "state")
	cfg.RuntimeDir = filepath.Join(dir, "run")
	cfg.Spool.Dir = filepath.Join(dir, "spool")
	cfg.Audit.Path = filepath.Join(dir, "audit.jsonl")
	cfg.Metrics.Listen = ""
	off := false
	cfg.Upload.Enabled, cfg.Link.Enabled = &off, &off
	cfg.Consent.Button.Chip = "gpiochip0"
	return cfg
}

// TestButtonDecides runs the daemon with a fake button line: a short
// press accepts the oldest pending viewer request in the real consent
// ledger, a long press ends all viewing (the grant, and the request still
// pending), and the audit log names the button for each.
func TestButtonDecides(t *testing.T) {
	line, clk := buttontest.NewLine(), &buttontest.Clock{}
	openButtonLine = func(b config.Button) (button.Line, error) {
		if b.Chip != "gpiochip0" || b.Line != 17 || !b.ActiveLow {
			t.Errorf("button opened as %+v, want the configured gpiochip0 line 17, active low", b)
		}
		return line, nil
	}
	buttonClock = clk
	t.Cleanup(func() {
		openButtonLine = func(b config.Button) (button.Line, error) { return button.Open(b.Chip, b.Line, b.ActiveLow) }
		buttonClock = nil
	})
	cfg := buttonConfig(t.TempDir())
	a, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	// A session runs (its recording is not this test's concern) and two
	// coaches ask; the first asked is the one a press accepts.
	a.ledger.SessionStarted(time.Now().Add(time.Hour))
	anna := ask(t, a.ledger, "coach-anna")
	ben := ask(t, a.ledger, "coach-ben")

	press := func(down, up time.Duration) {
		t.Helper()
		clk.Set(down)
		if err := line.Press(t.Context(), down); err != nil {
			t.Fatal(err)
		}
		clk.Set(up)
		if err := line.Release(t.Context(), up); err != nil {
			t.Fatal(err)
		}
		clk.Set(up + time.Second)
	}
	press(time.Second, 1200*time.Millisecond)
	// Whichever request the press decided, wait for it.
	awaited := make(chan struct{}, 2)
	wctx, wstop := context.WithCancel(t.Context())
	for _, id := range []string{anna, ben} {
		go func() { a.ledger.AwaitDecision(wctx, id); awaited <- struct{}{} }()
	}
	<-awaited
	wstop()
	<-awaited
	if r, _ := a.ledger.Get(anna); r.State != consent.StateAccepted {
		t.Fatalf("after a short press coach-anna's request is %s, want accepted", r.State)
	}
	if r, _ := a.ledger.Get(ben); r.State != consent.StatePending {
		t.Fatalf("after one short press coach-ben's request is %s, want still pending", r.State)
	}

	// Long press: the grant ends while the button is still held.
	ended, stop := a.ledger.Watch("coach-anna")
	defer stop()
	clk.Set(5 * time.Second)
	if err := line.Press(t.Context(), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	clk.Set(7 * time.Second)
	select {
	case reason := <-ended:
		if reason != consent.EndAll {
			t.Errorf("coach-anna's grant ended %q, want %q", reason, consent.EndAll)
		}
	case <-t.Context().Done():
		t.Fatal("a long press did not end the viewing")
	}

	// The watch ends before its end is audited, under the ledger's lock:
	// any ledger call after it waits until the audit entry is written.
	if _, err := a.ledger.List(); err != nil {
		t.Fatal(err)
	}
	es, err := audit.Tail(cfg.Audit.Path, 0)
	if err != nil {
		t.Fatal(err)
	}
	var decided []string
	for _, e := range es {
		switch e.Event {
		case "consent.accept", "consent.end_all":
			decided = append(decided, e.Event+" "+e.Identity+" by "+e.By)
		}
	}
	want := "consent.accept coach-anna by button|consent.end_all coach-anna by button|consent.end_all coach-ben by button"
	if got := strings.Join(decided, "|"); got != want {
		t.Errorf("audited decisions %q, want %q", got, want)
	}
}

func ask(t *testing.T, l *consent.Ledger, viewer string) string {
	t.Helper()
	_, err := l.Ask(viewer, true)
	var d *consent.Denied
	if !errors.As(err, &d) || d.Reason != consent.ReasonPending {
		t.Fatalf("Ask(%s) = %v, want a pending request", viewer, err)
	}
	return d.Request
}

// A configured button that cannot be opened is logged once and refuses
// nothing else: runButton returns nil, so the daemon's group runs on.
func TestButtonCannotOpen(t *testing.T) {
	cfg := buttonConfig(t.TempDir())
	cfg.Consent.Button.Chip = filepath.Join(t.TempDir(), "gpiochip0") // no such chip
	// Nothing logs concurrently here: Run is not called.
	var logs bytes.Buffer
	a, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		a.ctl.Serve(ctx, a.handle) // closes the socket
		a.ledger.Close()
		a.spool.Close()
	}()
	if err := a.runButton(t.Context()); err != nil {
		t.Errorf("runButton = %v, want nil: a broken button must not stop the daemon", err)
	}
	out := logs.String()
	if n := strings.Count(out, "consent button cannot be used"); n != 1 || !strings.Contains(out, "does not exist") || !strings.Contains(out, "diag --check button") {
		t.Errorf("log said it %d times, want once with the cause and diag:\n%s", n, out)
	}
}
