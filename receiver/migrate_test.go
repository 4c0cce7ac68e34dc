package receiver_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/receiver/internal/kvtest"
)

// TestMigrateRefusesBrokenAuditChain: a bbolt receiver whose audit log
// was edited is not migrated (nothing changes: the bbolt file and the
// audit file stay, the database gets no state), and once the log is put
// back it migrates, the audit file kept renamed.
func TestMigrateRefusesBrokenAuditChain(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL; skipped under -short")
	}
	data := newData(t)
	path := filepath.Join(data, receiver.AuditFile)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(path, []byte(strings.Replace(string(good), `"detail":"token expires`, `"detail":"token expired`, 1)), 0o600)
	url := kvtest.URL(t)
	_, err = receiver.Migrate(t.Context(), data, url)
	if err == nil || !strings.Contains(err.Error(), "does not verify, so it is not copied (nothing was changed)") || !strings.Contains(err.Error(), "entry hash does not match its content (edited)") {
		t.Fatalf("migrate with an edited audit log: %v", err)
	}
	for _, f := range []string{receiver.DBFile, receiver.AuditFile} {
		if _, err := os.Stat(filepath.Join(data, f)); err != nil {
			t.Fatalf("%s after a refused migrate: %v", f, err)
		}
	}
	os.WriteFile(path, good, 0o600)
	lines := strings.Count(string(good), "\n")
	rep, err := receiver.Migrate(t.Context(), data, url)
	if err != nil || rep.Audit == nil || rep.Audit.Entries != lines || rep.Audit.KeptAs != path+receiver.MigratedSuffix {
		t.Fatalf("migrate: %+v %v", rep, err)
	}
	v, err := receiver.VerifyAudit(data, url)
	if err != nil || v.Entries != lines {
		t.Fatalf("verify the migrated chain: %+v %v", v, err)
	}
}
