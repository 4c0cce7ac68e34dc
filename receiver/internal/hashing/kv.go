package hashing

import (
	"bytes"
	"context"
	"fmt"

	"github.com/uploadbox/uploadbox/receiver/kv"
)

// KV keeps each upload's hash state in the receiver's state database, in
// bucket "upload-hashes" under the upload id: what every replica of a
// receiver sees when the uploads are staged where all replicas reach them.
type KV struct{ db kv.DB }

var _ States = KV{}

// NewKV returns States in db.
func NewKV(db kv.DB) KV { return KV{db: db} }

var hashesBucket = []byte("upload-hashes")

// Load implements States.
func (k KV) Load(_ context.Context, id string) ([]byte, error) {
	var state []byte
	err := k.db.View(func(tx kv.Tx) error {
		if b := tx.Bucket(hashesBucket); b != nil {
			state = bytes.Clone(b.Get([]byte(id))) // valid in tx only
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if state == nil {
		return nil, fmt.Errorf("%w: %s", ErrNoState, id)
	}
	return state, nil
}

// Save implements States. The database may run it more than once (a
// retried transaction): it only puts one value.
func (k KV) Save(_ context.Context, id string, state []byte) error {
	return k.db.Update(func(tx kv.Tx) error {
		b, err := tx.CreateBucketIfNotExists(hashesBucket)
		if err != nil {
			return err
		}
		return b.Put([]byte(id), state)
	})
}

// Delete implements States.
func (k KV) Delete(_ context.Context, id string) error {
	return k.db.Update(func(tx kv.Tx) error {
		if b := tx.Bucket(hashesBucket); b != nil {
			return b.Delete([]byte(id))
		}
		return nil
	})
}

// NoStates saves nothing: an upload's hashes live in this process only,
// for as long as it runs.
type NoStates struct{}

var _ States = NoStates{}

// Load implements States: there is never a state.
func (NoStates) Load(_ context.Context, id string) ([]byte, error) {
	return nil, fmt.Errorf("%w: %s", ErrNoState, id)
}

// Save implements States: it keeps nothing.
func (NoStates) Save(context.Context, string, []byte) error { return nil }

// Delete implements States.
func (NoStates) Delete(context.Context, string) error { return nil }
