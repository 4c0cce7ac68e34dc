package kv

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/internal/pgtest"
)

// opener gives two handles on one store: for PostgreSQL two receivers'
// connections to one database; for bbolt (one process only) the same handle
// twice.
type opener func(t *testing.T) (DB, DB)

func backends(parent *testing.T) map[string]opener {
	var pg *pgtest.Server // started on first use, for all of t's subtests
	return map[string]opener{
		"bolt": func(t *testing.T) (DB, DB) {
			db, err := OpenBolt(filepath.Join(t.TempDir(), "state.db"), time.Second)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			return db, db
		},
		"postgres": func(t *testing.T) (DB, DB) {
			if pg == nil {
				pg = pgtest.Start(parent)
			}
			url := pg.NewDB(t)
			a, err := OpenPostgres(context.Background(), url)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { a.Close() })
			b, err := OpenPostgres(context.Background(), url)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { b.Close() })
			return a, b
		},
	}
}

// TestConformance runs the same checks on both backends.
func TestConformance(t *testing.T) {
	for name, open := range backends(t) {
		t.Run(name, func(t *testing.T) {
			t.Run("buckets", func(t *testing.T) { testBuckets(t, open) })
			t.Run("values", func(t *testing.T) { testValues(t, open) })
			t.Run("order", func(t *testing.T) { testOrder(t, open) })
			t.Run("rollback", func(t *testing.T) { testRollback(t, open) })
			t.Run("counter", func(t *testing.T) { testCounter(t, open) })
			t.Run("exactly once", func(t *testing.T) { testExactlyOnce(t, open) })
		})
	}
}

