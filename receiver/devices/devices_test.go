package devices

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/receiver/internal/kvtest"
	"go.uber.org/goleak"

	"github.com/uploadbox/uploadbox/internal/audit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(kvtest.Wrap(m)) }

type fixture struct {
	reg   *Registry
	audit string
	now   time.Time
}

func newRegistry(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	db := kvtest.Open(t)
	log, err := audit.Open(filepath.Join(dir, "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	reg, err := New(db, log)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{reg: reg, audit: log.Path(), now: time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)}
	reg.now = func() time.Time { return f.now }
	return f
}

func key(t *testing.T) ed25519.PublicKey {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

func (f *fixture) auditText(t *testing.T) string {
	t.Helper()
	if _, err := audit.VerifyFile(f.audit); err != nil {
		t.Fatalf("audit chain: %v", err)
	}
	b, err := os.ReadFile(f.audit)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestEnrollOnce(t *testing.T) {
	f := newRegistry(t)
	tok, exp, err := f.reg.Add("room-101")
	if err != nil {
		t.Fatal(err)
	}
	if name, err := TokenName(tok); err != nil || name != "room-101" || len(tok) < len(tokenPrefix)+len("room-101.")+43 || !exp.Equal(f.now.Add(TokenLifetime)) {
		t.Fatalf("token %q expiry %v", tok, exp)
	}
	if _, _, err := f.reg.Add("room-101"); !errors.Is(err, ErrExists) {
		t.Fatalf("second add: %v", err)
	}
	pub := key(t)
	if err := f.reg.Enroll(tok, pub, "42", "10.0.0.7:5555"); err != nil {
		t.Fatal(err)
	}
	d, err := f.reg.Get("room-101")
	if err != nil || d.State != Active || !pub.Equal(ed25519.PublicKey(d.PublicKey)) || d.TokenHash != nil {
		t.Fatalf("after enroll: %+v %v", d, err)
	}
	if _, ok := f.reg.Authorized("42"); !ok {
		t.Fatal("enrolled certificate not authorized")
	}
	// The token is one-time.
	if err := f.reg.Enroll(tok, key(t), "43", "10.0.0.8:1"); !errors.Is(err, ErrTokenUsed) {
		t.Fatalf("token reuse: %v", err)
	}
	log := f.auditText(t)
	for _, want := range []string{`"event":"device.add"`, `"event":"device.enroll","identity":"room-101","source":"10.0.0.7:5555","outcome":"ok"`, `"source":"10.0.0.8:1","outcome":"denied"`} {
		if !strings.Contains(log, want) {
			t.Errorf("audit log lacks %s", want)
		}
	}
	if strings.Contains(log, tok) {
		t.Fatal("the token is in the audit log")
	}
}

func TestExpiredToken(t *testing.T) {
	f := newRegistry(t)
	tok, _, _ := f.reg.Add("room-102")
	f.now = f.now.Add(TokenLifetime + time.Second)
	if err := f.reg.Enroll(tok, key(t), "1", "x"); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("expired token: %v", err)
	}
	if !strings.Contains(f.auditText(t), "expired") {
		t.Fatal("expired attempt not audited")
	}
}

func TestLockoutAndUnlock(t *testing.T) {
	f := newRegistry(t)
	tok, _, _ := f.reg.Add("room-103")
	for i := range MaxFailures {
		err := f.reg.Enroll("ubx-enroll-room-103.wrong", key(t), "1", "203.0.113.9:1")
		if i < MaxFailures-1 && !errors.Is(err, ErrBadToken) {
			t.Fatalf("attempt %d: %v", i, err)
		}
		f.now = f.now.Add(time.Minute)
	}
	// Locked: even the right token is refused now.
	if err := f.reg.Enroll(tok, key(t), "1", "x"); !errors.Is(err, ErrLocked) {
		t.Fatalf("after %d failures: %v", MaxFailures, err)
	}
	if !strings.Contains(f.auditText(t), `"outcome":"locked"`) {
		t.Fatal("lock not audited")
	}
	if err := f.reg.Unlock("room-103"); err != nil {
		t.Fatal(err)
	}
	if err := f.reg.Enroll(tok, key(t), "7", "x"); err != nil {
		t.Fatalf("after unlock: %v", err)
	}
	if err := f.reg.Unlock("room-103"); err == nil {
		t.Fatal("unlocking an active device succeeded")
	}
}

func TestFailuresOutsideTheWindowDoNotLock(t *testing.T) {
	f := newRegistry(t)
	tok, _, _ := f.reg.Add("room-104")
	for range 2 * MaxFailures {
		f.reg.Enroll("ubx-enroll-room-104.wrong", key(t), "1", "x")
		f.now = f.now.Add(FailureWindow/time.Duration(MaxFailures-1) + time.Minute)
	}
	if err := f.reg.Enroll(tok, key(t), "1", "x"); err != nil {
		t.Fatalf("slow failures locked the device: %v", err)
	}
}

func TestRevoke(t *testing.T) {
	f := newRegistry(t)
	tok, _, _ := f.reg.Add("room-105")
	if err := f.reg.Enroll(tok, key(t), "99", "x"); err != nil {
		t.Fatal(err)
	}
	if err := f.reg.Revoke("room-105"); err != nil {
		t.Fatal(err)
	}
	if d, ok := f.reg.Authorized("99"); ok || d == nil || d.State != Revoked {
		t.Fatalf("revoked device still authorized: %+v", d)
	}
	if err := f.reg.Revoke("nope"); !errors.Is(err, ErrUnknownDevice) {
		t.Fatalf("revoke unknown: %v", err)
	}
	list, err := f.reg.List()
	if err != nil || len(list) != 1 || list[0].Name != "room-105" {
		t.Fatalf("list: %+v %v", list, err)
	}
}

func TestBadNamesAndKeys(t *testing.T) {
	f := newRegistry(t)
	for _, name := range []string{"", "../x", "a b", strings.Repeat("a", 65), "-lead"} {
		if _, _, err := f.reg.Add(name); !errors.Is(err, ErrBadName) {
			t.Errorf("Add(%q): %v", name, err)
		}
	}
	if err := f.reg.Enroll("ubx-enroll-ghost.abc", key(t), "1", "x"); !errors.Is(err, ErrUnknownDevice) {
		t.Fatalf("unknown device: %v", err)
	}
	for _, tok := range []string{"t", "ubx-enroll-", "ubx-enroll-.x", "ubx-enroll-../x.y", "ubx-enroll-noseparator"} {
		if err := f.reg.Enroll(tok, key(t), "1", "x"); !errors.Is(err, ErrBadToken) {
			t.Errorf("token %q: %v", tok, err)
		}
	}
	if err := f.reg.Enroll("ubx-enroll-ghost.abc", ed25519.PublicKey{1, 2}, "1", "x"); err == nil {
		t.Fatal("short key accepted")
	}
}

// TestKeyHistory: a re-key keeps the old key in the history, accepted
// unless it was revoked as compromised before the segment arrived; a
// renewed certificate keeps the old one working; remove frees the name.
func TestKeyHistory(t *testing.T) {
	f := newRegistry(t)
	tok, _, err := f.reg.Add("room-1")
	if err != nil {
		t.Fatal(err)
	}
	k1 := key(t)
	if err := f.reg.Enroll(tok, k1, "s1", "test"); err != nil {
		t.Fatal(err)
	}
	cert := func(serial string, d time.Duration) Cert { return Cert{Serial: serial, NotAfter: f.now.Add(d)} }
	if err := f.reg.Renew("room-1", cert("s1", time.Hour), cert("s2", 2*time.Hour), "test"); err != nil {
		t.Fatal(err)
	}
	for _, serial := range []string{"s1", "s2"} {
		if _, ok := f.reg.Authorized(serial); !ok {
			t.Fatalf("certificate %s not accepted after the renewal", serial)
		}
	}
	// Two renewals from s1 race: s2 and s3 both keep working.
	if err := f.reg.Renew("room-1", cert("s1", time.Hour), cert("s3", 2*time.Hour), "test"); err != nil {
		t.Fatal(err)
	}
	for _, serial := range []string{"s1", "s2", "s3"} {
		if _, ok := f.reg.Authorized(serial); !ok {
			t.Fatalf("certificate %s not accepted after racing renewals", serial)
		}
	}
	f.now = f.now.Add(90 * time.Minute)
	if err := f.reg.Renew("room-1", cert("s3", 30*time.Minute), cert("s4", 2*time.Hour), "test"); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.reg.Authorized("s1"); ok {
		t.Fatal("an expired renewed certificate is still listed")
	}
	if err := f.reg.Renew("room-1", cert("s1", 0), cert("s5", time.Hour), "test"); err == nil {
		t.Fatal("renewal from a certificate no longer listed succeeded")
	}
	if tok, _, err = f.reg.Rekey("room-1"); err != nil {
		t.Fatal(err)
	}
	for _, serial := range []string{"s2", "s3", "s4"} {
		if _, ok := f.reg.Authorized(serial); ok {
			t.Fatalf("certificate %s of the replaced key still works", serial)
		}
	}
	if err := f.reg.Enroll(tok, k1, "s5", "test"); !errors.Is(err, ErrKeyEnrolled) {
		t.Fatalf("re-key to the same key: %v, want ErrKeyEnrolled", err)
	}
	k2 := key(t)
	if err := f.reg.Enroll(tok, k2, "s5", "test"); err != nil {
		t.Fatal(err)
	}
	compromisedAt := f.now
	if err := f.reg.RevokeCompromised("room-1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.reg.Rekey("room-1"); err != nil {
		t.Fatal(err)
	}
	d, err := f.reg.Get("room-1")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		key     ed25519.PublicKey
		arrival time.Time
		want    error
	}{
		{"first key, later", k1, compromisedAt.Add(time.Hour), nil},
		{"compromised key, before", k2, compromisedAt.Add(-time.Second), nil},
		{"compromised key, at", k2, compromisedAt, ErrKeyCompromised},
		{"compromised key, after", k2, compromisedAt.Add(time.Second), ErrKeyCompromised},
		{"another key", key(t), compromisedAt, ErrForeignKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := d.CheckSigner(tc.key, tc.arrival); !errors.Is(err, tc.want) {
				t.Fatalf("CheckSigner: %v, want %v", err, tc.want)
			}
		})
	}
	if err := f.reg.Remove("room-1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.reg.Add("room-1"); err != nil {
		t.Fatalf("add after remove: %v", err)
	}
	text := f.auditText(t)
	for _, ev := range []string{"device.renew", "device.rekey", "device.remove"} {
		if !strings.Contains(text, ev) {
			t.Errorf("audit log has no %s", ev)
		}
	}
}

// Authorized skips the records whose JSON lacks a decimal serial before it
// decodes them: it still finds the current and the renewed certificate of
// each device, and no device by a serial that is only part of another's.
func TestAuthorizedAmongMany(t *testing.T) {
	f := newRegistry(t)
	serials := map[string]string{"room-a": "12", "room-b": "123", "room-c": "-123", "room-d": "91234"}
	for name, serial := range serials {
		tok, _, err := f.reg.Add(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.reg.Enroll(tok, key(t), serial, "test"); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.reg.Renew("room-b", Cert{Serial: "123", NotAfter: f.now.Add(time.Hour)}, Cert{Serial: "4567", NotAfter: f.now.Add(2 * time.Hour)}, "test"); err != nil {
		t.Fatal(err)
	}
	serials["room-b renewed"] = "4567"
	for name, serial := range serials {
		d, ok := f.reg.Authorized(serial)
		if !ok || d.Name != strings.TrimSuffix(name, " renewed") {
			t.Errorf("serial %s: %v %v, want %s", serial, d, ok, name)
		}
	}
	for _, serial := range []string{"1", "23", "1234", "456", "-12", ""} {
		if d, ok := f.reg.Authorized(serial); ok || d != nil {
			t.Errorf("serial %q found %v", serial, d.Name)
		}
	}
	// Each serial was found once, so its device is remembered; the record
	// as it is now decides.
	if err := f.reg.Revoke("room-a"); err != nil {
		t.Fatal(err)
	}
	if d, ok := f.reg.Authorized("12"); ok || d == nil || d.State != Revoked {
		t.Errorf("revoked device's serial: %+v %v", d, ok)
	}
	if err := f.reg.Remove("room-a"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.reg.Rekey("room-b"); err != nil {
		t.Fatal(err)
	}
	for _, serial := range []string{"12", "123", "4567"} {
		if d, ok := f.reg.Authorized(serial); ok || d != nil {
			t.Errorf("serial %s of a removed or re-keyed device found: %+v", serial, d)
		}
	}
	if d, ok := f.reg.Authorized("91234"); !ok || d.Name != "room-d" {
		t.Errorf("serial 91234: %+v %v", d, ok)
	}
}
