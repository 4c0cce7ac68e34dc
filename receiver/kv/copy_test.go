package kv

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/internal/pgtest"
)

// TestCopyBoltToPostgres: every bucket (an empty one too), key and value
// arrives, across several batches; a second copy into the now full target is
// refused; Same finds a changed value.
func TestCopyBoltToPostgres(t *testing.T) {
	src, err := OpenBolt(filepath.Join(t.TempDir(), "receiver.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if err := src.Update(func(tx Tx) error {
		for _, name := range []string{"devices", "segments", "empty"} {
			if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
				return err
			}
		}
		for i := 0; i < 2*copyBatch+7; i++ {
			if err := tx.Bucket([]byte("segments")).Put([]byte(fmt.Sprintf("room-7/r1/%06d", i)), []byte{byte(i), 0, 0xff}); err != nil {
				return err
			}
		}
		return tx.Bucket([]byte("devices")).Put([]byte("room-7"), []byte(`{"name":"room-7"}`))
	}); err != nil {
		t.Fatal(err)
	}
	dst, err := OpenPostgres(context.Background(), pgtest.Start(t).NewDB(t))
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	st, err := Copy(dst, src)
	if err != nil {
		t.Fatal(err)
	}
	if st.Buckets != 3 || st.Keys != 2*copyBatch+8 || st.PerBucket["segments"] != 2*copyBatch+7 {
		t.Fatalf("copied %+v", st)
	}
	var names []string
	if err := dst.View(func(tx Tx) error {
		names = names[:0]
		return tx.ForEachBucket(func(name []byte, _ Bucket) error { names = append(names, string(name)); return nil })
	}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(names, ",") != "devices,empty,segments" {
		t.Fatalf("buckets in the target, in order: %v", names)
	}
	if _, err := Copy(dst, src); err == nil || !strings.Contains(err.Error(), "already holds") {
		t.Fatalf("a second copy into a full target: %v", err)
	}
	if err := dst.Update(func(tx Tx) error { return tx.Bucket([]byte("devices")).Put([]byte("room-7"), []byte("{}")) }); err != nil {
		t.Fatal(err)
	}
	if err := Same(dst, src); err == nil || !strings.Contains(err.Error(), `key "room-7" differs`) {
		t.Fatalf("Same after a change: %v", err)
	}
}
