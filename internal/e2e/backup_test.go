package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/uploadbox/uploadbox/internal/s3test"
)

// TestBackupRestoreKeepsBoxUploading (issue 14, "Backup and restore"): a
// box uploads to a receiver with an S3 store (versitygw); `backup` runs
// while serve runs and copies the database through the server; the backup
// is restored into a new directory (a non-empty one is refused, named),
// serve starts there on the same store and address, and the box, enrolled
// with the first, keeps uploading to it: its mutual TLS and the receipts
// it verifies before it wipes are the same CA's and keys'. The restored
// receiver lists both recordings, and its audit log verifies.
func TestBackupRestoreKeepsBoxUploading(t *testing.T) {
	if testing.Short() {
		t.Skip("starts versitygw, two receivers and uploads; skipped under -short")
	}
	gw := s3test.Start(t, "recordings")
	s3 := s3Serve(t, gw)
	dir := t.TempDir()
	rcv := startReceiver(t, filepath.Join(dir, "receiver"), "127.0.0.1:0", s3...)
	b := enrollBox(t, rcv, "room-9", rcv.addr, filepath.Join(dir, "state"))
	spool := filepath.Join(dir, "spool")
	os.Mkdir(spool, 0o700)
	first := recordInto(t, b, spool, "4s")
	run(t, "uploadbox", "upload", "--state", b.state, "--spool", spool)
	if left := spoolSegments(t, spool); len(left) != 0 {
		t.Fatalf("local copies left: %v", left)
	}

	// The backup, while serve runs.
	bak := filepath.Join(dir, "backups", "receiver.bak")
	os.Mkdir(filepath.Dir(bak), 0o700)
	cmd := exec.Command(filepath.Join(binDir, "uploadbox-receiver"), "backup", "--out", bak, "--data", rcv.data)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("backup: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	if !strings.Contains(stdout.String(), "database copied from the running server") || !strings.Contains(stdout.String(), "not in the backup: the uploaded segments") {
		t.Fatalf("backup printed:\n%s", stdout.String())
	}
	// serve generated the organisation key in the data directory: it is
	// in the backup, and said so.
	if !strings.Contains(stderr.String(), "WARNING: the backup holds the organisation private key org.key") {
		t.Fatalf("no warning about org.key on stderr: %q", stderr.String())
	}
	if st, err := os.Stat(bak); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v %v", st.Mode().Perm(), err)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(bak), ".*")); len(left) != 0 {
		t.Fatalf("temporary files left beside the backup: %v", left)
	}
	rcv.stop(t)

	restored := filepath.Join(dir, "restored")
	if out := run(t, "uploadbox-receiver", "restore", "--from", bak, "--data", restored); !strings.Contains(out, "restored ") {
		t.Fatalf("restore printed %q", out)
	}
	if msg := runFails(t, "uploadbox-receiver", "restore", "--from", bak, "--data", restored); !strings.Contains(msg, restored+" is not empty") {
		t.Fatalf("a restore into a non-empty directory: %s", msg)
	}
	for _, f := range []string{"ca.key", "receipt.key", "token.key", "server.key", "receiver.db", "org.key"} {
		if st, err := os.Stat(filepath.Join(restored, f)); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("restored %s: %v", f, err)
		}
	}

	// The restored receiver on the same store and address: the box
	// uploads to it as before.
	rcv2 := startReceiver(t, restored, rcv.addr, s3...)
	second := recordInto(t, b, spool, "4s")
	out := run(t, "uploadbox", "upload", "--state", b.state, "--spool", spool)
	if n := strings.Count(out, "committed "); n != second {
		t.Fatalf("upload to the restored receiver committed %d of %d segments:\n%s", n, second, out)
	}
	if left := spoolSegments(t, spool); len(left) != 0 {
		t.Fatalf("local copies left after uploading to the restored receiver: %v", left)
	}
	rs := recordings(t, rcv2.data)
	if len(rs) != 2 || rs[0].Segments != first || rs[1].Segments != second || !rs[0].Complete || !rs[1].Complete {
		t.Fatalf("the restored receiver lists %+v, want two complete recordings of %d and %d segments", rs, first, second)
	}
	var devs []struct {
		Name  string `json:"name"`
		State string `json:"state"`
	}
	if err := json.Unmarshal([]byte(run(t, "uploadbox-receiver", "devices", "list", "--data", rcv2.data, "--json")), &devs); err != nil || len(devs) != 1 || devs[0].Name != "room-9" {
		t.Fatalf("devices on the restored receiver: %+v %v", devs, err)
	}
	rcv2.stop(t)
	if out := run(t, "uploadbox-receiver", "audit", "verify", "--data", restored); !strings.Contains(out, "audit log OK") {
		t.Fatalf("audit verify on the restored receiver: %s", out)
	}
	// Without a server the command copies the database itself.
	var rep struct {
		Live    bool     `json:"live"`
		OrgKeys []string `json:"org_keys"`
		Files   []struct {
			Name   string `json:"name"`
			SHA256 string `json:"sha256"`
		} `json:"files"`
	}
	again := filepath.Join(dir, "backups", "offline.bak")
	if err := json.Unmarshal([]byte(run(t, "uploadbox-receiver", "backup", "--out", again, "--data", restored, "--json")), &rep); err != nil ||
		rep.Live || len(rep.OrgKeys) != 1 || len(rep.Files) < 8 || rep.Files[0].Name != "receiver.db" || len(rep.Files[0].SHA256) != 64 {
		t.Fatalf("backup --json of a stopped receiver: %+v %v", rep, err)
	}
}
