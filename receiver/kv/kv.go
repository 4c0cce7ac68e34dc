// Package kv is the receiver's state store: named buckets of ordered keys,
// read and written in transactions. Two implementations answer to it: bbolt,
// a file in the data directory (the embedded default, one receiver), and
// PostgreSQL (any number of receivers on one database).
//
// Every piece of the receiver's state (devices and their keys, viewers and
// roles, segments and recordings, uploads, lockouts, control connections)
// keeps its own buckets and reads and writes them through a Tx, so that a
// commit that touches several of them is one transaction on either backend.
//
// Semantics both implementations keep, and the conformance suite (Suite)
// checks:
//   - Update runs fn in a read-write transaction that is serializable: as if
//     every Update ran alone, one after the other, across all the processes
//     that share the store. An error from fn, or from any operation inside
//     it, rolls back everything fn did.
//   - Update may run fn more than once (PostgreSQL retries a transaction that
//     lost a serialization conflict with another receiver). fn must therefore
//     act only through tx, and set any result it hands out afresh on each run.
//   - View runs fn on a consistent snapshot, read-only.
//   - Keys are ordered bytewise. Values returned by Get, ForEach and Cursor
//     are valid only inside the transaction; copy what outlives it.
package kv

import (
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// DB is an open state store.
type DB interface {
	Update(fn func(Tx) error) error
	View(fn func(Tx) error) error
	Close() error
}

// Tx is one transaction.
type Tx interface {
	// Bucket is the named bucket, or nil when it was never created.
	Bucket(name []byte) Bucket
	// CreateBucketIfNotExists creates the bucket (in a read-write
	// transaction) and returns it.
	CreateBucketIfNotExists(name []byte) (Bucket, error)
}

// Bucket is a set of key/value pairs ordered by key.
type Bucket interface {
	// Get is the value of key, or nil when there is none.
	Get(key []byte) []byte
	Put(key, value []byte) error
	Delete(key []byte) error
	// ForEach calls fn for every pair in key order; an error from fn stops
	// it and is returned. fn may read the store; it must not change this
	// bucket.
	ForEach(fn func(k, v []byte) error) error
	// Cursor iterates in key order from a position found by Seek or First.
	Cursor() Cursor
	// KeyN is the number of keys in the bucket.
	KeyN() int
}

// Cursor walks a bucket in key order. k is nil past the last key.
type Cursor interface {
	First() (k, v []byte)
	Seek(key []byte) (k, v []byte)
	Next() (k, v []byte)
}

// ErrReadOnly is returned for a write inside View.
var ErrReadOnly = errors.New("kv: write in a read-only transaction")

// BucketN is the number of buckets in the store tx reads (made, even if
// empty).
func BucketN(tx Tx) (int, error) {
	switch t := tx.(type) {
	case *pgTx:
		if t.err != nil {
			return 0, t.err
		}
		var n int
		if err := t.tx.QueryRow(t.ctx, `SELECT count(*) FROM kv_buckets`).Scan(&n); err != nil {
			t.fail(err)
			return 0, err
		}
		return n, nil
	case boltTx:
		n := 0
		err := t.tx.ForEach(func([]byte, *bolt.Bucket) error { n++; return nil })
		return n, err
	}
	return 0, fmt.Errorf("kv: BucketN of a %T", tx)
}
