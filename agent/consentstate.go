package agent

import (
	"cmp"
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/uploadbox/uploadbox/agent/link"
	"github.com/uploadbox/uploadbox/capture/anon"
	"github.com/uploadbox/uploadbox/consent"
	"github.com/uploadbox/uploadbox/wire"
)

// consentStateWait bounds the wait for the receiver's answer to a push.
const consentStateWait = 10 * time.Second

// linkConnected is called on every change of the control connection's
// state: a new connection (Connects moved on) asks consentStateLoop to
// push the state and reportLoop to send a report.
func (a *Agent) linkConnected(s link.State, lastConnects *int) {
	if s.Connected && s.Connects != *lastConnects {
		*lastConnects = s.Connects
		for _, ch := range []chan struct{}{a.linkUp, a.reportUp} {
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}
}

// consentStateLoop pushes the consent state to the receiver
// (wire.OpConsentState) whenever the ledger changes and after every
// (re)connect of the control connection: at most one push per
// wire.ConsentStateEvery, each the state as it is when sent (changes in
// between are coalesced into it). It pushes only while
// consent.remote_decisions is on: the state is for the teacher's page on
// the receiver.
func (a *Agent) consentStateLoop(ctx context.Context) error {
	changes, cancel := a.ledger.Changes()
	defer cancel()
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-changes:
		case <-a.linkUp:
		}
		if wait := wire.ConsentStateEvery - time.Since(last); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
		}
		// What arrived while waiting is in the state taken now.
		select {
		case <-changes:
		default:
		}
		select {
		case <-a.linkUp:
		default:
		}
		last = time.Now()
		a.pushConsentState(ctx)
	}
}

// pushConsentState sends the ledger's state now, if the control
// connection is open.
func (a *Agent) pushConsentState(ctx context.Context) {
	if !a.Config().RemoteDecisionsOn() {
		return
	}
	a.mu.Lock()
	c := a.link
	var mode anon.Mode
	if a.sess != nil {
		mode = a.sess.mode
	}
	a.mu.Unlock()
	if c == nil {
		return
	}
	snap, err := a.ledger.Snapshot()
	if errors.Is(err, consent.ErrClosed) {
		return // the daemon is stopping
	}
	if err != nil {
		a.log.Warn("consent state not taken", "err", err)
		return
	}
	rctx, cancel := context.WithTimeout(ctx, consentStateWait)
	defer cancel()
	st := consentState(snap)
	if snap.Recording {
		st.Anonymise = string(mode)
	}
	cfg := a.Config()
	st.AnonymiseDefault, st.Masks = string(cmp.Or(anon.Mode(cfg.Recording.Anonymise), anon.Off)), len(cfg.Capture.Masks) > 0
	resp, err := c.Request(rctx, wire.OpConsentState, st)
	switch {
	case errors.Is(err, link.ErrNotConnected):
		// Pushed again when the connection opens.
	case err != nil:
		a.log.Warn("consent state not pushed to the receiver", "err", err)
	case resp.Status != http.StatusOK:
		a.log.Warn("the receiver refused the consent state", "status", resp.Status, "error", resp.Error)
	}
}

// consentState is the wire form of a ledger snapshot, each list cut to
// wire.MaxConsentStateItems.
func consentState(s consent.Snapshot) wire.ConsentState {
	out := wire.ConsentState{
		Recording:    s.Recording,
		SessionUntil: s.SessionEnd,
		Pending:      []wire.ConsentPending{},
		Watching:     []wire.ConsentWatching{},
		Cooldowns:    []wire.ConsentCooldown{},
		At:           s.At,
	}
	for _, r := range s.Pending[:min(len(s.Pending), wire.MaxConsentStateItems)] {
		out.Pending = append(out.Pending, wire.ConsentPending{Request: r.ID, Viewer: r.Viewer, AskedAt: r.Created, Audio: r.Audio})
	}
	for _, r := range s.Watching[:min(len(s.Watching), wire.MaxConsentStateItems)] {
		out.Watching = append(out.Watching, wire.ConsentWatching{
			Viewer: r.Viewer, Since: r.Decided, Until: r.Expires, Audio: r.Audio,
			Talk: r.Talk, Speaking: r.Talk && r.Viewer == s.Speaking,
		})
	}
	for _, c := range s.Cooldowns[:min(len(s.Cooldowns), wire.MaxConsentStateItems)] {
		out.Cooldowns = append(out.Cooldowns, wire.ConsentCooldown{Viewer: c.Viewer, Reason: c.Reason, Until: c.Until})
	}
	return out
}
