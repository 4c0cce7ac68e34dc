package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/uploadbox/uploadbox/internal/pgtest"
)

// TestAuditChainAcrossReceivers (issue 15): two receivers on one
// PostgreSQL database append to one audit chain. Administrators add
// devices through both admin sockets at once; the chain then verifies
// from either data directory, holds every entry once with seq rising
// without gaps, names which receiver wrote each, and is checkpointed
// with the receipt key. Without --database the audit commands say where
// the chain is. A receiver whose directory still holds an audit file says
// that it no longer writes it. An admin command run with --database and
// no server appends to the same chain. An UPDATE of
// one row's detail makes verify fail naming that seq.
func TestAuditChainAcrossReceivers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL and two receivers; skipped under -short")
	}
	url := pgtest.Start(t).NewDB(t)
	dir := t.TempDir()
	dataA, dataB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	serve := []string{"--database", url, "--audit-checkpoint-every", "1s"}
	a := startReceiver(t, dataA, "127.0.0.1:0", serve...)
	copyKeys(t, dataA, dataB)
	// B's directory holds a file chain from before it moved: B says it
	// no longer writes it.
	old := filepath.Join(dataB, "audit.jsonl")
	if err := os.WriteFile(old, []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	b := startReceiver(t, dataB, "127.0.0.1:0", serve...)
	if log := b.stderr.String(); !strings.Contains(log, "the audit file in the data directory is no longer written") || !strings.Contains(log, old) {
		t.Fatalf("receiver B started on a directory with an audit file logged:\n%s", log)
	}

	// Both receivers append at once: each `devices add` is audited by
	// the receiver whose admin socket it reached.
	const each = 8
	var wg sync.WaitGroup
	for _, data := range []string{dataA, dataB} {
		for i := range each {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cpRun(t, "uploadbox-receiver", "devices", "add", fmt.Sprintf("%s-%d", filepath.Base(data), i), "--data", data)
			}()
		}
	}
	wg.Wait()

	list := func(args ...string) []auditEntry {
		t.Helper()
		var es []auditEntry
		out := run(t, "uploadbox-receiver", append([]string{"audit", "list", "--json", "--database", url}, args...)...)
		if err := json.Unmarshal([]byte(out), &es); err != nil {
			t.Fatalf("audit list --json: %v\n%s", err, out)
		}
		return es
	}
	adds := list("--data", dataB, "--type", "device.add")
	writers := map[string][]string{}
	for _, e := range adds {
		writers[e.Receiver] = append(writers[e.Receiver], e.Identity)
	}
	if len(adds) != 2*each || len(writers) != 2 {
		t.Fatalf("%d device.add entries by %d receivers, want %d by 2: %v", len(adds), len(writers), 2*each, writers)
	}
	for w, names := range writers {
		for _, n := range names {
			if !strings.HasPrefix(n, names[0][:2]) {
				t.Fatalf("receiver %s audited the adds of both admin sockets: %v", w, names)
			}
		}
	}
	all := list("--data", dataA)
	for i, e := range all {
		if e.Seq != uint64(i+1) {
			t.Fatalf("entry %d of the chain has seq %d: %+v", i, e.Seq, all)
		}
	}

	// Checkpointed with the receipt key, once a second, by one receiver
	// at a time; verify from either directory.
	type verifyJSON struct {
		Database   string
		Entries    int
		Last       uint64
		Checkpoint *struct{ Seq uint64 }
	}
	verify := func(data string) (verifyJSON, string, int) {
		out, stderr, code := cpRun(t, "uploadbox-receiver", "audit", "verify", "--json", "--data", data, "--database", url)
		var v verifyJSON
		if code == 0 {
			if err := json.Unmarshal([]byte(out), &v); err != nil {
				t.Fatalf("audit verify --json: %v\n%s", err, out)
			}
		}
		return v, stderr, code
	}
	cpWait(t, 30*time.Second, "a checkpoint of the shared chain's head", func() bool {
		v, _, code := verify(dataB)
		return code == 0 && v.Checkpoint != nil && v.Checkpoint.Seq == v.Last
	})
	v, stderr, code := verify(dataA)
	if code != 0 || v.Entries < len(all) || v.Database == "" || strings.Contains(v.Database, "/"+dataA) {
		t.Fatalf("audit verify --data A: exit %d %+v\n%s", code, v, stderr)
	}
	if out := run(t, "uploadbox-receiver", "audit", "list", "--data", dataA, "--database", url, "--last", "3"); !strings.Contains(out, "RECEIVER") {
		t.Fatalf("audit list of the shared chain names no receivers:\n%s", out)
	}

	// Without --database the commands say where the chain is.
	for _, cmd := range [][]string{{"audit", "verify", "--data", dataA}, {"audit", "list", "--data", dataB}} {
		if msg := runFails(t, "uploadbox-receiver", cmd...); !strings.Contains(msg, "is in PostgreSQL") || !strings.Contains(msg, "--database") {
			t.Fatalf("%s without --database: %s", strings.Join(cmd, " "), msg)
		}
	}

	// An admin command run without a server audits there too, as HOST/admin.
	a.stop(t)
	run(t, "uploadbox-receiver", "devices", "add", "room-late", "--data", dataA, "--database", url)
	if late := list("--data", dataA, "--type", "device.add", "--last", "1"); len(late) != 1 || late[0].Identity != "room-late" || !strings.HasSuffix(late[0].Receiver, "/admin") {
		t.Fatalf("devices add without a server: %+v, want an entry by HOST/admin", late)
	}

	// An edited row is named by its seq.
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	if _, err := conn.Exec(t.Context(), `UPDATE audit_entries SET detail = 'nothing to see' WHERE seq = 5`); err != nil {
		t.Fatal(err)
	}
	_, stderr, code = verify(dataB)
	if code == 0 || !strings.Contains(stderr, "audit chain broken at seq 5: entry hash does not match its content (edited)") {
		t.Fatalf("audit verify after editing seq 5: exit %d\n%s", code, stderr)
	}
}
