package kv

import (
	"fmt"
	"io"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Bolt is the embedded store: one bbolt file, one process. bbolt runs one
// writer at a time, which makes every Update serializable, and never retries.
type Bolt struct{ db *bolt.DB }

// OpenBolt opens (creating) the bbolt file at path, 0600. A file another
// process holds open is refused after timeout.
func OpenBolt(path string, timeout time.Duration) (*Bolt, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout})
	if err != nil {
		return nil, err
	}
	return &Bolt{db: db}, nil
}

// WrapBolt uses an already open bbolt database.
func WrapBolt(db *bolt.DB) *Bolt { return &Bolt{db: db} }

func (b *Bolt) Update(fn func(Tx) error) error {
	return b.db.Update(func(tx *bolt.Tx) error { return fn(boltTx{tx}) })
}

func (b *Bolt) View(fn func(Tx) error) error {
	return b.db.View(func(tx *bolt.Tx) error { return fn(boltTx{tx}) })
}

func (b *Bolt) Close() error { return b.db.Close() }

// WriteTo writes a consistent copy of the whole database file (a backup)
// from inside one read transaction.
func (b *Bolt) WriteTo(w io.Writer) (int64, error) {
	var n int64
	err := b.db.View(func(tx *bolt.Tx) error {
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	return n, err
}

// Path is the database file.
func (b *Bolt) Path() string { return b.db.Path() }

type boltTx struct{ tx *bolt.Tx }

func (t boltTx) Bucket(name []byte) Bucket {
	b := t.tx.Bucket(name)
	if b == nil {
		return nil
	}
	return boltBucket{b}
}

func (t boltTx) CreateBucketIfNotExists(name []byte) (Bucket, error) {
	if !t.tx.Writable() {
		return nil, ErrReadOnly
	}
	b, err := t.tx.CreateBucketIfNotExists(name)
	if err != nil {
		return nil, err
	}
	return boltBucket{b}, nil
}

type boltBucket struct{ b *bolt.Bucket }

func (b boltBucket) Get(key []byte) []byte { return b.b.Get(key) }

func (b boltBucket) Put(key, value []byte) error {
	if !b.b.Writable() {
		return ErrReadOnly
	}
	return b.b.Put(key, value)
}

func (b boltBucket) Delete(key []byte) error {
	if !b.b.Writable() {
		return ErrReadOnly
	}
	return b.b.Delete(key)
}

func (b boltBucket) ForEach(fn func(k, v []byte) error) error { return b.b.ForEach(fn) }
func (b boltBucket) Cursor() Cursor                           { return b.b.Cursor() }
func (b boltBucket) KeyN() int                                { return b.b.Stats().KeyN }

// Snapshot calls fn inside one read transaction with the size of a
// consistent copy of the whole database file and a function that writes
// that copy (a backup). Writers go on meanwhile; one that must grow the
// file waits until fn returns.
func (b *Bolt) Snapshot(fn func(size int64, writeTo func(io.Writer) (int64, error)) error) error {
	return b.db.View(func(tx *bolt.Tx) error { return fn(tx.Size(), tx.WriteTo) })
}

// CheckBolt opens the bbolt file at path read-only and checks its pages
// (a restored backup).
func CheckBolt(path string) error {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return fmt.Errorf("the database does not open: %w", err)
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error {
		var first error
		for err := range tx.Check() { // read to the end: the check runs in its own goroutine
			if first == nil {
				first = fmt.Errorf("the database is damaged: %w", err)
			}
		}
		return first
	})
}

// Buckets calls fn with the name of every bucket, in order, inside one read
// transaction (tx is that transaction). The receiver's buckets hold values
// only: a nested bucket is an error.
func (b *Bolt) Buckets(fn func(tx Tx, name []byte) error) error {
	return b.db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, bk *bolt.Bucket) error {
			if err := bk.ForEach(func(k, v []byte) error {
				if v == nil {
					return fmt.Errorf("bucket %q holds a nested bucket %q: not a receiver state", name, k)
				}
				return nil
			}); err != nil {
				return err
			}
			return fn(boltTx{tx}, name)
		})
	})
}
