package agent

import (
	"context"
	"errors"
	"log/slog"

	"github.com/uploadbox/uploadbox/agent/button"
	"github.com/uploadbox/uploadbox/agent/config"
	"github.com/uploadbox/uploadbox/consent"
)

// ByButton is the decider the audit log names for what the consent
// button decided.
const ByButton = "button"

// openButtonLine opens the consent button's line; tests put a fake line
// in its place.
var openButtonLine = func(b config.Button) (button.Line, error) {
	return button.Open(b.Chip, b.Line, b.ActiveLow)
}

// buttonClock is the button's clock: nil, the kernel's clock of GPIO
// events; tests put a fake clock in its place.
var buttonClock button.Clock

// runButton reads the consent button while the daemon runs, when one is
// configured. A button that cannot be opened, or that stops working, is
// logged once and refuses nothing else: the daemon runs on without it.
func (a *Agent) runButton(ctx context.Context) error {
	b := a.Config().Consent.Button
	if !b.On() {
		return nil
	}
	log := a.log.With("component", "button", "chip", b.Chip, "line", b.Line)
	line, err := openButtonLine(b)
	if err != nil {
		log.Error("consent button cannot be used; the daemon runs without it (see uploadbox diag --check button)", "err", err)
		return nil
	}
	defer line.Close()
	o := button.Options{Debounce: b.Debounce.D(), Clock: buttonClock}
	if b.LongPressStopsSession {
		o.StopWindow = button.DefaultStopWindow
	}
	log.Info("consent button ready", "active_low", b.ActiveLow, "long_press_stops_session", b.LongPressStopsSession)
	if err := button.Run(ctx, line, o, a.buttonPressed); err != nil {
		log.Error("consent button stopped working; the daemon runs without it until it restarts", "err", err)
	}
	return nil
}

// buttonPressed does what a press means.
func (a *Agent) buttonPressed(act button.Action) {
	log := a.log.With("component", "button", "press", act.String())
	defer a.updateIndicator()
	switch act {
	case button.Accept:
		a.acceptOldest(log)
	case button.EndAll:
		a.endAllViewing(log)
	case button.StopSession:
		// Viewing ends at once, not when the last segment is sealed.
		a.endAllViewing(log)
		err := a.stopSession(StopStopped, ByButton)
		switch {
		case errors.Is(err, errNoSession):
			log.Info("no session to stop")
		case err != nil:
			log.Error("session stop", "err", err)
		}
	}
}

// acceptOldest accepts the oldest pending request with the default grant
// (live.grant_default, audio if it was asked for).
func (a *Agent) acceptOldest(log *slog.Logger) {
	rs, err := a.ledger.List()
	if err != nil {
		log.Error("consent ledger", "err", err)
		return
	}
	var oldest *consent.Request
	for i := range rs { // newest first: the last pending one is the oldest
		if rs[i].State == consent.StatePending {
			oldest = &rs[i]
		}
	}
	if oldest == nil {
		log.Info("no request waiting")
		return
	}
	g, err := a.ledger.Accept(oldest.ID, 0, false, ByButton)
	if err != nil {
		log.Error("accept", "request", oldest.ID, "viewer", oldest.Viewer, "err", err)
		return
	}
	log.Info("request accepted", "request", g.ID, "viewer", g.Viewer, "audio", g.Audio, "expires", g.Expires)
}

// endAllViewing ends every live grant and declines every pending request
// now, as a teacher's end_all does.
func (a *Agent) endAllViewing(log *slog.Logger) {
	n, err := a.ledger.EndAllViewing(ByButton)
	if err != nil {
		log.Error("end all viewing", "err", err)
	}
	log.Info("all viewing ended", "grants_and_requests", n)
}
