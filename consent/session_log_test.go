package consent

import (
	"bytes"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/internal/audit"
)

// TestSessionEndedLogsOnlyASession: the daemon ends the session at every
// start; "recording session ended" is logged only when one ran.
func TestSessionEndedLogsOnlyASession(t *testing.T) {
	dir := t.TempDir()
	alog, err := audit.Open(filepath.Join(dir, "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	l, err := Open(filepath.Join(dir, "consent.db"), Options{Audit: alog, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.SessionEnded(ByDaemon)
	if n := strings.Count(logs.String(), "recording session ended"); n != 0 {
		t.Fatalf("ending no session logged %d times:\n%s", n, logs.String())
	}
	l.SessionStarted(time.Now().Add(time.Hour))
	l.SessionEnded(ByDaemon)
	l.SessionEnded(ByDaemon)
	if n := strings.Count(logs.String(), "recording session ended"); n != 1 {
		t.Fatalf("one session ended, logged %d times:\n%s", n, logs.String())
	}
}
