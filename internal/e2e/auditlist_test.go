package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// listedEvents is the events of an `audit list --json` answer.
func listedEvents(t *testing.T, out string) []string {
	t.Helper()
	var es []auditEntry
	if err := json.Unmarshal([]byte(out), &es); err != nil {
		t.Fatalf("audit list --json printed %q: %v", out, err)
	}
	evs := []string{}
	for _, e := range es {
		evs = append(evs, e.Event)
	}
	return evs
}

// TestBoxAuditList (issue 14, observation 6): `uploadbox audit list`
// selects the box's audit entries by type and time, through the daemon
// and from the file alike, and `uploadbox audit verify --json` reports
// the same log.
func TestBoxAuditList(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon; skipped under -short")
	}
	dir := t.TempDir()
	b := setupBox(t, dir, nil)
	d := writeBoxConfig(t, dir, b.state, "")
	startDaemon(t, d)
	ctl(t, d, nil, "session", "start", "--for", "1h")
	ctl(t, d, nil, "session", "stop")

	sock := []string{"--socket", d.socket, "--json"}
	list := func(args ...string) []string {
		t.Helper()
		return listedEvents(t, run(t, "uploadbox", append(append([]string{"audit", "list"}, args...), sock...)...))
	}
	if got := list("--type", "session"); strings.Join(got, " ") != "session.start session.stop" {
		t.Fatalf("--type session: %q", got)
	}
	if got := list("--type", "stop"); strings.Join(got, " ") != "session.stop" {
		t.Fatalf("--type stop: %q", got)
	}
	all := list()
	if len(all) < 2 || strings.Join(list("--since", "1h"), " ") != strings.Join(all, " ") {
		t.Fatalf("--since 1h differs from all: %q", all)
	}
	future := time.Now().Add(48 * time.Hour).Format(time.DateOnly)
	if got := list("--since", future); len(got) != 0 {
		t.Fatalf("--since %s: %q", future, got)
	}
	fromFile := listedEvents(t, run(t, "uploadbox", "audit", "list", "--file", d.audit, "--type", "session", "--json"))
	if strings.Join(fromFile, " ") != "session.start session.stop" {
		t.Fatalf("--file: %q", fromFile)
	}
	table := run(t, "uploadbox", "audit", "list", "--type", "session", "--socket", d.socket)
	if lines := strings.Split(strings.TrimSpace(table), "\n"); len(lines) != 3 || !strings.Contains(lines[0], "EVENT") || !strings.Contains(lines[2], "session.stop") {
		t.Fatalf("table:\n%s", table)
	}
	if msg := runFails(t, "uploadbox", "audit", "list", "--since", "yesterday", "--socket", d.socket); !strings.Contains(msg, `--since "yesterday"`) {
		t.Fatalf("a bad --since: %s", msg)
	}

	var rep struct {
		Entries int `json:"entries"`
		Last    uint64
	}
	if err := json.Unmarshal([]byte(run(t, "uploadbox", "audit", "verify", "--socket", d.socket, "--json")), &rep); err != nil || rep.Entries != len(all) {
		t.Fatalf("audit verify --json: %+v %v (list has %d)", rep, err, len(all))
	}
}
