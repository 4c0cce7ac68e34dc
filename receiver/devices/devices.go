// Package devices is the receiver's registry of boxes: one-time enrollment
// tokens, enrolled device keys and certificate serials, revocation, and the
// lockout of a device name after repeated failed enrollment attempts.
// Every attempt is written to the audit log.
package devices

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/receiver/kv"
	"github.com/uploadbox/uploadbox/receiver/lockout"
)

// State of a device record.
type State string

// The states. A pending device has a token and no key yet.
const (
	Pending State = "pending"
	Active  State = "active"
	Revoked State = "revoked"
	Locked  State = "locked"
)

// Policy constants.
const (
	TokenLifetime = 24 * time.Hour
	// MaxFailures failed attempts within FailureWindow lock the device
	// name until an administrator unlocks it (the receiver's one rule).
	MaxFailures   = lockout.MaxFailures
	FailureWindow = lockout.Window
	tokenPrefix   = "ubx-enroll-"
	tokenBytes    = 32
)

// Errors callers branch on.
var (
	ErrUnknownDevice = errors.New("no such device")
	ErrExists        = errors.New("device already exists")
	ErrBadToken      = errors.New("enrollment token is wrong")
	ErrTokenExpired  = errors.New("enrollment token has expired")
	ErrTokenUsed     = errors.New("enrollment token was already used")
	ErrLocked        = errors.New("device is locked after repeated failures (an administrator must run: uploadbox-receiver devices unlock NAME)")
	ErrRevoked       = errors.New("device is revoked")
	ErrBadName       = errors.New("device names are 1-64 characters of [A-Za-z0-9._-]")
	ErrKeyEnrolled   = errors.New("this device key is already enrolled under another name: enroll with a new key (a new --state directory)")
)

var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// Device is one registry record.
type Device struct {
	Name        string    `json:"name"`
	State       State     `json:"state"`
	TokenHash   []byte    `json:"token_hash,omitempty"`
	TokenExpiry time.Time `json:"token_expiry,omitzero"`
	PublicKey   []byte    `json:"public_key,omitempty"` // Ed25519, the device id in segment headers
	CertSerial  string    `json:"cert_serial,omitempty"`
	Created     time.Time `json:"created"`
	Enrolled    time.Time `json:"enrolled,omitzero"`
	lockout.Record
	Before State `json:"before,omitempty"` // state to return to on unlock
	// Compromised is when the current key was revoked as compromised
	// (revoke --compromised); zero otherwise.
	Compromised time.Time `json:"compromised,omitzero"`
	// Renewed are the earlier certificates of the current key, still
	// accepted until they expire (keys.go).
	Renewed []Cert `json:"renewed,omitempty"`
	// History holds the device's earlier keys, oldest first (keys.go).
	History []Key `json:"history,omitempty"`
}

var bucket = []byte("devices")

// Registry keeps devices in the state store (kv.DB) the caller owns.
type Registry struct {
	db      kv.DB
	log     AuditLog
	now     func() time.Time
	fails   FailureLog
	unknown *lockout.Unknown

	// serials remembers which device a certificate serial was last found
	// on (at most maxSerials), so that Authorized reads one record, not
	// all; the record read decides, never the remembered name.
	serialsMu sync.Mutex
	serials   map[string]string
}

// maxSerials bounds Registry.serials; past it the map starts afresh.
const maxSerials = 1 << 14

// AuditLog takes the registry's audit entries: the receiver's audit chain
// (an *audit.Log, or the chain the receivers share in PostgreSQL).
type AuditLog interface {
	Append(audit.Entry) (audit.Entry, error)
}

// FailureLog takes failed-authentication entries (audit.Failures).
type FailureLog interface {
	Record(audit.Entry) (wrote bool, err error)
}

// Option configures a Registry.
type Option func(*Registry)

// WithFailures sends failed-enrollment entries through f (an
// audit.Failures, which coalesces them per source) instead of appending
// each one.
func WithFailures(f FailureLog) Option { return func(r *Registry) { r.fails = f } }

