// Package viewers keeps the receiver's viewer accounts: named people (a
// coach, a mentor) who log in with a password to get a short-lived viewer
// token. Passwords are hashed with argon2id under an organisation-wide
// policy; MaxFailures failed logins within FailureWindow lock an account
// until an administrator unlocks it. Every attempt is in the audit log.
package viewers

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/internal/viewtoken"
	"github.com/uploadbox/uploadbox/receiver/kv"
	"github.com/uploadbox/uploadbox/receiver/lockout"
)

// Lockout policy: the receiver's one rule, as for devices.
const (
	MaxFailures   = lockout.MaxFailures
	FailureWindow = lockout.Window
)

// Errors callers branch on.
var (
	ErrUnknownViewer  = errors.New("no such viewer")
	ErrExists         = errors.New("viewer already exists")
	ErrBadName        = viewtoken.ErrBadName
	ErrBadCredentials = errors.New("wrong viewer name or password")
	ErrLocked         = errors.New("viewer is locked after repeated failed logins (an administrator must run: uploadbox-receiver viewers unlock NAME)")
	// ErrBusy: the password-hashing queue is full; try again shortly.
	ErrBusy = errors.New("too many logins in progress")
)

var (
	bucket        = []byte("viewers")
	unknownBucket = "viewers.unknown"
	configBucket  = []byte("viewers.config")
	policyKey     = []byte("password_policy")
)

// record is what the database holds about a viewer.
type record struct {
	Name      string    `json:"name"`
	Hash      string    `json:"hash"`
	Created   time.Time `json:"created"`
	Changed   time.Time `json:"password_changed"`
	LastLogin time.Time `json:"last_login,omitzero"`
	// Rooms are the devices whose live view the viewer may ask for
	// through the receiver (rooms.go).
	Rooms []string `json:"rooms,omitempty"`
	// Role is RoleViewer, RoleTeacher or RoleAdmin (roles.go); empty in a
	// record from before roles: RoleViewer.
	Role string `json:"role,omitempty"`
	// Disabled is when an administrator disabled the account (zero:
	// enabled); TokensFrom, when set, refuses tokens issued before it
	// (accounts.go).
	Disabled   time.Time `json:"disabled,omitzero"`
	TokensFrom time.Time `json:"tokens_from,omitzero"`
	lockout.Record
}

// Viewer is what administrators see of an account: never the hash.
type Viewer struct {
	Name      string    `json:"name"`
	Created   time.Time `json:"created"`
	Locked    bool      `json:"locked"`
	LockedAt  time.Time `json:"locked_at,omitzero"`
	Failures  int       `json:"failures"` // within the current window, or that caused the lock
	LastLogin time.Time `json:"last_login,omitzero"`
	Rooms     []string  `json:"rooms"`
	Role      string    `json:"role"`
	// Disabled accounts cannot sign in and their tokens are refused.
	Disabled   bool      `json:"disabled"`
	DisabledAt time.Time `json:"disabled_at,omitzero"`
}

// Option configures a Registry.
type Option func(*Registry)

// WithHashParams sets the argon2id cost for new hashes (tests use a cheap one).
func WithHashParams(p Params) Option { return func(r *Registry) { r.params = p } }

// WithClock replaces time.Now.
func WithClock(now func() time.Time) Option { return func(r *Registry) { r.now = now } }

// WithFailures sends failed-login entries through f (an audit.Failures,
// which coalesces them per source) instead of appending each one.
func WithFailures(f FailureLog) Option { return func(r *Registry) { r.fails = f } }

// WithQueue bounds password hashing at login: running hashes at once and
// waiting more in line; a login beyond that gets ErrBusy (default 2 and 8).
func WithQueue(running, waiting int) Option {
	return func(r *Registry) { r.running, r.waiting = max(running, 1), max(waiting, 0) }
}

// AuditLog takes the registry's audit entries: the receiver's audit chain
// (an *audit.Log, or the chain the receivers share in PostgreSQL).
type AuditLog interface {
	Append(audit.Entry) (audit.Entry, error)
}

// FailureLog takes failed-authentication entries (audit.Failures).
type FailureLog interface {
	Record(audit.Entry) (wrote bool, err error)
}

