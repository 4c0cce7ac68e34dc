package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
)

// runStoreSuite checks the Store contract against s. Each subtest uses its
// own key prefix, so s may be shared and need not be empty.
func runStoreSuite(t *testing.T, s Store) {
	ctx := t.Context()
	var seq int
	var mu sync.Mutex
	// prefix returns a fresh key prefix for one subtest.
	prefix := func(t *testing.T) string {
		mu.Lock()
		defer mu.Unlock()
		seq++
		return fmt.Sprintf("suite%02d-%s/", seq, strings.NewReplacer("/", "-", " ", "_").Replace(t.Name()))
	}

	t.Run("RoundTrip", func(t *testing.T) {
		key := prefix(t) + "DEV1/REC1/000001.ubx"
		data := randBytes(t, 100_000)
		mustPut(t, s, key, data)
		if got := mustGet(t, s, key); !bytes.Equal(got, data) {
			t.Fatalf("Get returned %d bytes that differ from the %d put", len(got), len(data))
		}
		checkStat(t, s, key, data)
	})

	t.Run("Empty", func(t *testing.T) {
		key := prefix(t) + "DEV1/REC1/000000.ubx"
		mustPut(t, s, key, nil)
		if got := mustGet(t, s, key); len(got) != 0 {
			t.Fatalf("Get returned %d bytes, want 0", len(got))
		}
		checkStat(t, s, key, nil)
	})

	t.Run("IdempotentRePut", func(t *testing.T) {
		p := prefix(t)
		key := p + "DEV1/REC1/000002.ubx"
		data := randBytes(t, 5000)
		for range 3 {
			mustPut(t, s, key, data)
		}
		checkStat(t, s, key, data)
		checkList(t, s, p, []string{key})
	})

	t.Run("Conflict", func(t *testing.T) {
		key := prefix(t) + "DEV1/REC1/000003.ubx"
		first, second := randBytes(t, 5000), randBytes(t, 5000)
		mustPut(t, s, key, first)
		err := put(ctx, s, key, second)
		if !errors.Is(err, ErrConflict) {
			t.Fatalf("second Put with other data: err = %v, want ErrConflict", err)
		}
		// A different size is a conflict too.
		if err := put(ctx, s, key, first[:10]); !errors.Is(err, ErrConflict) {
			t.Fatalf("Put with shorter data: err = %v, want ErrConflict", err)
		}
		if got := mustGet(t, s, key); !bytes.Equal(got, first) {
			t.Fatal("the first object was overwritten")
		}
		checkStat(t, s, key, first)
	})

	t.Run("Delete", func(t *testing.T) {
		d, ok := s.(Deleter)
		if !ok {
			t.Fatalf("%T cannot delete objects", s)
		}
		p := prefix(t)
		gone, kept := p+"DEV1/REC1/000008.ubx", p+"DEV1/REC2/000000.ubx"
		mustPut(t, s, gone, randBytes(t, 3000))
		mustPut(t, s, kept, randBytes(t, 3000))
		for range 2 { // a repeated delete is not an error
			if err := d.Delete(ctx, gone); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.Stat(ctx, gone); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Stat after Delete: err = %v, want ErrNotFound", err)
		}
		checkList(t, s, p, []string{kept})
		// The key is free again.
		mustPut(t, s, gone, randBytes(t, 100))
	})

	t.Run("HashMismatch", func(t *testing.T) {
		p := prefix(t)
		key := p + "DEV1/REC1/000004.ubx"
		data := randBytes(t, 70_000)
		wrong := sha256.Sum256(append([]byte("x"), data...))
		err := s.Put(ctx, key, bytes.NewReader(data), int64(len(data)), wrong)
		if !errors.Is(err, ErrHashMismatch) {
			t.Fatalf("Put with a wrong hash: err = %v, want ErrHashMismatch", err)
		}
		checkNothingStored(t, s, p, key)
		// The key is still free for the right data.
		mustPut(t, s, key, data)
		checkStat(t, s, key, data)
	})

	t.Run("SizeMismatch", func(t *testing.T) {
		data := randBytes(t, 40_000)
		tests := []struct {
			name string
			body []byte
			size int64
			sum  [32]byte
		}{
			{"ReaderShort", data[:len(data)-1], int64(len(data)), sha256.Sum256(data)},
			{"ReaderShortHashOfWhatIsRead", data[:len(data)-1], int64(len(data)), sha256.Sum256(data[:len(data)-1])},
			{"ReaderLong", data, int64(len(data) - 1), sha256.Sum256(data[:len(data)-1])},
			{"ReaderLongHashOfAll", data, int64(len(data) - 1), sha256.Sum256(data)},
			{"EmptyReader", nil, 10, sha256.Sum256(nil)},
			{"NegativeSize", data, -1, sha256.Sum256(data)},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				p := prefix(t)
				key := p + "DEV1/REC1/000005.ubx"
				err := s.Put(ctx, key, bytes.NewReader(tt.body), tt.size, tt.sum)
				if !errors.Is(err, ErrHashMismatch) {
					t.Fatalf("Put: err = %v, want ErrHashMismatch", err)
				}
				checkNothingStored(t, s, p, key)
			})
		}
	})

	t.Run("ReaderError", func(t *testing.T) {
		p := prefix(t)
		key := p + "DEV1/REC1/000006.ubx"
		data := randBytes(t, 50_000)
		boom := errors.New("boom")
		r := io.MultiReader(bytes.NewReader(data[:20_000]), errReader{boom})
		err := s.Put(ctx, key, r, int64(len(data)), sha256.Sum256(data))
		if !errors.Is(err, boom) {
			t.Fatalf("Put: err = %v, want the reader's error", err)
		}
		checkNothingStored(t, s, p, key)
	})

	t.Run("CanceledContext", func(t *testing.T) {
		p := prefix(t)
		key := p + "DEV1/REC1/000007.ubx"
		data := randBytes(t, 1000)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := s.Put(cctx, key, bytes.NewReader(data), int64(len(data)), sha256.Sum256(data)); err == nil {
			t.Fatal("Put with a canceled context succeeded")
		}
		checkNothingStored(t, s, p, key)
	})

	t.Run("BadKeys", func(t *testing.T) {
		p := prefix(t)
		data := []byte("data")
		sum := sha256.Sum256(data)
		for _, key := range badKeys {
			t.Run(fmt.Sprintf("%q", key), func(t *testing.T) {
				if err := s.Put(ctx, key, bytes.NewReader(data), int64(len(data)), sum); !errors.Is(err, ErrBadKey) {
					t.Errorf("Put: err = %v, want ErrBadKey", err)
				}
				if _, _, err := s.Get(ctx, key); !errors.Is(err, ErrBadKey) {
					t.Errorf("Get: err = %v, want ErrBadKey", err)
				}
				if _, err := s.Stat(ctx, key); !errors.Is(err, ErrBadKey) {
					t.Errorf("Stat: err = %v, want ErrBadKey", err)
				}
			})
		}
		for _, pre := range []string{"/", "/a", "../", "a/../", "a//", "a b", ".tmp", "a/.x", "a\\"} {
			if _, err := s.List(ctx, pre); !errors.Is(err, ErrBadKey) {
				t.Errorf("List(%q): err = %v, want ErrBadKey", pre, err)
			}
		}
		// The same names made valid are accepted.
		mustPut(t, s, p+"a-b_c.D9/0.ubx", data)
	})

	t.Run("List", func(t *testing.T) {
		p := prefix(t)
		// In byte order, as List returns them ('-' sorts before '/').
		keys := []string{
			p + "DEVA-2/REC1/000001.ubx",
			p + "DEVA/REC1/000001.ubx",
			p + "DEVA/REC1/000002.ubx",
			p + "DEVA/REC1/000010.ubx",
			p + "DEVA/REC2/000001.ubx",
			p + "DEVB/REC1/000001.ubx",
		}
		for _, k := range slices.Backward(keys) {
			mustPut(t, s, k, []byte(k))
		}
		tests := []struct {
			prefix string
			want   []string
		}{
			{p, keys},
			{p + "DEVA/", keys[1:5]},
			{p + "DEVA", keys[:5]},
			{p + "DEVA/REC1/", keys[1:4]},
			{p + "DEVA/REC1/00000", keys[1:3]},
			{p + "DEVA/REC", keys[1:5]},
			{p + "DEVA/REC1/000001.ubx", keys[1:2]},
			{p + "DEVB/", keys[5:]},
			{p + "DEVC/", nil},
			{p + "DEVC/REC1/", nil},
			{p + "DEVA/REC1/000001.ubx/", nil},
		}
		for _, tt := range tests {
			checkList(t, s, tt.prefix, tt.want)
		}
		// An empty prefix lists everything, including these keys.
		all, err := s.List(ctx, "")
		if err != nil {
			t.Fatalf("List(\"\"): %v", err)
		}
		for _, k := range keys {
			if _, ok := slices.BinarySearch(all, k); !ok {
				t.Errorf("List(\"\") lacks %s", k)
			}
		}
	})

	t.Run("NotFound", func(t *testing.T) {
		p := prefix(t)
		mustPut(t, s, p+"DEV1/REC1/000001.ubx", []byte("x"))
		for _, key := range []string{p + "DEV1/REC1/000002.ubx", p + "DEV1/REC1", p + "DEV1", p + "DEV9/REC1/000001.ubx", p + "DEV1/REC1/000001.ubx/x"} {
			if _, _, err := s.Get(ctx, key); !errors.Is(err, ErrNotFound) {
				t.Errorf("Get(%s): err = %v, want ErrNotFound", key, err)
			}
			if _, err := s.Stat(ctx, key); !errors.Is(err, ErrNotFound) {
				t.Errorf("Stat(%s): err = %v, want ErrNotFound", key, err)
			}
		}
	})

	t.Run("ConcurrentSame", func(t *testing.T) {
		p := prefix(t)
		key := p + "DEV1/REC1/000001.ubx"
		data := randBytes(t, 300_000)
		errs := putConcurrently(ctx, s, key, func(int) []byte { return data })
		for i, err := range errs {
			if err != nil {
				t.Errorf("Put %d: %v", i, err)
			}
		}
		checkList(t, s, p, []string{key})
		checkStat(t, s, key, data)
	})

	t.Run("ConcurrentDifferent", func(t *testing.T) {
		p := prefix(t)
		key := p + "DEV1/REC1/000001.ubx"
		bodies := make([][]byte, 8)
		for i := range bodies {
			bodies[i] = randBytes(t, 300_000)
		}
		errs := putConcurrently(ctx, s, key, func(i int) []byte { return bodies[i] })
		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner < 0:
				winner = i
			case err == nil:
				t.Errorf("Put %d and Put %d of different data both succeeded", winner, i)
			case !errors.Is(err, ErrConflict):
				t.Errorf("Put %d: err = %v, want nil or ErrConflict", i, err)
			}
		}
		if winner < 0 {
			t.Fatal("no Put succeeded")
		}
		checkList(t, s, p, []string{key})
		checkStat(t, s, key, bodies[winner])
		if got := mustGet(t, s, key); !bytes.Equal(got, bodies[winner]) {
			t.Error("stored data is not the winner's")
		}
	})

	t.Run("Large", func(t *testing.T) {
		if testing.Short() {
			t.Skip("20 MiB object skipped under -short")
		}
		key := prefix(t) + "DEV1/REC1/000001.ubx"
		const size = 20 << 20
		data := randBytes(t, size)
		mustPut(t, s, key, data)
		checkStat(t, s, key, data)
		rc, n, err := s.Get(ctx, key)
		if err != nil {
			t.Fatalf("Get: %v", err)
		}
		defer rc.Close()
		info, err := hashReader(ctx, rc)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		if n != size || info.Size != size || info.SHA256 != sha256.Sum256(data) {
			t.Fatalf("Get: size %d, read %d bytes, sha-256 %x; want %d bytes, %x", n, info.Size, info.SHA256, size, sha256.Sum256(data))
		}
	})
}

