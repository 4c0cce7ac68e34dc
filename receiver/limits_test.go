package receiver

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/uploadbox/uploadbox/internal/audit"
)

// TestAuditGuard: at 90 % of the cap an alert is written; at the cap
// failures are dropped (counted) while other entries are still written;
// below the cap again failures are written and the drop count reported.
func TestAuditGuard(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	l, err := audit.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	g := &auditGuard{log: l, fails: audit.NewFailures(l, 0), max: 4000, slog: slog.New(slog.DiscardHandler)}
	fail := audit.Entry{Event: "viewer.login", Source: "192.0.2.1:1", Outcome: "denied"}
	size := func() int64 { st, _ := os.Stat(path); return st.Size() }
	for size() < 3600 {
		if _, err := l.Append(audit.Entry{Event: "viewer.login", Identity: "anna", Outcome: "ok", Detail: strings.Repeat("x", 100)}); err != nil {
			t.Fatal(err)
		}
	}
	g.Record(fail)
	log, _ := os.ReadFile(path)
	if !strings.Contains(string(log), `"event":"audit.size"`) {
		t.Fatal("no alert at 90 % of the cap")
	}
	for size() < 4000 {
		l.Append(audit.Entry{Event: "viewer.login", Identity: "anna", Outcome: "ok", Detail: strings.Repeat("x", 100)})
	}
	before := size()
	for range 100 {
		fail.Source = "192.0.2.9:1" // a new source would be written in full
		if wrote, err := g.Record(fail); wrote || err != nil {
			t.Fatalf("a failure at the cap: wrote %v, %v", wrote, err)
		}
	}
	log, _ = os.ReadFile(path)
	if !strings.Contains(string(log), `"event":"audit.full"`) {
		t.Fatal("no alert at the cap")
	}
	if grown := size() - before; grown > 600 {
		t.Fatalf("the log grew by %d bytes at the cap: failures were not dropped", grown)
	}
	// Successes are never dropped.
	if _, err := l.Append(audit.Entry{Event: "viewer.login", Identity: "anna", Outcome: "ok"}); err != nil {
		t.Fatal(err)
	}
	g.max = 1 << 20 // as if retention had pruned the log
	fail.Source = "192.0.2.10:1"
	if wrote, err := g.Record(fail); !wrote || err != nil {
		t.Fatalf("a failure below the cap again: wrote %v, %v", wrote, err)
	}
	log, _ = os.ReadFile(path)
	if !strings.Contains(string(log), `100 failed-authentication entries were dropped`) {
		t.Fatalf("no audit.resumed entry with the drop count:\n%s", log)
	}
}
