package pgaudit_test

import (
	"crypto/ed25519"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/receiver/internal/kvtest"
	"github.com/uploadbox/uploadbox/receiver/kv"
	"github.com/uploadbox/uploadbox/receiver/pgaudit"
)

// TestImportKeepsHashes: a file chain (nanosecond times, pruned, with a
// checkpoint) copied into an empty table keeps every entry's hash, still
// verifies against its checkpoint, and appends continue it. Importing it
// again changes nothing; another chain is refused.
func TestImportKeepsHashes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL; skipped under -short")
	}
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	l, err := audit.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	key := newKey(t)
	appendN(t, l, 6, audit.Entry{Event: "viewer.login", Identity: "alice", Source: "192.0.2.1", Outcome: "ok"})
	if _, _, err := l.Checkpoint(key); err != nil {
		t.Fatal(err)
	}
	es, err := l.Entries(audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if es[0].Time.Nanosecond()%1000 == 0 {
		t.Log("the file's first entry has no sub-microsecond digits: this run does not show that they survive")
	}
	cps, err := audit.ReadCheckpoints(audit.CheckpointPath(path))
	if err != nil {
		t.Fatal(err)
	}
	c := pgBackend(t).open(t).(*pgaudit.Chain)
	if n, err := c.Import(es, cps); err != nil || n != 6 {
		t.Fatalf("import: %d %v", n, err)
	}
	if n, err := c.Import(es, cps); err != nil || n != 0 {
		t.Fatalf("the same chain again: %d %v, want 0 and no error", n, err)
	}
	rep, err := c.VerifyAnchored(key.Public().(ed25519.PublicKey))
	if err != nil || rep.Entries != 6 || rep.Checkpoint == nil || rep.Checkpoint.Seq != 6 {
		t.Fatalf("verify the imported chain: %+v %v", rep, err)
	}
	got, err := c.Entries(audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range es {
		if got[i].Hash != es[i].Hash || !got[i].Time.Equal(es[i].Time) {
			t.Fatalf("seq %d: %+v in the table, %+v in the file", es[i].Seq, got[i], es[i])
		}
	}
	e, err := c.Append(audit.Entry{Event: "device.connect", Outcome: "ok"})
	if err != nil || e.Seq != 7 || e.Prev != es[5].Hash {
		t.Fatalf("append after import: %+v %v", e, err)
	}
	if _, err := c.VerifyAnchored(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Import(es, cps); !errors.Is(err, pgaudit.ErrNotEmpty) {
		t.Fatalf("import into a chain that moved on: %v", err)
	}
}

// TestHeadRowNamesCutEnd: rows deleted from the end of the table, with
// no checkpoint yet to miss them, are still found: the head row names
// the entry the table no longer ends with.
func TestHeadRowNamesCutEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL; skipped under -short")
	}
	url := kvtest.URL(t)
	db, err := kv.OpenPostgres(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	c := pgaudit.New(db.Pool(), "test/1")
	appendN(t, c, 4, audit.Entry{Event: "device.connect", Outcome: "ok"})
	if _, err := db.Pool().Exec(t.Context(), `DELETE FROM audit_entries WHERE seq = 4`); err != nil {
		t.Fatal(err)
	}
	_, err = c.VerifyAnchored(nil)
	var he *pgaudit.HeadError
	if !errors.As(err, &he) || he.Head != 4 || he.Last != 3 {
		t.Fatalf("verify after deleting the last row: %v", err)
	}
	if _, _, err := c.Checkpoint(newKey(t)); !errors.As(err, &he) {
		t.Fatalf("checkpoint over a cut table: %v", err)
	}
}

// TestCheckpointWaitsForTheWriterLock: a checkpoint is written under the
// checkpoint writers' advisory lock, so that two receivers never store
// checkpoints out of order: while another session holds it, Checkpoint
// waits on it, and goes on once it is released.
func TestCheckpointWaitsForTheWriterLock(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL; skipped under -short")
	}
	db, err := kv.OpenPostgres(t.Context(), kvtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	c := pgaudit.New(db.Pool(), "test/1")
	appendN(t, c, 3, audit.Entry{Event: "device.connect", Outcome: "ok"})
	holder, err := db.Pool().Acquire(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Release()
	const writerLock = 0x75626f78_61756469
	if _, err := holder.Exec(t.Context(), `SELECT pg_advisory_lock($1)`, int64(writerLock)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, _, err := c.Checkpoint(newKey(t))
		done <- err
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var waiting int
		if err := db.Pool().QueryRow(t.Context(), `SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted`).Scan(&waiting); err != nil {
			t.Fatal(err)
		}
		if waiting == 1 {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("checkpoint returned (%v) while another session held the writers' lock", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("no checkpoint waiting on the writers' lock within 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := holder.Exec(t.Context(), `SELECT pg_advisory_unlock($1)`, int64(writerLock)); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