// New returns a registry over db, auditing to log.
func New(db kv.DB, log AuditLog, opts ...Option) (*Registry, error) {
	if err := db.Update(func(tx kv.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucket)
		return err
	}); err != nil {
		return nil, fmt.Errorf("device registry: %w", err)
	}
	r := &Registry{db: db, log: log, now: time.Now}
	for _, o := range opts {
		o(r)
	}
	var err error
	if r.unknown, err = lockout.NewUnknown(db, "devices.unknown", lockout.DefaultMaxUnknown); err != nil {
		return nil, err
	}
	return r, nil
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

func hashToken(tok string) []byte {
	h := sha256.Sum256([]byte(tok))
	return h[:]
}

func (r *Registry) get(tx kv.Tx, name string) (*Device, error) {
	v := tx.Bucket(bucket).Get([]byte(name))
	if v == nil {
		return nil, fmt.Errorf("%w: %s", ErrUnknownDevice, name)
	}
	var d Device
	if err := json.Unmarshal(v, &d); err != nil {
		return nil, fmt.Errorf("device %s: damaged record: %w", name, err)
	}
	return &d, nil
}

func put(tx kv.Tx, d *Device) error {
	v, err := json.Marshal(d)
	if err != nil {
		return err
	}
	return tx.Bucket(bucket).Put([]byte(d.Name), v)
}

// audit records an attempt. A failure to write the audit log is returned
// to the caller: an attempt that cannot be audited is reported as failed.
func (r *Registry) audit(event, name, source, outcome, detail string) error {
	if r.log == nil {
		return nil
	}
	if _, err := r.log.Append(audit.Entry{Event: event, Identity: name, Source: source, Outcome: outcome, Detail: detail}); err != nil {
		return fmt.Errorf("audit %s of %s: %w", event, name, err)
	}
	return nil
}

// Add creates a pending device and returns its one-time token, valid for
// TokenLifetime. Only its hash is stored.
func (r *Registry) Add(name string) (token string, expiry time.Time, err error) {
	if !validName.MatchString(name) {
		return "", time.Time{}, fmt.Errorf("%w: %q", ErrBadName, name)
	}
	token, err = newToken(name)
	if err != nil {
		return "", time.Time{}, err
	}
	now := r.now().UTC()
	expiry = now.Add(TokenLifetime)
	err = r.db.Update(func(tx kv.Tx) error {
		if tx.Bucket(bucket).Get([]byte(name)) != nil {
			return fmt.Errorf("%w: %s", ErrExists, name)
		}
		// Failures recorded while the name had no device do not carry over.
		if _, err := r.unknown.Forget(tx, name); err != nil {
			return err
		}
		return put(tx, &Device{Name: name, State: Pending, TokenHash: hashToken(token), TokenExpiry: expiry, Created: now})
	})
	if err != nil {
		return "", time.Time{}, err
	}
	if err := r.audit("device.add", name, "local", "ok", "token expires "+expiry.Format(time.RFC3339)); err != nil {
		return "", time.Time{}, err
	}
	return token, expiry, nil
}

// newToken makes a one-time enrollment token for name. The token names
// its device, so a box enrolls with the token alone and failed attempts
// count against (and can lock) that device name.
func newToken(name string) (string, error) {
	raw := make([]byte, tokenBytes)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	return tokenPrefix + name + "." + base64.RawURLEncoding.EncodeToString(raw), nil
}

// TokenName returns the device name a token was made for.
func TokenName(token string) (string, error) {
	rest, ok := strings.CutPrefix(token, tokenPrefix)
	i := strings.LastIndexByte(rest, '.')
	if !ok || i <= 0 || !validName.MatchString(rest[:i]) {
		return "", fmt.Errorf("%w: not an uploadbox enrollment token (ubx-enroll-NAME.SECRET)", ErrBadToken)
	}
	return rest[:i], nil
}

