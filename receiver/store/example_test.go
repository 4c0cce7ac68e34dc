package store_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log"
	"os"

	"github.com/uploadbox/uploadbox/receiver/store"
)

func ExampleNewFS() {
	dir, err := os.MkdirTemp("", "store-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	s, err := store.NewFS(dir)
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	segment := []byte("sealed segment bytes")
	key := "DEVICEID/RECORDINGID/000003.ubx"

	put := func(data []byte) error {
		return s.Put(ctx, key, bytes.NewReader(data), int64(len(data)), sha256.Sum256(data))
	}
	fmt.Println("first put:", put(segment))
	fmt.Println("repeated put:", put(segment))
	fmt.Println("other data is a conflict:", errors.Is(put([]byte("other")), store.ErrConflict))
	keys, _ := s.List(ctx, "DEVICEID/")
	fmt.Println(keys)
	// Output:
	// first put: <nil>
	// repeated put: <nil>
	// other data is a conflict: true
	// [DEVICEID/RECORDINGID/000003.ubx]
}