// Registry keeps viewer accounts in the state store (kv.DB) the caller owns.
type Registry struct {
	db     kv.DB
	log    AuditLog
	now    func() time.Time
	params Params
	// slots bounds concurrent hashing: each one holds Params.Memory.
	slots chan struct{}
	// queue bounds the logins running or waiting for a slot.
	queue            chan struct{}
	running, waiting int
	fails            FailureLog
	unknown          *lockout.Unknown
	// dummy is a hash to spend the same time on unknown names as on known ones.
	dummy func() (string, error)
}

// New returns a registry over db, auditing to log.
func New(db kv.DB, log AuditLog, opts ...Option) (*Registry, error) {
	r := &Registry{db: db, log: log, now: time.Now, params: DefaultParams, running: 2, waiting: 8}
	for _, o := range opts {
		o(r)
	}
	r.slots = make(chan struct{}, r.running)
	r.queue = make(chan struct{}, r.running+r.waiting)
	if err := db.Update(func(tx kv.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucket); err != nil {
			return err
		}
		_, err := tx.CreateBucketIfNotExists(configBucket)
		return err
	}); err != nil {
		return nil, fmt.Errorf("viewer accounts: %w", err)
	}
	var err error
	if r.unknown, err = lockout.NewUnknown(db, unknownBucket, lockout.DefaultMaxUnknown); err != nil {
		return nil, err
	}
	r.dummy = sync.OnceValues(func() (string, error) { return hashPassword("not a password", r.params) })
	return r, nil
}

func (r *Registry) hash(password string) (string, error) {
	r.slots <- struct{}{}
	defer func() { <-r.slots }()
	return hashPassword(password, r.params)
}

func (r *Registry) check(password, encoded string) (bool, error) {
	r.slots <- struct{}{}
	defer func() { <-r.slots }()
	return checkPassword(password, encoded)
}

// checkLogin is check for a login: it waits in the bounded queue and
// returns ErrBusy when the queue is full.
func (r *Registry) checkLogin(password, encoded string) (bool, error) {
	select {
	case r.queue <- struct{}{}:
	default:
		return false, ErrBusy
	}
	defer func() { <-r.queue }()
	return r.check(password, encoded)
}

// checkDummy spends the work of a real check on a name that has no hash.
func (r *Registry) checkDummy(password string) error {
	h, err := r.dummy()
	if err != nil {
		return err
	}
	_, err = r.checkLogin(password, h)
	return err
}

// fail audits a failed attempt, coalesced per source when WithFailures is set.
func (r *Registry) fail(event, name, source, outcome, detail string) error {
	if r.fails == nil {
		return r.audit(event, name, source, outcome, detail)
	}
	if _, err := r.fails.Record(audit.Entry{Event: event, Identity: name, Source: source, Outcome: outcome, Detail: detail}); err != nil {
		return fmt.Errorf("audit %s of %s: %w", event, name, err)
	}
	return nil
}

func (r *Registry) audit(event, name, source, outcome, detail string) error {
	if r.log == nil {
		return nil
	}
	if _, err := r.log.Append(audit.Entry{Event: event, Identity: name, Source: source, Outcome: outcome, Detail: detail}); err != nil {
		return fmt.Errorf("audit %s of %s: %w", event, name, err)
	}
	return nil
}

func get(tx kv.Tx, name string) (*record, error) {
	v := tx.Bucket(bucket).Get([]byte(name))
	if v == nil {
		return nil, fmt.Errorf("%w: %s", ErrUnknownViewer, name)
	}
	var rec record
	if err := json.Unmarshal(v, &rec); err != nil {
		return nil, fmt.Errorf("viewer %s: damaged record: %w", name, err)
	}
	return &rec, nil
}

func put(tx kv.Tx, rec *record) error {
	v, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return tx.Bucket(bucket).Put([]byte(rec.Name), v)
}

// Policy returns the organisation's password policy (Medium if none was set).
func (r *Registry) Policy() (Policy, error) {
	p := Medium
	err := r.db.View(func(tx kv.Tx) error {
		if v := tx.Bucket(configBucket).Get(policyKey); v != nil {
			var err error
			p, err = ParsePolicy(string(v))
			return err
		}
		return nil
	})
	return p, err
}

