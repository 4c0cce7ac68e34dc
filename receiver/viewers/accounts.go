package viewers

import (
	"errors"
	"fmt"
	"time"

	"github.com/uploadbox/uploadbox/receiver/kv"
)

// Errors of disabled and removed accounts.
var (
	// ErrDisabled: the account is disabled (uploadbox-receiver viewers
	// enable NAME lets it sign in again).
	ErrDisabled = errors.New("viewer account is disabled (an administrator runs: uploadbox-receiver viewers enable NAME)")
	// ErrTokenWithdrawn: the token was issued before its account was
	// re-created or enabled again; signing in again gives a new one.
	ErrTokenWithdrawn = errors.New("the token was issued before the account was re-created or re-enabled; sign in again")
)

// removedBucket holds, per removed account name, when it was removed: a
// new account of that name refuses the old account's tokens.
var removedBucket = []byte("viewers.removed")

// Disable stops name from signing in; the tokens it holds are refused by
// the receiver from now on (TokenAccepted). Audited as viewer.disable.
func (r *Registry) Disable(name string) error {
	return r.set(name, "viewer.disable", func(rec *record) error {
		if !rec.Disabled.IsZero() {
			return fmt.Errorf("viewer %s is disabled already (since %s)", name, rec.Disabled.Format(time.RFC3339))
		}
		rec.Disabled = r.now().UTC()
		return nil
	})
}

// Enable lets a disabled account sign in again. The tokens it held before
// it was disabled stay refused. Audited as viewer.enable.
func (r *Registry) Enable(name string) error {
	var from time.Time
	err := r.set(name, "viewer.enable", func(rec *record) error {
		if rec.Disabled.IsZero() {
			return fmt.Errorf("viewer %s is not disabled", name)
		}
		from = secondAfter(rec.Disabled)
		rec.Disabled, rec.TokensFrom = time.Time{}, from
		return nil
	})
	if err == nil {
		r.waitFor(from)
	}
	return err
}

// Remove deletes name's account: it cannot sign in, its tokens are
// refused, and the name can be given to a new account, which does not
// accept the old one's tokens. Audited as viewer.remove.
func (r *Registry) Remove(name string) error {
	err := r.db.Update(func(tx kv.Tx) error {
		if _, err := get(tx, name); err != nil {
			return err
		}
		b, err := tx.CreateBucketIfNotExists(removedBucket)
		if err != nil {
			return err
		}
		at, err := r.now().UTC().MarshalText()
		if err != nil {
			return err
		}
		if err := b.Put([]byte(name), at); err != nil {
			return err
		}
		return tx.Bucket(bucket).Delete([]byte(name))
	})
	outcome := "ok"
	if err != nil {
		outcome = "failed"
	}
	return errors.Join(err, r.audit("viewer.remove", name, "local", outcome, ""))
}

// tokensFrom is where a new account of name starts accepting tokens: the
// second after an earlier account of that name was removed (zero if none).
// It forgets the removal: the new account carries the time.
func tokensFrom(tx kv.Tx, name string) (time.Time, error) {
	b := tx.Bucket(removedBucket)
	if b == nil {
		return time.Time{}, nil
	}
	v := b.Get([]byte(name))
	if v == nil {
		return time.Time{}, nil
	}
	var at time.Time
	if err := at.UnmarshalText(v); err != nil {
		return time.Time{}, fmt.Errorf("viewer %s: damaged removal record: %w", name, err)
	}
	return secondAfter(at), b.Delete([]byte(name))
}

// secondAfter is the start of the second after t. Tokens carry their
// issue time in whole seconds: one issued up to t has an earlier one.
func secondAfter(t time.Time) time.Time { return t.UTC().Truncate(time.Second).Add(time.Second) }

// waitFor returns once the clock has reached t (at most a second away), so
// that a token issued after the call returns is accepted.
func (r *Registry) waitFor(t time.Time) {
	if d := t.Sub(r.now()); d > 0 && d <= time.Second {
		time.Sleep(d)
	}
}

// TokenAccepted reports whether a valid token for name issued at issuedAt
// (Unix seconds) may still be used: the account exists, is not disabled,
// and the token is not older than the account's current life (see Remove
// and Enable). It returns ErrUnknownViewer, ErrDisabled or
// ErrTokenWithdrawn otherwise.
func (r *Registry) TokenAccepted(name string, issuedAt int64) error {
	return r.db.View(func(tx kv.Tx) error {
		rec, err := get(tx, name)
		switch {
		case err != nil:
			return err
		case !rec.Disabled.IsZero():
			return fmt.Errorf("%w: %s", ErrDisabled, name)
		case issuedAt < rec.TokensFrom.Unix() && !rec.TokensFrom.IsZero():
			return fmt.Errorf("%w: %s", ErrTokenWithdrawn, name)
		}
		return nil
	})
}
