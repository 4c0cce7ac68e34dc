// Package lockout is the receiver's one rule for repeated failures:
// MaxFailures failed attempts within Window lock an identity (a device's
// enrollment, a viewer's login) until an administrator unlocks it.
package lockout

import (
	"slices"
	"time"
)

// The rule.
const (
	MaxFailures = 5
	Window      = 15 * time.Minute
)

// Record is the failure history kept with an identity in the database.
type Record struct {
	Failures []time.Time `json:"failures,omitempty"`
	LockedAt time.Time   `json:"locked_at,omitzero"`
}

// Locked reports whether the identity is locked.
func (r *Record) Locked() bool { return !r.LockedAt.IsZero() }

// Fail records a failed attempt at now, forgetting failures older than
// Window, and locks the record when MaxFailures remain; it reports
// whether this failure locked it.
func (r *Record) Fail(now time.Time) bool {
	r.Failures = append(r.recent(now), now)
	if len(r.Failures) >= MaxFailures && !r.Locked() {
		r.LockedAt = now
		return true
	}
	return false
}

// Recent counts the failures that still count at now (all of them once
// locked: they are what caused the lock).
func (r *Record) Recent(now time.Time) int {
	if r.Locked() {
		return len(r.Failures)
	}
	return len(r.recent(now))
}

func (r *Record) recent(now time.Time) []time.Time {
	return slices.DeleteFunc(slices.Clone(r.Failures), func(t time.Time) bool { return now.Sub(t) > Window })
}

// Clear forgets every failure and unlocks (a success, or an
// administrator's unlock).
func (r *Record) Clear() { r.Failures, r.LockedAt = nil, time.Time{} }
