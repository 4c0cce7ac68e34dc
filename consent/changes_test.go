package consent

import (
	"testing"
	"time"
)

// TestChangesAndSnapshot: every change of the ledger signals Changes
// (coalesced: one value for several), and Snapshot shows the session, the
// pending requests, the live grants and the cooldowns as they are.
func TestChangesAndSnapshot(t *testing.T) {
	clk := newClock()
	r := newRig(t, clk.Now)
	l := r.l
	changes, cancel := l.Changes()
	defer cancel()
	changed := func(what string) {
		t.Helper()
		select {
		case <-changes:
		default:
			t.Fatalf("%s did not signal a change", what)
		}
		select {
		case <-changes:
			t.Fatalf("%s signalled twice without a read", what)
		default:
		}
	}
	end := clk.Now().Add(time.Hour)
	l.SessionStarted(end)
	changed("a session start")
	a := pending(t, l, "coach-a", true)
	changed("a request")
	pending(t, l, "coach-b", false)
	pending(t, l, "coach-c", false)
	changed("two requests (coalesced)")
	s, err := l.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	if !s.Recording || !s.SessionEnd.Equal(end) || len(s.Pending) != 3 || s.Pending[0].ID != a || !s.Pending[0].Audio || len(s.Watching) != 0 {
		t.Fatalf("snapshot with three requests: %+v", s)
	}
	if _, err := l.Accept(a, 15*time.Minute, false, "uid:0"); err != nil {
		t.Fatal(err)
	}
	changed("an accept")
	if err := l.Deny(s.Pending[1].ID, "uid:0"); err != nil {
		t.Fatal(err)
	}
	changed("a deny")
	l.Joined("coach-a", "s1")
	changed("a join")
	s, _ = l.Snapshot()
	if len(s.Pending) != 1 || s.Pending[0].Viewer != "coach-c" || len(s.Watching) != 1 || s.Watching[0].Viewer != "coach-a" ||
		!s.Watching[0].Expires.Equal(clk.Now().Add(15*time.Minute)) || len(s.Cooldowns) != 1 || s.Cooldowns[0].Viewer != "coach-b" || s.Cooldowns[0].Reason != ReasonDeclined {
		t.Fatalf("snapshot after accept and deny: %+v", s)
	}
	if err := l.Revoke("coach-a", "uid:0"); err != nil {
		t.Fatal(err)
	}
	changed("a revoke")
	l.SessionEnded("uid:0")
	changed("a session end")
	s, _ = l.Snapshot()
	if s.Recording || !s.SessionEnd.IsZero() || len(s.Pending) != 0 || len(s.Watching) != 0 || len(s.Cooldowns) != 0 {
		t.Fatalf("snapshot after the session ended (by a person: cooldowns lifted): %+v", s)
	}
	cancel()
	l.SessionStarted(time.Time{})
	select {
	case <-changes:
		t.Fatal("a cancelled subscription is still told")
	default:
	}
}