// SetPolicy stores the password policy that Add and SetPassword apply.
// A change is audited; existing passwords stay valid until changed.
func (r *Registry) SetPolicy(p Policy) error {
	if _, err := ParsePolicy(string(p)); err != nil {
		return err
	}
	var old []byte
	err := r.db.Update(func(tx kv.Tx) error {
		b := tx.Bucket(configBucket)
		old = slices.Clone(b.Get(policyKey))
		return b.Put(policyKey, []byte(p))
	})
	if err != nil || string(old) == string(p) {
		return err
	}
	from := string(old)
	if from == "" {
		from = "unset"
	}
	return r.audit("viewer.policy", "", "local", "ok", "password policy "+from+" -> "+string(p))
}

// Add creates a viewer with password, which must meet the policy.
func (r *Registry) Add(name, password string) error {
	if !viewtoken.ValidName(name) {
		return fmt.Errorf("%w: %q", ErrBadName, name)
	}
	if err := r.checkPolicy(password); err != nil {
		return errors.Join(err, r.audit("viewer.add", name, "local", "failed", "password refused by the policy"))
	}
	h, err := r.hash(password)
	if err != nil {
		return err
	}
	now := r.now().UTC()
	var from time.Time
	err = r.db.Update(func(tx kv.Tx) error {
		if tx.Bucket(bucket).Get([]byte(name)) != nil {
			return fmt.Errorf("%w: %s", ErrExists, name)
		}
		// Failures recorded while the name had no account do not carry over.
		if _, err := r.unknown.Forget(tx, name); err != nil {
			return err
		}
		// Nor do the tokens of a removed account of this name.
		var err error
		if from, err = tokensFrom(tx, name); err != nil {
			return err
		}
		return put(tx, &record{Name: name, Hash: h, Created: now, Changed: now, TokensFrom: from})
	})
	outcome := "ok"
	if err != nil {
		outcome = "failed"
	} else {
		r.waitFor(from)
	}
	return errors.Join(err, r.audit("viewer.add", name, "local", outcome, ""))
}

func (r *Registry) checkPolicy(password string) error {
	p, err := r.Policy()
	if err != nil {
		return err
	}
	return p.Check(password)
}

// SetPassword replaces a viewer's password; it does not unlock the account.
func (r *Registry) SetPassword(name, password string) error {
	if err := r.checkPolicy(password); err != nil {
		return errors.Join(err, r.audit("viewer.passwd", name, "local", "failed", "password refused by the policy"))
	}
	h, err := r.hash(password)
	if err != nil {
		return err
	}
	return r.set(name, "viewer.passwd", func(rec *record) error {
		rec.Hash, rec.Changed = h, r.now().UTC()
		return nil
	})
}

// Unlock clears a locked viewer's failures. For a name without an
// account it clears the failures recorded for that name (unknown names
// lock like real ones, see Login).
func (r *Registry) Unlock(name string) error {
	unknown, err := r.unknown.ForgetUnlisted(r.db, bucket, name)
	if err != nil {
		return err
	}
	if unknown {
		return r.audit("viewer.unlock", name, "local", "ok", "no such viewer: cleared the failed logins recorded for this name")
	}
	return r.set(name, "viewer.unlock", func(rec *record) error {
		if !rec.Locked() {
			return fmt.Errorf("viewer %s is not locked", name)
		}
		rec.Clear()
		return nil
	})
}

func (r *Registry) set(name, event string, f func(*record) error) error {
	err := r.db.Update(func(tx kv.Tx) error {
		rec, err := get(tx, name)
		if err != nil {
			return err
		}
		if err := f(rec); err != nil {
			return err
		}
		return put(tx, rec)
	})
	outcome := "ok"
	if err != nil {
		outcome = "failed"
	}
	return errors.Join(err, r.audit(event, name, "local", outcome, ""))
}

// List returns every viewer, by name.
func (r *Registry) List() ([]Viewer, error) {
	out := []Viewer{}
	now := r.now()
	err := r.db.View(func(tx kv.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
			var rec record
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("viewer %s: damaged record: %w", k, err)
			}
			out = append(out, Viewer{Name: rec.Name, Created: rec.Created, Locked: rec.Locked(), LockedAt: rec.LockedAt, Failures: rec.Recent(now), LastLogin: rec.LastLogin, Rooms: append([]string{}, rec.Rooms...), Role: rec.role(),
				Disabled: !rec.Disabled.IsZero(), DisabledAt: rec.Disabled})
			return nil
		})
	})
	return out, err
}

