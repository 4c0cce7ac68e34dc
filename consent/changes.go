package consent

import (
	"cmp"
	"slices"
	"time"
)

// Changes returns a channel that receives a value whenever the ledger's
// state may have changed: a request made, decided or cancelled, a grant
// given, ended or expired, a viewer joined or left, a session started or
// ended. Values are coalesced (the channel holds one): read Snapshot after
// each. cancel stops the subscription.
func (l *Ledger) Changes() (changed <-chan struct{}, cancel func()) {
	ch := make(chan struct{}, 1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.changes == nil {
		l.changes = map[chan struct{}]struct{}{}
	}
	l.changes[ch] = struct{}{}
	return ch, func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		delete(l.changes, ch)
	}
}

// changedLocked tells every Changes subscriber.
func (l *Ledger) changedLocked() {
	for ch := range l.changes {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Snapshot is the ledger's state at At, for the teacher's page.
type Snapshot struct {
	Recording bool
	// SessionEnd is the session's end (zero: open-ended, or none runs).
	SessionEnd time.Time
	// Pending are the requests waiting for the teacher, oldest first.
	Pending []Request
	// Watching are the live grants, oldest first.
	Watching []Request
	// Cooldowns are the viewers whose asks are refused for now, by name.
	Cooldowns []Cooldown
	// Speaking is the viewer whose voice the box plays now (talk-back),
	// if any.
	Speaking string
	At       time.Time
}

// Cooldown is a viewer whose asks are answered Reason (ReasonDeclined,
// ReasonRevoked, ReasonEnded) until Until.
type Cooldown struct {
	Viewer string
	Reason string
	Until  time.Time
}

// Snapshot returns the current state: whether a session runs, the pending
// requests, the live grants and the cooldowns that still hold.
func (l *Ledger) Snapshot() (Snapshot, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return Snapshot{}, ErrClosed
	}
	now := l.now()
	l.sweepAndLogLocked(now)
	s := Snapshot{Recording: l.sessionRunningLocked(now), Speaking: l.speaking, At: now}
	if s.Recording {
		s.SessionEnd = l.session.End
	}
	for _, r := range l.sortedActiveLocked() {
		switch {
		case r.State == StatePending:
			s.Pending = append(s.Pending, r.Request)
		case r.State == StateAccepted && now.Before(r.Expires):
			s.Watching = append(s.Watching, r.Request)
		}
	}
	for v, c := range l.cool {
		if now.Before(c.Until) {
			s.Cooldowns = append(s.Cooldowns, Cooldown{Viewer: v, Reason: c.Reason, Until: c.Until})
		}
	}
	slices.SortFunc(s.Cooldowns, func(a, b Cooldown) int { return cmp.Compare(a.Viewer, b.Viewer) })
	return s, nil
}
