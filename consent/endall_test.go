package consent

import (
	"errors"
	"slices"
	"testing"
	"time"
)

// EndAll ends every live grant at once (their watches end revoked), each
// end audited with who did it; pending requests stay for the teacher.
func TestEndAll(t *testing.T) {
	r := newRig(t, newClock().Now)
	l := r.l
	l.SessionStarted(time.Time{})
	anna := grant(t, l, "coach-anna", 0)
	ben := grant(t, l, "coach-ben", 0)
	ended, cancel := l.Watch("coach-anna")
	defer cancel()
	waiting := pending(t, l, "coach-cleo", false)

	viewers, err := l.EndAll("button")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(viewers, []string{"coach-anna", "coach-ben"}) {
		t.Errorf("EndAll ended %v, want coach-anna and coach-ben", viewers)
	}
	if reason := receive(t, ended, time.Second); reason != EndRevoked {
		t.Errorf("watch ended %q, want %q", reason, EndRevoked)
	}
	mustState(t, l, anna.ID, StateRevoked)
	mustState(t, l, ben.ID, StateRevoked)
	mustState(t, l, waiting, StatePending)
	var revoked []string
	for _, e := range r.events() {
		if e.Event == "consent.revoke" {
			if e.By != "button" {
				t.Errorf("revoke of %s by %q, want button", e.Identity, e.By)
			}
			revoked = append(revoked, e.Identity)
		}
	}
	if !slices.Equal(revoked, viewers) {
		t.Errorf("audited revokes %v, want %v", revoked, viewers)
	}

	if viewers, err := l.EndAll("button"); err != nil || len(viewers) != 0 {
		t.Errorf("EndAll with nobody watching = %v, %v; want none and no error", viewers, err)
	}
	if _, err := l.EndAll(""); !errors.Is(err, ErrNoDecider) {
		t.Errorf("EndAll without a decider = %v, want ErrNoDecider", err)
	}
}