// Enroll redeems a token for the device key pub and records the serial of
// the certificate the caller will issue. Wrong tokens count as failures
// of the device they name; MaxFailures within FailureWindow lock it. A
// name without a device, and a device that is already enrolled or
// revoked, fail and lock the same way, so that an outsider cannot tell
// which names exist; the lock of an active device stops only enrollment
// under its name, never the device itself. A device key enrolled under
// another name is refused with ErrKeyEnrolled.
func (r *Registry) Enroll(token string, pub ed25519.PublicKey, certSerial, source string) error {
	if len(pub) != ed25519.PublicKeySize {
		return errors.New("enroll: device key must be an Ed25519 public key")
	}
	name, err := TokenName(token)
	if err != nil {
		return errors.Join(err, r.fail("device.enroll", "", source, "denied", "malformed token"))
	}
	var outcome, detail string
	var result error
	var lockedNow bool
	err = r.db.Update(func(tx kv.Tx) error {
		// Set afresh on each run: kv.DB may run this function again.
		outcome, detail, result, lockedNow = "", "", nil, false
		now := r.now().UTC()
		d, err := r.get(tx, name)
		if errors.Is(err, ErrUnknownDevice) {
			if prev := r.unknown.Get(tx, name); prev.Locked() {
				outcome, result = "locked", ErrLocked
				return nil
			}
			outcome, result = "denied", ErrUnknownDevice
			_, lockedNow, err = r.unknown.Fail(tx, name, now)
			if lockedNow {
				outcome, result = "locked", fmt.Errorf("%w (no such device)", ErrLocked)
			}
			return err
		}
		if err != nil {
			return err
		}
		if d.State == Locked || d.Record.Locked() {
			outcome, result = "locked", ErrLocked
			return nil
		}
		if d.State != Pending || subtle.ConstantTimeCompare(d.TokenHash, hashToken(token)) != 1 {
			outcome, result = "denied", ErrBadToken
			switch d.State {
			case Active:
				result = ErrTokenUsed
			case Revoked:
				result = ErrRevoked
			}
			if d.Fail(now) {
				lockedNow = true
				outcome, detail = "locked", fmt.Sprintf("%s; %d failures within %s", result, len(d.Failures), FailureWindow)
				result = ErrLocked
				if d.State == Pending {
					d.Before, d.State = d.State, Locked
				}
			}
			return put(tx, d)
		}
		if now.After(d.TokenExpiry) {
			outcome, result = "denied", ErrTokenExpired
			return nil
		}
		if other := keyOwner(tx, pub); other != "" {
			// Also a key this device held before: a re-key needs a new key.
			outcome, result = "denied", fmt.Errorf("%w (%s)", ErrKeyEnrolled, other)
			return nil
		}
		d.State, d.TokenHash, d.PublicKey, d.CertSerial, d.Enrolled, d.Failures = Active, nil, pub, certSerial, now, nil
		d.Compromised, d.Renewed = time.Time{}, nil
		outcome, detail = "ok", "certificate serial "+certSerial
		return put(tx, d)
	})
	if err != nil {
		return fmt.Errorf("enroll %s: %w", name, err)
	}
	if result != nil {
		detail = strings.TrimSpace(detail + " " + result.Error())
	}
	var aerr error
	if result == nil || lockedNow || errors.Is(result, ErrKeyEnrolled) {
		// Successes, locks and key conflicts (which need a valid token) in full.
		aerr = r.audit("device.enroll", name, source, outcome, detail)
	} else {
		aerr = r.fail("device.enroll", name, source, outcome, detail)
	}
	if result != nil {
		return errors.Join(fmt.Errorf("enroll %s: %w", name, result), aerr)
	}
	return aerr
}

// keyOwner returns the name of the device enrolled with pub now or
// before (its key history), if any.
func keyOwner(tx kv.Tx, pub ed25519.PublicKey) string {
	var owner string
	tx.Bucket(bucket).ForEach(func(k, v []byte) error {
		var d Device
		if json.Unmarshal(v, &d) == nil && d.heldKey(pub) {
			owner = string(k)
		}
		return nil
	})
	return owner
}