// Login checks name and password from source (a remote address). It
// returns ErrBadCredentials for a wrong password and ErrLocked for a
// locked account, whatever the password; ErrDisabled for a disabled
// account given its right password (a wrong one is ErrBadCredentials, and
// counts, as for any account). An unknown name answers exactly
// like an existing one: the same password-hash work, and after
// MaxFailures failures it is locked too, until an administrator unlocks
// it. ErrBusy means the hashing queue is full. Every attempt is audited
// (failures through WithFailures, coalesced); an attempt that cannot be
// audited fails.
func (r *Registry) Login(name, password, source string) error {
	if !viewtoken.ValidName(name) || len(password) > 4*MaxPasswordLength {
		// No account can have such a name: nothing to tell apart.
		if err := r.checkDummy(password[:min(len(password), MaxPasswordLength)]); errors.Is(err, ErrBusy) {
			return errors.Join(ErrBusy, r.fail("viewer.login", "", source, "busy", "password-hashing queue full"))
		}
		return errors.Join(ErrBadCredentials, r.fail("viewer.login", "", source, "denied", "malformed name or password"))
	}
	var rec *record
	err := r.db.View(func(tx kv.Tx) error {
		var err error
		rec, err = get(tx, name)
		return err
	})
	known := err == nil
	if err != nil && !errors.Is(err, ErrUnknownViewer) {
		return err
	}
	// One hash check whatever the name and state (locked or not), so that
	// timing does not tell names apart either.
	var ok bool
	var cerr error
	if known {
		ok, cerr = r.checkLogin(password, rec.Hash)
	} else {
		cerr = r.checkDummy(password)
	}
	if errors.Is(cerr, ErrBusy) {
		return errors.Join(ErrBusy, r.fail("viewer.login", name, source, "busy", "password-hashing queue full"))
	}
	if !known {
		return r.failUnknown(name, source)
	}
	var outcome, detail string
	var result error
	var lockedNow bool
	err = r.db.Update(func(tx kv.Tx) error {
		// Set afresh on each run: kv.DB may run this function again.
		outcome, detail, result, lockedNow = "", "", nil, false
		rec, err := get(tx, name)
		if err != nil {
			return err
		}
		now := r.now().UTC()
		switch {
		case rec.Locked():
			outcome, detail, result = "locked", "account is locked", ErrLocked
			return nil
		case ok && cerr == nil && !rec.Disabled.IsZero():
			// Said only to whoever knows the password: a wrong one is
			// answered and counted as for any account.
			outcome, detail, result = "disabled", "account is disabled", ErrDisabled
			return nil
		case ok && cerr == nil:
			rec.Clear()
			rec.LastLogin = now
			outcome = "ok"
		default:
			outcome, detail, result = "denied", "wrong password", ErrBadCredentials
			if cerr != nil {
				detail = cerr.Error()
			}
			if rec.Fail(now) {
				lockedNow = true
				outcome, detail, result = "locked", fmt.Sprintf("wrong password; locked after %d failures within %s", len(rec.Failures), FailureWindow), ErrLocked
			}
		}
		return put(tx, rec)
	})
	if err != nil {
		return errors.Join(fmt.Errorf("login %s: %w", name, err), r.audit("viewer.login", name, source, "error", err.Error()))
	}
	var aerr error
	if result == nil || lockedNow {
		// Successes and the failure that locks an account are written in full.
		aerr = r.audit("viewer.login", name, source, outcome, strings.TrimSpace(detail))
	} else {
		aerr = r.fail("viewer.login", name, source, outcome, strings.TrimSpace(detail))
	}
	if result != nil {
		return errors.Join(result, aerr)
	}
	return aerr
}

// failUnknown counts a failed login for a name without an account.
func (r *Registry) failUnknown(name, source string) error {
	var locked bool
	err := r.db.Update(func(tx kv.Tx) error {
		if prev := r.unknown.Get(tx, name); prev.Locked() {
			locked = true
			return nil
		}
		rec, _, err := r.unknown.Fail(tx, name, r.now().UTC())
		locked = rec.Locked()
		return err
	})
	if err != nil {
		return errors.Join(fmt.Errorf("login %s: %w", name, err), r.audit("viewer.login", name, source, "error", err.Error()))
	}
	if locked {
		return errors.Join(ErrLocked, r.fail("viewer.login", name, source, "locked", "unknown viewer (locked like an account)"))
	}
	return errors.Join(ErrBadCredentials, r.fail("viewer.login", name, source, "denied", "unknown viewer"))
}
