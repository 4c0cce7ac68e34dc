package receiver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/uploadbox/uploadbox/internal/atomicfile"
	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/receiver/kv"
	"github.com/uploadbox/uploadbox/receiver/pgaudit"
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
	// Audit is the file audit chain copied into the database (nil: the
	// directory had none).
	Audit *MigratedAudit `json:"audit,omitempty"`
}

// MigratedAudit says what Migrate copied of the audit chain.
type MigratedAudit struct {
	Entries     int    `json:"entries"`
	First       uint64 `json:"first"`
	Last        uint64 `json:"last"`
	Checkpoints int    `json:"checkpoints"`
	KeptAs      string `json:"kept_as"` // where the audit file now is
}

// Migrate moves the state of the receiver data directory data from its
// bbolt file into the empty PostgreSQL database at database: the audit
// chain (DATA/AuditFile, verified first, with its checkpoints) is copied
// into the shared chain's tables keeping every entry's hash, so the
// receivers continue it there; every bucket and key is copied in one
// transaction and counted back; then the data directory is marked as on PostgreSQL (DatabaseFile) and the bbolt file
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
	if err := dst.View(func(tx kv.Tx) error {
		if n, err := kv.BucketN(tx); err != nil {
			return err
		} else if n > 0 {
			return fmt.Errorf("the database already holds a receiver state (%d buckets): migrate into an empty database", n)
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("migrate %s to %s: %w", data, kv.Redact(database), err)
	}
	// The audit chain first: copying it again (a migration run again
	// after a failure below) changes nothing.
	if rep.Audit, err = migrateAudit(data, dst); err != nil {
		return nil, fmt.Errorf("migrate %s to %s: %w", data, kv.Redact(database), err)
	}
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
	if rep.Audit != nil {
		// Kept, out of the way: nothing appends to the file any more.
		path := filepath.Join(data, AuditFile)
		rep.Audit.KeptAs = path + MigratedSuffix
		if err := os.Rename(path, rep.Audit.KeptAs); err != nil {
			return nil, fmt.Errorf("migrate: %w", err)
		}
		cps := audit.CheckpointPath(path)
		if err := os.Rename(cps, cps+MigratedSuffix); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("migrate: %w", err)
		}
	}
	if err := atomicfile.SyncDir(data); err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	return rep, nil
}

// migrateAudit copies the audit chain of data into dst's shared chain,
// keeping every entry and its hash, once it verified (with its
// checkpoints, by the receipt key): a broken chain is refused, not
// copied. nil: data has no audit file.
func migrateAudit(data string, dst *kv.Postgres) (*MigratedAudit, error) {
	path := filepath.Join(data, AuditFile)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	rep, err := VerifyAudit(data, "")
	if err != nil {
		return nil, fmt.Errorf("the audit log %s does not verify, so it is not copied (nothing was changed): %w", path, err)
	}
	es, err := audit.List(path, audit.Filter{})
	if err != nil {
		return nil, err
	}
	cps, err := audit.ReadCheckpoints(audit.CheckpointPath(path))
	if err != nil {
		return nil, err
	}
	if _, err := pgaudit.New(dst.Pool(), "").Import(es, cps); err != nil {
		return nil, fmt.Errorf("audit log %s: %w", path, err)
	}
	return &MigratedAudit{Entries: rep.Entries, First: rep.First, Last: rep.Last, Checkpoints: len(cps)}, nil
}
