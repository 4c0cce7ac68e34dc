package lockout

import (
	"testing"
	"time"
)

func TestFailuresLockWithinWindowOnly(t *testing.T) {
	var r Record
	now := time.Date(2026, 1, 1, 9, 0, 0, 0, time.UTC)
	for range MaxFailures - 1 {
		if r.Fail(now) {
			t.Fatal("locked before MaxFailures")
		}
		now = now.Add(time.Minute)
	}
	// The failures so far age out: the next ones start a new count.
	now = now.Add(Window + time.Minute)
	if r.Fail(now) || r.Recent(now) != 1 {
		t.Fatalf("old failures still count: %d", r.Recent(now))
	}
	for i := range MaxFailures - 1 {
		locked := r.Fail(now)
		if locked != (i == MaxFailures-2) {
			t.Fatalf("failure %d: locked %v", i+2, locked)
		}
	}
	if !r.Locked() || r.Recent(now.Add(time.Hour)) != MaxFailures {
		t.Fatalf("not locked after %d failures within the window: %+v", MaxFailures, r)
	}
	if r.Fail(now) {
		t.Error("a failure on a locked record reported a new lock")
	}
	r.Clear()
	if r.Locked() || r.Recent(now) != 0 {
		t.Errorf("Clear: %+v", r)
	}
}
