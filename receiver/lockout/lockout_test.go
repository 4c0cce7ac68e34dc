package lockout

import (
	"os"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/receiver/internal/kvtest"
	"github.com/uploadbox/uploadbox/receiver/kv"
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

func TestMain(m *testing.M) { os.Exit(kvtest.Wrap(m).Run()) }

func TestUnknown(t *testing.T) {
	db := kvtest.Open(t)
	u, err := NewUnknown(db, "unknown", 3)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	fail := func(name string) (locked bool) {
		t.Helper()
		if err := db.Update(func(tx kv.Tx) error {
			_, locked, err = u.Fail(tx, name, now)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return locked
	}
	get := func(name string) (r Record) {
		db.View(func(tx kv.Tx) error { r = u.Get(tx, name); return nil })
		return r
	}
	for i := range MaxFailures {
		if locked := fail("ghost"); locked != (i == MaxFailures-1) {
			t.Fatalf("failure %d: locked %v", i+1, locked)
		}
	}
	if r := get("ghost"); !r.Locked() {
		t.Fatal("not locked after MaxFailures")
	}
	// Full (3 records): the one whose failures left the window goes first,
	// then unlocked ones before the locked one.
	fail("old")
	now = now.Add(Window + time.Minute)
	fail("recent")
	fail("new")
	if r := get("old"); len(r.Failures) != 0 {
		t.Fatal("the stale record was kept")
	}
	fail("newer")
	if r := get("ghost"); !r.Locked() {
		t.Fatal("a locked record went before unlocked ones")
	}
	var forgot bool
	db.Update(func(tx kv.Tx) error { forgot, err = u.Forget(tx, "ghost"); return err })
	if r := get("ghost"); !forgot || r.Locked() {
		t.Fatal("Forget did not clear the lock")
	}
}

func TestForgetUnlisted(t *testing.T) {
	db := kvtest.Open(t)
	accounts := []byte("accounts")
	u, err := NewUnknown(db, "unknown", 10)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := db.Update(func(tx kv.Tx) error {
		b, err := tx.CreateBucketIfNotExists(accounts)
		if err != nil {
			return err
		}
		if err := b.Put([]byte("anna"), []byte("{}")); err != nil {
			return err
		}
		for _, n := range []string{"anna", "ghost"} {
			if _, _, err := u.Fail(tx, n, now); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// An account's name is not forgotten here: its own record is unlocked.
	if forgot, err := u.ForgetUnlisted(db, accounts, "anna"); err != nil || forgot {
		t.Errorf("ForgetUnlisted(anna, an account) = %v, %v; want false", forgot, err)
	}
	if forgot, err := u.ForgetUnlisted(db, accounts, "ghost"); err != nil || !forgot {
		t.Errorf("ForgetUnlisted(ghost) = %v, %v; want true", forgot, err)
	}
	if forgot, _ := u.ForgetUnlisted(db, accounts, "ghost"); forgot {
		t.Error("ForgetUnlisted(ghost) twice forgot twice")
	}
	db.View(func(tx kv.Tx) error {
		anna, ghost := u.Get(tx, "anna"), u.Get(tx, "ghost")
		if anna.Recent(now) != 1 || ghost.Recent(now) != 0 {
			t.Errorf("records after: anna %+v, ghost %+v", anna, ghost)
		}
		return nil
	})
}
