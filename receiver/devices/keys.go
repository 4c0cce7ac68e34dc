package devices

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/uploadbox/uploadbox/receiver/kv"
)

// Key is one earlier key of a device, kept so that segments it signed
// before it was replaced are still accepted.
type Key struct {
	PublicKey []byte    `json:"public_key"`
	Enrolled  time.Time `json:"enrolled,omitzero"`
	Retired   time.Time `json:"retired"` // when a re-key replaced it
	// Compromised, if set, is when the key was revoked as compromised:
	// segments it signed that reach the receiver (commit) after this time
	// are refused for good.
	Compromised time.Time `json:"compromised,omitzero"`
}

// Cert is an earlier certificate of a device's current key, replaced by a
// renewal and still accepted until it expires.
type Cert struct {
	Serial   string    `json:"serial"`
	NotAfter time.Time `json:"not_after"`
}

// Errors of the key history.
var (
	// ErrKeyCompromised: the segment's key was revoked as compromised
	// before the segment reached the receiver.
	ErrKeyCompromised = errors.New("the device key that signed it was revoked as compromised")
	// ErrForeignKey: the key is not one this device holds or held.
	ErrForeignKey = errors.New("the key is not one of this device's keys")
	ErrActive     = errors.New("device is active: revoke it first (uploadbox-receiver devices revoke NAME)")
)

// KeyID is a short fingerprint of a device key for logs and listings:
// the first 16 hex digits of its SHA-256.
func KeyID(pub []byte) string {
	h := sha256.Sum256(pub)
	return hex.EncodeToString(h[:8])
}

// heldKey reports whether pub is the device's current key or one in its
// history.
func (d *Device) heldKey(pub ed25519.PublicKey) bool {
	if len(d.PublicKey) > 0 && pub.Equal(ed25519.PublicKey(d.PublicKey)) {
		return true
	}
	return slices.ContainsFunc(d.History, func(k Key) bool { return pub.Equal(ed25519.PublicKey(k.PublicKey)) })
}

// hasSerial reports whether serial is the current certificate of the
// device or an earlier one of the same key (renewed, not yet expired:
// the TLS layer refuses expired ones).
func (d *Device) hasSerial(serial string) bool {
	if d.CertSerial != "" && d.CertSerial == serial {
		return true
	}
	return slices.ContainsFunc(d.Renewed, func(c Cert) bool { return c.Serial == serial })
}

// HasSerial reports whether the certificate serial is one this device
// authenticates with now (its current or a renewed, unexpired one).
func (d *Device) HasSerial(serial string) bool { return d.hasSerial(serial) }

// CheckSigner decides whether a segment signed by pub, reaching the
// receiver at arrival, is accepted from this device: signed by its current
// key, or by an earlier key that was not revoked as compromised before
// arrival. The box's own times cannot be trusted once its key is
// compromised, so only the receiver's arrival time counts.
func (d *Device) CheckSigner(pub ed25519.PublicKey, arrival time.Time) error {
	check := func(compromised time.Time) error {
		if !compromised.IsZero() && !arrival.Before(compromised) {
			return fmt.Errorf("%w at %s", ErrKeyCompromised, compromised.UTC().Format(time.RFC3339))
		}
		return nil
	}
	if len(d.PublicKey) > 0 && pub.Equal(ed25519.PublicKey(d.PublicKey)) {
		return check(d.Compromised)
	}
	for _, k := range d.History {
		if pub.Equal(ed25519.PublicKey(k.PublicKey)) {
			return check(k.Compromised)
		}
	}
	return ErrForeignKey
}

// HoldsKey reports whether pub is the device's current key or one of its
// earlier keys (compromised or not).
func (d *Device) HoldsKey(pub ed25519.PublicKey) bool { return d.heldKey(pub) }

// RevokeCompromised revokes the device and marks its key compromised now:
// from this moment the receiver refuses every segment signed by that key
// (see CheckSigner). For a device that was re-keyed and has no current
// key yet, the key marked is the one it held last.
func (r *Registry) RevokeCompromised(name string) error {
	var detail string
	err := r.db.Update(func(tx kv.Tx) error {
		d, err := r.get(tx, name)
		if err != nil {
			return err
		}
		now := r.now().UTC()
		switch {
		case len(d.PublicKey) > 0:
			if d.Compromised.IsZero() {
				d.Compromised = now
			}
			detail = "key " + KeyID(d.PublicKey) + " compromised at " + d.Compromised.Format(time.RFC3339)
		case len(d.History) > 0:
			k := &d.History[len(d.History)-1]
			if k.Compromised.IsZero() {
				k.Compromised = now
			}
			detail = "key " + KeyID(k.PublicKey) + " compromised at " + k.Compromised.Format(time.RFC3339)
		default:
			return fmt.Errorf("device %s has no key yet (it never enrolled): nothing to mark compromised", name)
		}
		if d.State != Locked {
			d.State = Revoked
		} else {
			d.Before = Revoked
		}
		return put(tx, d)
	})
	return r.logged("device.revoke", name, detail, err)
}

