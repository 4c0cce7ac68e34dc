package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/uploadbox/uploadbox/internal/pgtest"
)

// TestServeOnPostgres (issue 15, "One state interface, two
// implementations"): `serve --database` keeps the state in a real
// PostgreSQL (internal/pgtest). A box enrolls and uploads through the
// first receiver and wipes only after verifying each receipt; a second
// receiver process, started on the same database with a copy of the first's
// keys, lists the device and the recording through its admin socket, and
// the box's next recording goes through it. With both stopped, the admin
// commands read the state with --database and refuse, naming PostgreSQL,
// without it. The database password (given in the URL here) appears in no
// output, log or file of the data directory.
func TestServeOnPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL, two receivers and uploads; skipped under -short")
	}
	const secret = "pw-not-to-be-seen"
	pg := pgtest.Start(t)
	// The cluster trusts its socket: the password is carried, never asked.
	url := strings.Replace(pg.NewDB(t), "postgres:///", "postgres://postgres:"+secret+"@/", 1)
	dir := t.TempDir()
	data1 := filepath.Join(dir, "r1")
	rcv1 := startReceiver(t, data1, "127.0.0.1:0", "--database", url)
	b := enrollBox(t, rcv1, "room-7", rcv1.addr, filepath.Join(dir, "state"))
	spool := filepath.Join(dir, "spool")
	os.Mkdir(spool, 0o700)
	first := recordInto(t, b, spool, "4s")
	out := run(t, "uploadbox", "upload", "--state", b.state, "--spool", spool)
	if n := strings.Count(out, "committed "); n != first || first == 0 {
		t.Fatalf("upload committed %d of %d segments:\n%s", n, first, out)
	}
	if left := spoolSegments(t, spool); len(left) != 0 {
		t.Fatalf("local copies left (the box wipes only after a receipt verifies): %v", left)
	}
	if _, err := os.Stat(filepath.Join(data1, "receiver.db")); err == nil {
		t.Fatal("serve --database made a bbolt file receiver.db")
	}

	// A second receiver on the same database, with the first's CA and
	// keys (what a replica is given), sees the device and the recording.
	data2 := filepath.Join(dir, "r2")
	copyKeys(t, data1, data2)
	rcv2 := startReceiver(t, data2, "127.0.0.1:0", "--database", url)
	if devs := deviceStates(t, "--data", data2); devs["room-7"] != "active" {
		t.Fatalf("devices list on the second receiver: %v, want room-7 active", devs)
	}
	rs := recordings(t, data2)
	if len(rs) != 1 || rs[0].Segments != first || !rs[0].Complete {
		t.Fatalf("recordings list on the second receiver: %+v, want one complete recording of %d segments", rs, first)
	}
	// The box's next recording goes through the second receiver (moved to
	// the first's address, as a load balancer would send it), which
	// commits and signs receipts the box verifies.
	rcv1.stop(t)
	rcv2.stop(t)
	rcv2 = startReceiver(t, data2, rcv1.addr, "--database", url)
	second := recordInto(t, b, spool, "4s")
	out = run(t, "uploadbox", "upload", "--state", b.state, "--spool", spool)
	if n := strings.Count(out, "committed "); n != second {
		t.Fatalf("upload through the second receiver committed %d of %d segments:\n%s", n, second, out)
	}
	if left := spoolSegments(t, spool); len(left) != 0 {
		t.Fatalf("local copies left after uploading through the second receiver: %v", left)
	}
	rcv2.stop(t)

	// No server runs: the admin commands read PostgreSQL with --database,
	// and without it refuse rather than open an empty bbolt file.
	if devs := deviceStates(t, "--data", data1, "--database", url); devs["room-7"] != "active" {
		t.Fatalf("devices list --database without a server: %v", devs)
	}
	var rs2 []recordingInfo
	if err := json.Unmarshal([]byte(run(t, "uploadbox-receiver", "recordings", "list", "--data", data1, "--database", url, "--json")), &rs2); err != nil || len(rs2) != 2 {
		t.Fatalf("recordings list --database without a server: %+v %v, want both recordings", rs2, err)
	}
	msg := runFails(t, "uploadbox-receiver", "devices", "list", "--data", data1)
	if !strings.Contains(msg, "is in PostgreSQL") || !strings.Contains(msg, "--database") {
		t.Fatalf("devices list without --database on a PostgreSQL receiver: %s", msg)
	}
	if _, err := os.Stat(filepath.Join(data1, "receiver.db")); err == nil {
		t.Fatal("an admin command without --database made a bbolt file")
	}
	// serve refuses the same way.
	if msg := runFails(t, "uploadbox-receiver", "serve", "--data", data1, "--listen", "127.0.0.1:0"); !strings.Contains(msg, "is in PostgreSQL") {
		t.Fatalf("serve without --database on a PostgreSQL receiver: %s", msg)
	}

	// A backup holds the keys and files, and leaves the state to pg_dump;
	// its restore says so.
	bak := filepath.Join(dir, "r1.bak")
	if out := run(t, "uploadbox-receiver", "backup", "--out", bak, "--data", data1); !strings.Contains(out, "the state is in PostgreSQL: back it up with pg_dump") {
		t.Fatalf("backup of a PostgreSQL receiver printed:\n%s", out)
	}
	restored := filepath.Join(dir, "restored")
	cmd := exec.Command(filepath.Join(binDir, "uploadbox-receiver"), "restore", "--from", bak, "--data", restored)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if out, err := cmd.Output(); err != nil || !strings.Contains(stderr.String(), "pg_restore") {
		t.Fatalf("restore of a PostgreSQL receiver's backup: %v\n%s%s", err, out, stderr.String())
	}
	if _, err := os.Stat(filepath.Join(restored, "receiver.db")); err == nil {
		t.Fatal("the restored directory holds a bbolt file")
	}
	if devs := deviceStates(t, "--data", restored, "--database", url); devs["room-7"] != "active" {
		t.Fatalf("devices list on the restored directory with --database: %v", devs)
	}

	// The password is nowhere: not in what the receivers printed or
	// logged, not in the data directories (DatabaseFile keeps the URL
	// without it).
	for _, p := range []*receiverProc{rcv1, rcv2} {
		log := p.stderr.String()
		if strings.Contains(log, secret) {
			t.Fatalf("the receiver logged the database password:\n%s", log)
		}
		if !strings.Contains(log, "state in PostgreSQL") || !strings.Contains(log, "postgres://postgres:xxxxx@/") {
			t.Fatalf("the receiver did not log where its state is:\n%s", log)
		}
	}
	if strings.Contains(msg, secret) {
		t.Fatalf("an error message shows the database password: %s", msg)
	}
	for _, d := range []string{data1, data2, restored} {
		marker, err := os.ReadFile(filepath.Join(d, "database.postgres"))
		if err != nil || !strings.Contains(string(marker), "postgres://postgres:xxxxx@/") {
			t.Fatalf("%s/database.postgres: %q %v, want the URL without its password", d, marker, err)
		}
		filepath.WalkDir(d, func(path string, e fs.DirEntry, err error) error {
			if err == nil && e.Type().IsRegular() {
				if b, _ := os.ReadFile(path); strings.Contains(string(b), secret) {
					t.Errorf("%s holds the database password", path)
				}
			}
			return nil
		})
	}
}

