package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/internal/pgtest"
	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/receiver/kv"
)

// TestMigrateBoltToPostgres: a receiver that took a box's recording is
// migrated with `uploadbox-receiver migrate` while stopped: refused while
// serve runs, the copy checked, every bucket and key in PostgreSQL, a
// second run into the now full database refused; the bbolt file untouched.
func TestMigrateBoltToPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("records, uploads and starts PostgreSQL; skipped under -short")
	}
	dir := t.TempDir()
	b := setupBox(t, dir, nil)
	spool := filepath.Join(dir, "spool")
	os.Mkdir(spool, 0o700)
	sealed := recordInto(t, b, spool, "4s")
	run(t, "uploadbox", "upload", "--state", b.state, "--spool", spool)
	url := pgtest.Start(t).NewDB(t)

	// While serve holds the file: refused, and said why.
	if msg := runFails(t, "uploadbox-receiver", "migrate", "--from", "bolt:"+b.rcv.data, "--to", url); !strings.Contains(msg, "held by a running serve: stop it first") {
		t.Fatalf("migrate while serve runs: %s", msg)
	}
	b.rcv.cmd.Process.Signal(syscall.SIGTERM)
	b.rcv.cmd.Wait()
	dbPath := filepath.Join(b.rcv.data, receiver.DBFile)
	before, err := os.ReadFile(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	var st kv.CopyStats
	if err := json.Unmarshal([]byte(run(t, "uploadbox-receiver", "migrate", "--from", "bolt:"+b.rcv.data, "--to", url, "--json")), &st); err != nil {
		t.Fatal(err)
	}
	if st.PerBucket["segments"] != sealed || st.PerBucket["devices"] < 1 || st.Keys < sealed+1 {
		t.Fatalf("migrate copied %+v; the box sealed %d segments", st, sealed)
	}
	// What PostgreSQL holds is what the file holds.
	src, err := kv.OpenBolt(dbPath, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := kv.OpenPostgres(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if err := kv.Same(dst, src); err != nil {
		t.Fatal(err)
	}
	src.Close()
	after, _ := os.ReadFile(dbPath)
	if string(after) != string(before) {
		t.Error("migrate changed the bbolt file")
	}
	if msg := runFails(t, "uploadbox-receiver", "migrate", "--from", "bolt:"+b.rcv.data, "--to", url); !strings.Contains(msg, "already holds") {
		t.Fatalf("a second migrate into the full database: %s", msg)
	}
	if msg := runFails(t, "uploadbox-receiver", "migrate", "--from", b.rcv.data, "--to", url); !strings.Contains(msg, "give bolt:DIR") {
		t.Fatalf("--from without bolt: %s", msg)
	}
}