func testBuckets(t *testing.T, open opener) {
	db, _ := open(t)
	err := db.View(func(tx Tx) error {
		if tx.Bucket([]byte("b")) != nil {
			return errors.New("a bucket never created is not nil")
		}
		if _, err := tx.CreateBucketIfNotExists([]byte("b")); !errors.Is(err, ErrReadOnly) {
			return fmt.Errorf("create in View: %v, want ErrReadOnly", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx Tx) error {
		_, err := tx.CreateBucketIfNotExists([]byte("b"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	err = db.View(func(tx Tx) error {
		b := tx.Bucket([]byte("b"))
		if b == nil {
			return errors.New("an empty bucket, once created, is nil")
		}
		if err := b.Put([]byte("k"), []byte("v")); !errors.Is(err, ErrReadOnly) {
			return fmt.Errorf("put in View: %v, want ErrReadOnly", err)
		}
		if b.KeyN() != 0 {
			return fmt.Errorf("KeyN of an empty bucket: %d", b.KeyN())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func testValues(t *testing.T, open opener) {
	db, other := open(t)
	if err := db.Update(func(tx Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte("v"))
		if err != nil {
			return err
		}
		for k, v := range map[string]string{"a": "1", "b": "", "c": "3"} {
			if err := b.Put([]byte(k), []byte(v)); err != nil {
				return err
			}
		}
		if err := b.Put([]byte("c"), []byte("three")); err != nil {
			return err
		}
		return b.Delete([]byte("a"))
	}); err != nil {
		t.Fatal(err)
	}
	// Read through the other handle: what one receiver committed, the
	// other sees.
	err := other.View(func(tx Tx) error {
		b := tx.Bucket([]byte("v"))
		if b == nil {
			return errors.New("bucket missing")
		}
		if v := b.Get([]byte("a")); v != nil {
			return fmt.Errorf("deleted key: %q", v)
		}
		if v := b.Get([]byte("b")); v == nil || len(v) != 0 {
			return fmt.Errorf("empty value: %#v, want non-nil and empty", v)
		}
		if v := b.Get([]byte("c")); string(v) != "three" {
			return fmt.Errorf("overwritten value: %q", v)
		}
		if v := b.Get([]byte("zz")); v != nil {
			return fmt.Errorf("missing key: %q", v)
		}
		if n := b.KeyN(); n != 2 {
			return fmt.Errorf("KeyN %d, want 2", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// testOrder: keys come back bytewise ordered, across more than one batch,
// and a cursor seeks to a prefix.
func testOrder(t *testing.T, open opener) {
	db, _ := open(t)
	var want [][]byte
	for i := 0; i < 1300; i++ {
		k := []byte(fmt.Sprintf("dev/%05d", i))
		want = append(want, k)
	}
	special := [][]byte{{0x00}, {0xff, 0x00}, {0x7f}, []byte("dev/"), []byte("dev0")}
	if err := db.Update(func(tx Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte("o"))
		if err != nil {
			return err
		}
		for i := len(want) - 1; i >= 0; i-- {
			if err := b.Put(want[i], want[i]); err != nil {
				return err
			}
		}
		for _, k := range special {
			if err := b.Put(k, k); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	err := db.View(func(tx Tx) error {
		b := tx.Bucket([]byte("o"))
		var got [][]byte
		if err := b.ForEach(func(k, v []byte) error {
			if !bytes.Equal(k, v) {
				return fmt.Errorf("key %q has value %q", k, v)
			}
			got = append(got, append([]byte(nil), k...))
			return nil
		}); err != nil {
			return err
		}
		if len(got) != len(want)+len(special) {
			return fmt.Errorf("ForEach gave %d keys, want %d", len(got), len(want)+len(special))
		}
		for i := 1; i < len(got); i++ {
			if bytes.Compare(got[i-1], got[i]) >= 0 {
				return fmt.Errorf("ForEach order: %q before %q", got[i-1], got[i])
			}
		}
		// A cursor from the prefix "dev/01" gives dev/01000..dev/01299.
		c := b.Cursor()
		n := 0
		prefix := []byte("dev/01")
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			if want := fmt.Sprintf("dev/%05d", 1000+n); string(k) != want {
				return fmt.Errorf("cursor step %d: %q, want %q", n, k, want)
			}
			n++
		}
		if n != 300 {
			return fmt.Errorf("cursor over prefix: %d keys, want 300", n)
		}
		if k, _ := c.First(); !bytes.Equal(k, []byte{0x00}) {
			return fmt.Errorf("First: %q", k)
		}
		if k, _ := c.Seek([]byte{0xff, 0x01}); k != nil {
			return fmt.Errorf("Seek past the end: %q", k)
		}
		// An error from fn stops ForEach and comes back.
		stop := errors.New("stop")
		calls := 0
		if err := b.ForEach(func(k, v []byte) error { calls++; return stop }); !errors.Is(err, stop) || calls != 1 {
			return fmt.Errorf("ForEach with an error: %v after %d calls", err, calls)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func testRollback(t *testing.T, open opener) {
	db, _ := open(t)
	boom := errors.New("boom")
	err := db.Update(func(tx Tx) error {
		b, err := tx.CreateBucketIfNotExists([]byte("r"))
		if err != nil {
			return err
		}
		if err := b.Put([]byte("k"), []byte("v")); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update returned %v, want fn's error", err)
	}
	if err := db.View(func(tx Tx) error {
		if tx.Bucket([]byte("r")) != nil {
			return errors.New("a rolled-back transaction's bucket exists")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// testCounter: increments from two handles, many at once, all counted (no
// lost update): the transactions are serializable across receivers.
func testCounter(t *testing.T, open opener) {
	a, b := open(t)
	key := []byte("n")
	const workers, each = 8, 15
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		db := a
		if w%2 == 1 {
			db = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				if err := db.Update(func(tx Tx) error {
					bk, err := tx.CreateBucketIfNotExists([]byte("c"))
					if err != nil {
						return err
					}
					var n uint64
					if v := bk.Get(key); v != nil {
						n = binary.BigEndian.Uint64(v)
					}
					return bk.Put(key, binary.BigEndian.AppendUint64(nil, n+1))
				}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var n uint64
	if err := a.View(func(tx Tx) error {
		n = binary.BigEndian.Uint64(tx.Bucket([]byte("c")).Get(key))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n != workers*each {
		t.Fatalf("counter %d after %d increments: updates were lost", n, workers*each)
	}
}

// testExactlyOnce: many commits of one segment key from two handles at
// once: exactly one finds it absent and stores it.
func testExactlyOnce(t *testing.T, open opener) {
	a, b := open(t)
	const tries = 12
	var (
		mu   sync.Mutex
		won  []int
		wg   sync.WaitGroup
		errs = make(chan error, tries)
	)
	start := make(chan struct{})
	for i := 0; i < tries; i++ {
		db := a
		if i%2 == 1 {
			db = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			var stored bool
			err := db.Update(func(tx Tx) error {
				stored = false // fn may run again: set the result afresh
				bk, err := tx.CreateBucketIfNotExists([]byte("segments"))
				if err != nil {
					return err
				}
				k := []byte("box/rec/000001")
				if bk.Get(k) != nil {
					return nil
				}
				stored = true
				return bk.Put(k, []byte(fmt.Sprint(i)))
			})
			if err != nil {
				errs <- err
				return
			}
			if stored {
				mu.Lock()
				won = append(won, i)
				mu.Unlock()
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if len(won) != 1 {
		t.Fatalf("%d commits stored the one key (%v), want exactly 1", len(won), won)
	}
	var v string
	if err := b.View(func(tx Tx) error {
		v = string(tx.Bucket([]byte("segments")).Get([]byte("box/rec/000001")))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if v != fmt.Sprint(won[0]) {
		t.Fatalf("stored value %q, but commit %d won", v, won[0])
	}
}

// TestPostgresMigrations: a second open finds the schema current; a
// database migrated by a newer receiver is refused with a clear message; a
// bad address is refused naming it, without its password.
func TestPostgresMigrations(t *testing.T) {
	url := pgtest.Start(t).NewDB(t)
	ctx := context.Background()
	p, err := OpenPostgres(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Pool().Exec(ctx, `INSERT INTO uploadbox_schema (version, name) VALUES ($1, 'future')`, SchemaVersion()+1); err != nil {
		t.Fatal(err)
	}
	p.Close()
	_, err = OpenPostgres(ctx, url)
	if err == nil || !strings.Contains(err.Error(), "newer than this receiver's") {
		t.Fatalf("open of a newer schema: %v", err)
	}
	_, err = OpenPostgres(ctx, "postgres://u:s3cret-pw@127.0.0.1:1/x?connect_timeout=2")
	if err == nil || strings.Contains(err.Error(), "s3cret-pw") || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Fatalf("open of an unreachable database: %v (must name it, without the password)", err)
	}
}