// Revoke marks the device revoked; its certificate is refused from then on.
func (r *Registry) Revoke(name string) error {
	return r.set(name, "device.revoke", func(d *Device) error {
		d.State = Revoked
		return nil
	})
}

// Unlock returns a locked device to the state it had and clears its
// failures; for an active or revoked device it unlocks enrollment under
// its name, and for a name without a device it clears the failures
// recorded for that name.
func (r *Registry) Unlock(name string) error {
	unknown, err := r.unknown.ForgetUnlisted(r.db, bucket, name)
	if err != nil {
		return err
	}
	if unknown {
		return r.audit("device.unlock", name, "local", "ok", "no such device: cleared the failed enrollments recorded for this name")
	}
	return r.set(name, "device.unlock", func(d *Device) error {
		switch {
		case d.State == Locked:
			d.State, d.Before = d.Before, ""
		case !d.Record.Locked():
			return fmt.Errorf("device %s is %s, not locked", name, d.State)
		}
		d.Clear()
		return nil
	})
}

func (r *Registry) set(name, event string, f func(*Device) error) error {
	err := r.db.Update(func(tx kv.Tx) error {
		d, err := r.get(tx, name)
		if err != nil {
			return err
		}
		if err := f(d); err != nil {
			return err
		}
		return put(tx, d)
	})
	outcome := "ok"
	if err != nil {
		outcome = "failed"
	}
	return errors.Join(err, r.audit(event, name, "local", outcome, ""))
}

// Get returns one device.
func (r *Registry) Get(name string) (*Device, error) {
	var d *Device
	err := r.db.View(func(tx kv.Tx) error {
		var err error
		d, err = r.get(tx, name)
		return err
	})
	return d, err
}

// List returns every device, by name.
func (r *Registry) List() ([]Device, error) {
	var out []Device
	err := r.db.View(func(tx kv.Tx) error {
		return tx.Bucket(bucket).ForEach(func(k, v []byte) error {
			var d Device
			if err := json.Unmarshal(v, &d); err != nil {
				return fmt.Errorf("device %s: damaged record: %w", k, err)
			}
			out = append(out, d)
			return nil
		})
	})
	return out, err
}

// Authorized reports whether a presented device certificate (by serial)
// belongs to an active device, for the TLS layer and request handlers.
//
// Every request of every box asks, so it first reads the record of the
// device the serial was last found on, and only when that record no
// longer holds the serial looks through all of them, skipping before it
// decodes them the records that cannot hold the serial: a decimal serial
// is written verbatim between quotes in a record's JSON.
func (r *Registry) Authorized(certSerial string) (*Device, bool) {
	r.serialsMu.Lock()
	name, ok := r.serials[certSerial]
	r.serialsMu.Unlock()
	if ok {
		if d, err := r.Get(name); err == nil && d.hasSerial(certSerial) {
			return d, d.State == Active
		}
	}
	var found *Device
	needle := serialNeedle(certSerial)
	r.db.View(func(tx kv.Tx) error {
		return tx.Bucket(bucket).ForEach(func(_, v []byte) error {
			if needle != nil && !bytes.Contains(v, needle) {
				return nil
			}
			var d Device
			if json.Unmarshal(v, &d) == nil && d.hasSerial(certSerial) {
				found = &d
			}
			return nil
		})
	})
	if found != nil {
		r.serialsMu.Lock()
		if r.serials == nil || len(r.serials) >= maxSerials {
			r.serials = map[string]string{}
		}
		r.serials[certSerial] = found.Name
		r.serialsMu.Unlock()
	}
	return found, found != nil && found.State == Active
}

// serialNeedle is the quoted serial as it appears in a record's JSON, or
// nil when the serial is not a plain decimal number (then every record is
// decoded).
func serialNeedle(serial string) []byte {
	if serial == "" || strings.Trim(serial, "-0123456789") != "" {
		return nil
	}
	return []byte(`"` + serial + `"`)
}
