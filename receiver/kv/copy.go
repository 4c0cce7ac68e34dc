package kv

import (
	"bytes"
	"fmt"
)

// copyBatch is how many pairs one transaction of Copy writes.
const copyBatch = 1000

// CopyStats says what Copy copied.
type CopyStats struct {
	Buckets   int            `json:"buckets"`
	Keys      int            `json:"keys"`
	PerBucket map[string]int `json:"per_bucket"`
}

// Copy copies every bucket of src into dst, which must hold no key yet, in
// transactions of copyBatch pairs, then checks that dst holds exactly what
// src holds (every bucket, key and value). src is read in one snapshot;
// nothing else may write dst meanwhile. A Copy that fails leaves dst
// partly written: empty it (or use a new database) before trying again.
func Copy(dst, src DB) (CopyStats, error) {
	st := CopyStats{PerBucket: map[string]int{}}
	var existing int
	if err := dst.View(func(tx Tx) error {
		existing = 0
		return tx.ForEachBucket(func(name []byte, b Bucket) error {
			existing += b.KeyN()
			return nil
		})
	}); err != nil {
		return st, fmt.Errorf("read the target: %w", err)
	}
	if existing > 0 {
		return st, fmt.Errorf("the target already holds %d keys of receiver state: migrate into an empty database", existing)
	}
	err := src.View(func(stx Tx) error {
		return stx.ForEachBucket(func(name []byte, b Bucket) error {
			st.Buckets++
			if err := dst.Update(func(dtx Tx) error {
				_, err := dtx.CreateBucketIfNotExists(name)
				return err
			}); err != nil {
				return fmt.Errorf("bucket %q: %w", name, err)
			}
			var batch [][2][]byte
			flush := func() error {
				if len(batch) == 0 {
					return nil
				}
				err := dst.Update(func(dtx Tx) error {
					db := dtx.Bucket(name)
					for _, kv := range batch {
						if err := db.Put(kv[0], kv[1]); err != nil {
							return err
						}
					}
					return nil
				})
				st.Keys += len(batch)
				st.PerBucket[string(name)] += len(batch)
				batch = batch[:0]
				return err
			}
			if err := b.ForEach(func(k, v []byte) error {
				batch = append(batch, [2][]byte{bytes.Clone(k), bytes.Clone(v)})
				if len(batch) == copyBatch {
					return flush()
				}
				return nil
			}); err != nil {
				return fmt.Errorf("bucket %q: %w", name, err)
			}
			if err := flush(); err != nil {
				return fmt.Errorf("bucket %q: %w", name, err)
			}
			return nil
		})
	})
	if err != nil {
		return st, err
	}
	if err := Same(dst, src); err != nil {
		return st, fmt.Errorf("after the copy: %w", err)
	}
	return st, nil
}

// Same reports the first difference between a's and b's contents, or nil.
func Same(a, b DB) error {
	dump := func(db DB) (map[string]map[string]string, error) {
		out := map[string]map[string]string{}
		err := db.View(func(tx Tx) error {
			clear(out)
			return tx.ForEachBucket(func(name []byte, bk Bucket) error {
				m := map[string]string{}
				out[string(name)] = m
				return bk.ForEach(func(k, v []byte) error {
					m[string(k)] = string(v)
					return nil
				})
			})
		})
		return out, err
	}
	da, err := dump(a)
	if err != nil {
		return err
	}
	db, err := dump(b)
	if err != nil {
		return err
	}
	for name, ma := range da {
		mb, ok := db[name]
		if !ok {
			return fmt.Errorf("bucket %q is missing from one side", name)
		}
		if len(ma) != len(mb) {
			return fmt.Errorf("bucket %q holds %d keys on one side, %d on the other", name, len(ma), len(mb))
		}
		for k, v := range ma {
			if w, ok := mb[k]; !ok || w != v {
				return fmt.Errorf("bucket %q, key %q differs", name, k)
			}
		}
	}
	if len(da) != len(db) {
		return fmt.Errorf("%d buckets on one side, %d on the other", len(da), len(db))
	}
	return nil
}