// logged audits an administrator's change and returns err with any audit
// failure.
func (r *Registry) logged(event, name, detail string, err error) error {
	outcome := "ok"
	if err != nil {
		outcome, detail = "failed", strings.TrimSpace(detail+" "+err.Error())
	}
	return errors.Join(err, r.audit(event, name, "local", outcome, detail))
}

// Rekey lets the device enroll a new key under its name: the current key
// moves to the device's history (segments it signed are still accepted
// unless it is marked compromised), its certificates stop working at once,
// and a new one-time token is returned as from Add.
func (r *Registry) Rekey(name string) (token string, expiry time.Time, err error) {
	token, err = newToken(name)
	if err != nil {
		return "", time.Time{}, err
	}
	now := r.now().UTC()
	expiry = now.Add(TokenLifetime)
	var detail string
	err = r.db.Update(func(tx kv.Tx) error {
		detail = "" // built afresh on each run: kv.DB may run this again
		d, err := r.get(tx, name)
		if err != nil {
			return err
		}
		if d.State == Locked || d.Record.Locked() {
			return fmt.Errorf("%w", ErrLocked)
		}
		if len(d.PublicKey) > 0 {
			d.History = append(d.History, Key{PublicKey: d.PublicKey, Enrolled: d.Enrolled, Retired: now, Compromised: d.Compromised})
			detail = "key " + KeyID(d.PublicKey) + " kept in history; "
		}
		d.State, d.TokenHash, d.TokenExpiry = Pending, hashToken(token), expiry
		d.PublicKey, d.CertSerial, d.Renewed, d.Compromised = nil, "", nil, time.Time{}
		detail += "token expires " + expiry.Format(time.RFC3339)
		return put(tx, d)
	})
	if err := r.logged("device.rekey", name, detail, err); err != nil {
		return "", time.Time{}, err
	}
	return token, expiry, nil
}

// Renew records a new certificate of the device's current key (same key,
// new serial), asked for with the certificate old. The certificates it
// replaces keep working until they expire, so that connections and
// uploads under them go on; expired ones are dropped here. When old is an
// earlier certificate (two renewals raced), the current one is kept too,
// until the new one's expiry at the latest.
func (r *Registry) Renew(name string, old, renewed Cert, source string) error {
	oldSerial, newSerial := old.Serial, renewed.Serial
	err := r.db.Update(func(tx kv.Tx) error {
		d, err := r.get(tx, name)
		if err != nil {
			return err
		}
		if d.State != Active || !d.hasSerial(oldSerial) {
			return fmt.Errorf("%w: certificate serial %s is not one of its active certificates", ErrRevoked, oldSerial)
		}
		now := r.now()
		d.Renewed = slices.DeleteFunc(d.Renewed, func(c Cert) bool { return !now.Before(c.NotAfter) || c.Serial == oldSerial })
		d.Renewed = append(d.Renewed, Cert{Serial: oldSerial, NotAfter: old.NotAfter.UTC()})
		if oldSerial != d.CertSerial {
			d.Renewed = append(d.Renewed, Cert{Serial: d.CertSerial, NotAfter: renewed.NotAfter.UTC()})
		}
		d.CertSerial = newSerial
		return put(tx, d)
	})
	outcome, detail := "ok", "certificate serial "+newSerial+" replaces "+oldSerial
	if err != nil {
		outcome, detail = "failed", err.Error()
	}
	return errors.Join(err, r.audit("device.renew", name, source, outcome, detail))
}

var removedBucket = []byte("devices.removed")

// Remove deletes a device that is not active and frees its name for a new
// device (devices add). Its record, key history included, is kept in the
// database's devices.removed bucket for audit; segments its keys signed
// and that are already stored stay stored, and no key of a removed device
// is accepted again.
func (r *Registry) Remove(name string) error {
	var detail string
	err := r.db.Update(func(tx kv.Tx) error {
		d, err := r.get(tx, name)
		if err != nil {
			return err
		}
		if d.State == Active {
			return fmt.Errorf("%w (%s)", ErrActive, name)
		}
		archive, err := tx.CreateBucketIfNotExists(removedBucket)
		if err != nil {
			return err
		}
		d.TokenHash = nil
		v, err := json.Marshal(d)
		if err != nil {
			return err
		}
		if err := archive.Put([]byte(name+"@"+r.now().UTC().Format(time.RFC3339Nano)), v); err != nil {
			return err
		}
		var ids []string
		for _, k := range d.History {
			ids = append(ids, KeyID(k.PublicKey))
		}
		if len(d.PublicKey) > 0 {
			ids = append(ids, KeyID(d.PublicKey))
		}
		detail = "was " + string(d.State) + "; keys " + strings.Join(ids, ",") + " kept in devices.removed"
		return tx.Bucket(bucket).Delete([]byte(name))
	})
	return r.logged("device.remove", name, detail, err)
}