// badKeys are refused by every Store.
var badKeys = []string{
	"",
	"/abs/000001.ubx",
	"a/../b",
	"..",
	"a/..",
	"../a",
	"a..b",
	".",
	"a/./b",
	"a//b",
	"a/",
	".hidden",
	"a/.tmp-123",
	"a b",
	"a\\b",
	"a\x00b",
	"a\nb",
	"dév/1",
	"a?b",
	"a%2Fb",
	"a+b",
	"a:b",
	strings.Repeat("a", 1025),
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func putConcurrently(ctx context.Context, s Store, key string, body func(int) []byte) []error {
	const n = 8
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = put(ctx, s, key, body(i))
		})
	}
	close(start)
	wg.Wait()
	return errs
}

func randBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func put(ctx context.Context, s Store, key string, data []byte) error {
	return s.Put(ctx, key, bytes.NewReader(data), int64(len(data)), sha256.Sum256(data))
}

func mustPut(t *testing.T, s Store, key string, data []byte) {
	t.Helper()
	if err := put(t.Context(), s, key, data); err != nil {
		t.Fatalf("Put(%s, %d bytes): %v", key, len(data), err)
	}
}

func mustGet(t *testing.T, s Store, key string) []byte {
	t.Helper()
	rc, n, err := s.Get(t.Context(), key)
	if err != nil {
		t.Fatalf("Get(%s): %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("Get(%s): read: %v", key, err)
	}
	if int64(len(b)) != n {
		t.Fatalf("Get(%s): size %d, read %d bytes", key, n, len(b))
	}
	return b
}

func checkStat(t *testing.T, s Store, key string, data []byte) {
	t.Helper()
	info, err := s.Stat(t.Context(), key)
	if err != nil {
		t.Fatalf("Stat(%s): %v", key, err)
	}
	want := Info{Size: int64(len(data)), SHA256: sha256.Sum256(data)}
	if info != want {
		t.Fatalf("Stat(%s) = {%d, %x}, want {%d, %x}", key, info.Size, info.SHA256, want.Size, want.SHA256)
	}
}

func checkList(t *testing.T, s Store, prefix string, want []string) {
	t.Helper()
	got, err := s.List(t.Context(), prefix)
	if err != nil {
		t.Fatalf("List(%s): %v", prefix, err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("List(%s) = %q, want %q", prefix, got, want)
	}
}

func checkNothingStored(t *testing.T, s Store, prefix, key string) {
	t.Helper()
	if _, err := s.Stat(t.Context(), key); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat after a failed Put: err = %v, want ErrNotFound", err)
	}
	if _, _, err := s.Get(t.Context(), key); !errors.Is(err, ErrNotFound) {
		t.Errorf("Get after a failed Put: err = %v, want ErrNotFound", err)
	}
	checkList(t, s, prefix, nil)
}
