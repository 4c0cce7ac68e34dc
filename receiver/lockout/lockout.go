// Package lockout is the receiver's one rule for repeated failures:
// MaxFailures failed attempts within Window lock an identity (a device's
// enrollment, a viewer's login) until an administrator unlocks it.
package lockout

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/uploadbox/uploadbox/receiver/kv"
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

// Unknown keeps failure records for names that have no account, so that
// an unknown name locks after MaxFailures like a real one and an outsider
// cannot tell the two apart by the answers. The records live in their own
// state-store bucket, at most max of them: when full, records whose failures
// have all left the window go first, then the oldest by lock time.
type Unknown struct {
	bucket []byte
	max    int
}

// DefaultMaxUnknown bounds the records of unknown names.
const DefaultMaxUnknown = 10000

// NewUnknown creates the bucket in db if needed.
func NewUnknown(db kv.DB, bucket string, max int) (*Unknown, error) {
	u := &Unknown{bucket: []byte(bucket), max: max}
	if err := db.Update(func(tx kv.Tx) error {
		_, err := tx.CreateBucketIfNotExists(u.bucket)
		return err
	}); err != nil {
		return nil, fmt.Errorf("lockout records %s: %w", bucket, err)
	}
	return u, nil
}

// Get returns name's record (empty if none).
func (u *Unknown) Get(tx kv.Tx, name string) Record {
	var r Record
	if v := tx.Bucket(u.bucket).Get([]byte(name)); v != nil {
		json.Unmarshal(v, &r)
	}
	return r
}

// Fail records a failure of name at now in a write transaction and
// returns the updated record and whether this failure locked it.
func (u *Unknown) Fail(tx kv.Tx, name string, now time.Time) (Record, bool, error) {
	b := tx.Bucket(u.bucket)
	r := u.Get(tx, name)
	if b.Get([]byte(name)) == nil && b.KeyN() >= u.max {
		u.evict(b, now)
	}
	locked := r.Fail(now)
	v, err := json.Marshal(r)
	if err != nil {
		return r, false, err
	}
	return r, locked, b.Put([]byte(name), v)
}

// evict makes room for one record.
func (u *Unknown) evict(b kv.Bucket, now time.Time) {
	var stale [][]byte
	var oldest []byte
	var oldestAt time.Time
	b.ForEach(func(k, v []byte) error {
		var r Record
		json.Unmarshal(v, &r)
		if !r.Locked() && r.Recent(now) == 0 {
			stale = append(stale, slices.Clone(k))
		} else if oldest == nil || r.LockedAt.Before(oldestAt) {
			oldest, oldestAt = slices.Clone(k), r.LockedAt
		}
		return nil
	})
	if len(stale) == 0 && oldest != nil {
		stale = append(stale, oldest)
	}
	for _, k := range stale {
		b.Delete(k)
	}
}

// Forget removes name's record (an administrator's unlock, or an account
// of that name was created) and reports whether there was one.
func (u *Unknown) Forget(tx kv.Tx, name string) (bool, error) {
	b := tx.Bucket(u.bucket)
	if b.Get([]byte(name)) == nil {
		return false, nil
	}
	return true, b.Delete([]byte(name))
}

// ForgetUnlisted is an administrator's unlock of a name that has no
// account: when name is not a key of the accounts bucket in db, its
// failure record is removed. It reports whether a record was removed
// (false also when name has an account: unlock that account instead).
func (u *Unknown) ForgetUnlisted(db kv.DB, accounts []byte, name string) (forgot bool, err error) {
	err = db.Update(func(tx kv.Tx) error {
		if tx.Bucket(accounts).Get([]byte(name)) != nil {
			return nil
		}
		forgot, err = u.Forget(tx, name)
		return err
	})
	return forgot, err
}
