package receiver

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/uploadbox/uploadbox/internal/atomicfile"
	"github.com/uploadbox/uploadbox/receiver/kv"
	"github.com/uploadbox/uploadbox/receiver/pki"
)

// MigratedSuffix is added to DBFile's name when Migrate has copied it into
// PostgreSQL: the file is kept, out of the way, never deleted.
const MigratedSuffix = ".migrated"

// MigrateReport says what Migrate copied.
type MigrateReport struct {
	Data     string         `json:"data"`
	Database string         `json:"database"` // without its password
	Buckets  map[string]int `json:"buckets"`  // keys copied per bucket
	Keys     int            `json:"keys"`
	KeptAs   string         `json:"kept_as"` // where the bbolt file now is
}

// Migrate moves the state of the receiver data directory data from its
// bbolt file into the empty PostgreSQL database at database: every bucket
// and key is copied in one transaction and counted back, then the data
// directory is marked as on PostgreSQL (DatabaseFile) and the bbolt file
// renamed with MigratedSuffix (kept, not deleted), so that serve --database
// starts on it and serve without --database refuses. The receiver must be
// stopped; a database that already holds a state is refused.
func Migrate(ctx context.Context, data, database string) (*MigrateReport, error) {
	if _, err := os.Stat(filepath.Join(data, pki.CACertFile)); err != nil {
		return nil, fmt.Errorf("migrate: %s is not a receiver data directory: %w", data, err)
	}
	if statePostgres(data) {
		return nil, fmt.Errorf("migrate: the state of %s is in PostgreSQL already (%s)", data, DatabaseFile)
	}
	boltPath := filepath.Join(data, DBFile)
	if _, err := os.Stat(boltPath); err != nil {
		return nil, fmt.Errorf("migrate: %s has no state to move: %w", data, err)
	}
	if addr, dir, err := unixPath(data, AdminSocket); err == nil {
		c, derr := net.DialTimeout("unix", addr, time.Second)
		dir.Close()
		if derr == nil {
			c.Close()
			return nil, fmt.Errorf("migrate: a receiver is running on %s: stop it first (systemctl stop uploadbox-receiver), then migrate and start it with --database", data)
		}
	}
	src, err := kv.OpenBolt(boltPath, time.Second)
	if err != nil {
		return nil, fmt.Errorf("migrate: %s: %w (is a receiver running on it?)", boltPath, err)
	}
	defer src.Close()
	dst, err := kv.OpenPostgres(ctx, database)
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	defer dst.Close()
	// One transaction copies everything: a large state takes its time.
	dst.TxTimeout = time.Hour
	rep := &MigrateReport{Data: data, Database: kv.Redact(database), Buckets: map[string]int{}}
	err = dst.Update(func(to kv.Tx) error {
		// Set afresh on each run: Update may run this again.
		clear(rep.Buckets)
		rep.Keys = 0
		if n, err := kv.BucketN(to); err != nil {
			return err
		} else if n > 0 {
			return fmt.Errorf("the database already holds a receiver state (%d buckets): migrate into an empty database", n)
		}
		return src.Buckets(func(from kv.Tx, name []byte) error {
			b, err := to.CreateBucketIfNotExists(name)
			if err != nil {
				return err
			}
			n := 0
			err = from.Bucket(name).ForEach(func(k, v []byte) error {
				n++
				return b.Put(k, v)
			})
			rep.Buckets[string(name)] = n
			rep.Keys += n
			return err
		})
	})
	if err != nil {
		return nil, fmt.Errorf("migrate %s to %s: %w", data, kv.Redact(database), err)
	}
	// Counted back from the database, before the bbolt file is moved.
	err = dst.View(func(tx kv.Tx) error {
		for name, want := range rep.Buckets {
			b := tx.Bucket([]byte(name))
			if b == nil || b.KeyN() != want {
				return fmt.Errorf("bucket %s: the database does not hold the %d keys copied", name, want)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("migrate %s to %s: check: %w", data, kv.Redact(database), err)
	}
	src.Close()
	if err := atomicfile.Write(filepath.Join(data, DatabaseFile), []byte(kv.Redact(database)+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	rep.KeptAs = boltPath + MigratedSuffix
	if err := os.Rename(boltPath, rep.KeptAs); err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	if err := atomicfile.SyncDir(data); err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	return rep, nil
}
