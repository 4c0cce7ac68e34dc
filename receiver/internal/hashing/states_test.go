package hashing

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/tus/tusd/v2/pkg/filestore"
	tusd "github.com/tus/tusd/v2/pkg/handler"

	"github.com/uploadbox/uploadbox/internal/pgtest"
	"github.com/uploadbox/uploadbox/receiver/kv"
)

// TestStates runs one suite against every States: the directory, and the
// state database on bbolt and on a real PostgreSQL; then an upload hashed
// by one receiver and finished by another that shares its uploads and its
// States, as two replicas do.
func TestStates(t *testing.T) {
	backends := []struct {
		name string
		open func(t *testing.T, dir string) States
	}{
		{"dir", func(t *testing.T, dir string) States { return NewDir(dir) }},
		{"bolt", func(t *testing.T, dir string) States {
			db, err := kv.OpenBolt(filepath.Join(t.TempDir(), "state.db"), time.Second)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			return NewKV(db)
		}},
		{"postgres", func(t *testing.T, dir string) States {
			if testing.Short() {
				t.Skip("starts PostgreSQL; skipped under -short")
			}
			db, err := kv.OpenPostgres(context.Background(), pgtest.Start(t).NewDB(t))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			return NewKV(db)
		}},
	}
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			dir := t.TempDir()
			st := be.open(t, dir)
			ctx := t.Context()
			id := "0123456789abcdef0123456789abcdef"
			if _, err := st.Load(ctx, id); !errors.Is(err, ErrNoState) {
				t.Fatalf("Load of nothing: %v, want ErrNoState", err)
			}
			for _, v := range [][]byte{[]byte("one"), []byte("two, longer")} {
				if err := st.Save(ctx, id, v); err != nil {
					t.Fatal(err)
				}
				if got, err := st.Load(ctx, id); err != nil || !bytes.Equal(got, v) {
					t.Fatalf("Load = %q, %v; want %q", got, err, v)
				}
			}
			for range 2 { // deleting twice is fine
				if err := st.Delete(ctx, id); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := st.Load(ctx, id); !errors.Is(err, ErrNoState) {
				t.Fatalf("Load after Delete: %v, want ErrNoState", err)
			}

			// Two replicas: A hashes the first part, B the rest; B's
			// commit has the SHA-256 of it all, not the Verifier.
			seg, _ := segment(t, 60_000)
			replica := func() *Store {
				c := tusd.NewStoreComposer()
				filestore.New(dir).UseIn(c)
				return Wrap(c, st)
			}
			a, b := replica(), replica()
			up := create(t, a, len(seg))
			write(t, a, up, 0, seg[:20_000])
			write(t, b, up, 20_000, seg[20_000:])
			if sums, ok := b.Sums(ctx, up); !ok || sums.Length != int64(len(seg)) || sums.SHA256 != sha256Of(seg) || sums.Verifier != nil {
				t.Fatalf("replica B: Sums = %+v, %v", sums, ok)
			}
			// A's own Verifier stopped at 20 000 bytes: A gives the saved
			// state B left.
			if sums, ok := a.Sums(ctx, up); !ok || sums.Length != int64(len(seg)) || sums.SHA256 != sha256Of(seg) || sums.Verifier != nil {
				t.Fatalf("replica A: Sums = %+v, %v; want B's saved state", sums, ok)
			}
		})
	}
}
