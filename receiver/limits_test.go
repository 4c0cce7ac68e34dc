package receiver

import (
	"encoding/json"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/receiver/internal/kvtest"
	"github.com/uploadbox/uploadbox/receiver/kv"
	"github.com/uploadbox/uploadbox/receiver/pgaudit"
)

// TestAuditGuard: at 90 % of the cap an alert is written; at the cap
// failures are dropped (counted) while other entries are still written;
// below the cap again failures are written and the drop count reported.
func TestAuditGuard(t *testing.T) {
	chains := map[string]func(t *testing.T) auditChain{
		"file": func(t *testing.T) auditChain {
			l, err := audit.Open(filepath.Join(t.TempDir(), "audit.jsonl"))
			if err != nil {
				t.Fatal(err)
			}
			return l
		},
	}
	if !testing.Short() {
		// The cap counts the entries' bytes in the table all receivers
		// on the database share.
		chains["postgres"] = func(t *testing.T) auditChain {
			db, err := kv.OpenPostgres(t.Context(), kvtest.URL(t))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			return pgaudit.New(db.Pool(), "test/guard")
		}
	}
	for name, open := range chains {
		t.Run(name, func(t *testing.T) { testAuditGuard(t, open(t)) })
	}
}

// AuditLines is es as JSON lines, as the audit file holds them (the
// external tests use it too).
func AuditLines(es []audit.Entry) string {
	var b strings.Builder
	for _, e := range es {
		line, _ := json.Marshal(e)
		b.Write(append(line, '\n'))
	}
	return b.String()
}

func testAuditGuard(t *testing.T, l auditChain) {
	g := &auditGuard{log: l, fails: audit.NewFailures(l, 0), max: 4000, slog: slog.New(slog.DiscardHandler)}
	fail := audit.Entry{Event: "viewer.login", Source: "192.0.2.1:1", Outcome: "denied"}
	size := func() int64 {
		n, err := l.Size()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	text := func() string {
		es, err := l.Entries(audit.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		return AuditLines(es)
	}
	for size() < 3600 {
		if _, err := l.Append(audit.Entry{Event: "viewer.login", Identity: "anna", Outcome: "ok", Detail: strings.Repeat("x", 100)}); err != nil {
			t.Fatal(err)
		}
	}
	g.Record(fail)
	if !strings.Contains(text(), `"event":"audit.size"`) {
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
	if !strings.Contains(text(), `"event":"audit.full"`) {
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
	if log := text(); !strings.Contains(log, `100 failed-authentication entries were dropped`) {
		t.Fatalf("no audit.resumed entry with the drop count:\n%s", log)
	}
}