// deviceStates runs devices list --json with args and maps name to state.
func deviceStates(t *testing.T, args ...string) map[string]string {
	t.Helper()
	var devs []struct {
		Name  string `json:"name"`
		State string `json:"state"`
	}
	out := run(t, "uploadbox-receiver", append([]string{"devices", "list", "--json"}, args...)...)
	if err := json.Unmarshal([]byte(out), &devs); err != nil {
		t.Fatalf("devices list --json printed %q: %v", out, err)
	}
	m := map[string]string{}
	for _, d := range devs {
		m[d.Name] = d.State
	}
	return m
}

// copyKeys gives a replica's data directory the first receiver's CA,
// server certificate and keys (the regular files at its top level).
func copyKeys(t *testing.T, from, to string) {
	t.Helper()
	if err := os.Mkdir(to, 0o700); err != nil {
		t.Fatal(err)
	}
	es, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), "audit") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestMigrateBoltToPostgres: `migrate --from bolt:DIR --to URL` moves a
// stopped receiver's state into an empty PostgreSQL database. Refused while
// serve runs, and into a database that already holds a state. Afterwards
// serve --database on the same directory has the device, the viewer and the
// recording, the box's next recording uploads through it, and the bbolt
// file is kept beside, renamed. The audit chain moves too: its entries are
// in the database with the same seq and hashes, the receiver continues the
// chain there, and `audit verify --database` passes with its checkpoints.
func TestMigrateBoltToPostgres(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL, receivers and uploads; skipped under -short")
	}
	pg := pgtest.Start(t)
	url := pg.NewDB(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "receiver")
	rcv := startReceiver(t, data, "127.0.0.1:0")
	b := enrollBox(t, rcv, "room-3", rcv.addr, filepath.Join(dir, "state"))
	addViewer(t, data, "coach-ann", "correct horse battery staple 9")
	spool := filepath.Join(dir, "spool")
	os.Mkdir(spool, 0o700)
	first := recordInto(t, b, spool, "4s")
	run(t, "uploadbox", "upload", "--state", b.state, "--spool", spool)
	if left := spoolSegments(t, spool); len(left) != 0 || first == 0 {
		t.Fatalf("%d segments recorded, local copies left: %v", first, left)
	}
	if msg := runFails(t, "uploadbox-receiver", "migrate", "--from", "bolt:"+data, "--to", url); !strings.Contains(msg, "a receiver is running on "+data) {
		t.Fatalf("migrate while serve runs: %s", msg)
	}
	rcv.stop(t)
	var before []auditEntry
	if err := json.Unmarshal([]byte(run(t, "uploadbox-receiver", "audit", "list", "--json", "--data", data)), &before); err != nil || len(before) == 0 {
		t.Fatalf("audit list before migrate: %v %d entries", err, len(before))
	}

	// A copy of the stopped receiver's directory, to migrate again later.
	again := filepath.Join(dir, "again")
	copyKeys(t, data, again)

	out := run(t, "uploadbox-receiver", "migrate", "--from", "bolt:"+data, "--to", url)
	if !strings.Contains(out, "moved the state of "+data) || !strings.Contains(out, "counted back") ||
		!strings.Contains(out, fmt.Sprintf("copied the audit chain: %d entries (seq 1 to %d)", len(before), len(before))) {
		t.Fatalf("migrate printed:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(data, "audit.jsonl.migrated")); err != nil {
		t.Fatalf("the audit file was not kept: %v", err)
	}
	if _, err := os.Stat(filepath.Join(data, "audit.jsonl")); err == nil {
		t.Fatal("audit.jsonl is still in place after migrate")
	}
	if _, err := os.Stat(filepath.Join(data, "receiver.db")); err == nil {
		t.Fatal("receiver.db is still in place after migrate")
	}
	if _, err := os.Stat(filepath.Join(data, "receiver.db.migrated")); err != nil {
		t.Fatalf("the bbolt file was not kept: %v", err)
	}
	if msg := runFails(t, "uploadbox-receiver", "migrate", "--from", "bolt:"+data, "--to", url); !strings.Contains(msg, "in PostgreSQL already") {
		t.Fatalf("migrate twice: %s", msg)
	}
	if msg := runFails(t, "uploadbox-receiver", "migrate", "--from", "bolt:"+again, "--to", url); !strings.Contains(msg, "already holds a receiver state") {
		t.Fatalf("migrate into a database holding a state: %s", msg)
	}
	// The refused directory is as it was, and migrates into an empty
	// database (--json).
	var rep struct {
		Buckets map[string]int `json:"buckets"`
		Keys    int            `json:"keys"`
		KeptAs  string         `json:"kept_as"`
	}
	if err := json.Unmarshal([]byte(run(t, "uploadbox-receiver", "migrate", "--from", "bolt:"+again, "--to", pg.NewDB(t), "--json")), &rep); err != nil ||
		rep.Buckets["devices"] != 1 || rep.Keys < first || rep.KeptAs != filepath.Join(again, "receiver.db.migrated") {
		t.Fatalf("migrate --json of the refused directory: %+v %v", rep, err)
	}

	rcv2 := startReceiver(t, data, rcv.addr, "--database", url)
	if devs := deviceStates(t, "--data", data); devs["room-3"] != "active" {
		t.Fatalf("devices after migrate: %v", devs)
	}
	if out := run(t, "uploadbox-receiver", "viewers", "list", "--data", data); !strings.Contains(out, "coach-ann") {
		t.Fatalf("viewers after migrate:\n%s", out)
	}
	second := recordInto(t, b, spool, "4s")
	out = run(t, "uploadbox", "upload", "--state", b.state, "--spool", spool)
	if n := strings.Count(out, "committed "); n != second {
		t.Fatalf("upload after migrate committed %d of %d segments:\n%s", n, second, out)
	}
	if left := spoolSegments(t, spool); len(left) != 0 {
		t.Fatalf("local copies left after uploading to the migrated receiver: %v", left)
	}
	rs := recordings(t, data)
	if len(rs) != 2 || rs[0].Segments != first || rs[1].Segments != second || !rs[0].Complete || !rs[1].Complete {
		t.Fatalf("recordings after migrate: %+v, want two complete recordings of %d and %d segments", rs, first, second)
	}
	rcv2.stop(t)
	// One chain: the file's entries as they were, then the receiver's.
	var after []auditEntry
	if err := json.Unmarshal([]byte(run(t, "uploadbox-receiver", "audit", "list", "--json", "--data", data, "--database", url)), &after); err != nil || len(after) <= len(before) {
		t.Fatalf("audit list after migrate: %v, %d entries (%d before)", err, len(after), len(before))
	}
	for i, e := range before {
		if after[i] != e {
			t.Fatalf("entry %d after migrate %+v, before %+v", i, after[i], e)
		}
	}
	if n := after[len(before)]; n.Prev != before[len(before)-1].Hash || n.Receiver == "" {
		t.Fatalf("the first entry after migrate %+v does not continue the chain from %s", n, before[len(before)-1].Hash)
	}
	var v struct {
		Entries    int
		Checkpoint *struct{ Seq uint64 }
	}
	if err := json.Unmarshal([]byte(run(t, "uploadbox-receiver", "audit", "verify", "--json", "--data", data, "--database", url)), &v); err != nil ||
		v.Entries != len(after) || v.Checkpoint == nil || v.Checkpoint.Seq <= uint64(len(before)) {
		t.Fatalf("audit verify --database after migrate: %+v %v (%d entries listed)", v, err, len(after))
	}
}
