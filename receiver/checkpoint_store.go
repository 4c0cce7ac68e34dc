package receiver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"

	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/receiver/kv"
)

// deviceCheckpointsBucket holds, with the state in PostgreSQL, the newest
// audit checkpoint each box sent to any receiver on the database (key:
// the device's name), so that every receiver checks a box's next one
// against the same anchor. With bbolt they are files (DeviceCheckpointPath).
var deviceCheckpointsBucket = []byte("device_audit_checkpoints")

// notFollowing is a checkpoint that does not follow the one held (older,
// or forked from it).
type notFollowing struct{ err error }

func (e *notFollowing) Error() string { return e.err.Error() }
func (e *notFollowing) Unwrap() error { return e.err }

// keepDeviceCheckpoint stores c as device's newest audit checkpoint, in
// data (bbolt) or in db (PostgreSQL: one transaction reads the held one,
// compares and replaces it, so two receivers cannot both accept forks).
// same reports that the one held is c; a c that does not follow the one
// held is a *notFollowing.
func keepDeviceCheckpoint(db kv.DB, data, device string, c audit.Checkpoint) (same bool, err error) {
	if _, ok := db.(*kv.Postgres); !ok {
		path := DeviceCheckpointPath(data, device)
		checkpointMu.Lock()
		defer checkpointMu.Unlock()
		held, err := audit.LoadCheckpoint(path)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return false, fmt.Errorf("the stored checkpoint cannot be read: %w", err)
		default:
			if same, err = c.Follows(held); err != nil {
				return false, &notFollowing{err}
			}
		}
		if same {
			return true, nil
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return false, err
		}
		return false, audit.SaveCheckpoint(path, c)
	}
	raw, err := json.Marshal(c)
	if err != nil {
		return false, err
	}
	err = db.Update(func(tx kv.Tx) error {
		same = false // kv.DB may run this again
		b, err := tx.CreateBucketIfNotExists(deviceCheckpointsBucket)
		if err != nil {
			return err
		}
		if v := b.Get([]byte(device)); v != nil {
			held, err := audit.ParseCheckpoint(v)
			if err != nil {
				return fmt.Errorf("the stored checkpoint cannot be read: %w", err)
			}
			if same, err = c.Follows(held); err != nil {
				return &notFollowing{err}
			}
		}
		if same {
			return nil
		}
		return b.Put([]byte(device), raw)
	})
	return same, err
}

// deviceCheckpoint is device's newest stored audit checkpoint (nil: none
// yet): in db with the state in PostgreSQL, else (or if the database holds
// none: one a receiver stored before it kept them there) in data.
func deviceCheckpoint(db kv.DB, data, device string) (*audit.Checkpoint, error) {
	if _, ok := db.(*kv.Postgres); ok {
		var raw []byte
		err := db.View(func(tx kv.Tx) error {
			if b := tx.Bucket(deviceCheckpointsBucket); b != nil {
				raw = bytes.Clone(b.Get([]byte(device)))
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if raw != nil {
			c, err := audit.ParseCheckpoint(raw)
			if err == nil {
				err = c.Verify(nil)
			}
			if err != nil {
				return nil, fmt.Errorf("the stored checkpoint of %s: %w", device, err)
			}
			return &c, nil
		}
	}
	c, err := audit.LoadCheckpoint(DeviceCheckpointPath(data, device))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &c, nil
}

func (a *localAdmin) DeviceCheckpoint(name string) (*audit.Checkpoint, error) {
	return deviceCheckpoint(a.db, a.data, name)
}

func (a *socketAdmin) DeviceCheckpoint(name string) (*audit.Checkpoint, error) {
	var c *audit.Checkpoint
	return c, a.call("GET", "/devices/"+url.PathEscape(name)+"/audit-checkpoint", &c)
}
