package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// lifeRecording is a line of `recordings list --json` with its times and
// lifecycle.
type lifeRecording struct {
	ID         string    `json:"id"`
	Device     string    `json:"device"`
	Segments   int       `json:"segments"`
	Bytes      int64     `json:"bytes"`
	Start      time.Time `json:"start"`
	End        time.Time `json:"end"`
	Duration   float64   `json:"duration_seconds"`
	Keys       []string  `json:"keys"`
	Deleted    time.Time `json:"deleted"`
	DeletedBy  string    `json:"deleted_by"`
	PurgeAfter time.Time `json:"purge_after"`
}

func lifeList(t *testing.T, data string, extra ...string) []lifeRecording {
	t.Helper()
	var rs []lifeRecording
	out := run(t, "uploadbox-receiver", append([]string{"recordings", "list", "--data", data, "--json"}, extra...)...)
	if err := json.Unmarshal([]byte(out), &rs); err != nil {
		t.Fatalf("recordings list --json: %v\n%s", err, out)
	}
	return rs
}

// scrubMetrics reads the scrub's Prometheus series from the admin socket.
func scrubMetrics(t *testing.T, data string) string {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", filepath.Join(data, "admin.sock"))
	}}}
	resp, err := c.Get("http://receiver/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestRecordingsLifecycleAndScrub, through the real binaries: a recorded
// and uploaded lesson is listed with its room, start and duration; scrub
// passes, then finds a byte flipped in a stored object: the server's
// background scrub in its metrics, the command with exit 1 (through the
// running server and without it); delete
// hides the recording from list and export, restore brings it back.
func TestRecordingsLifecycleAndScrub(t *testing.T) {
	if testing.Short() {
		t.Skip("records and uploads; skipped under -short")
	}
	dir := t.TempDir()
	// The background scrub runs every second here (daily by default).
	b := setupBoxWith(t, dir, []string{"--scrub-every", "1s"}, nil)
	data := b.rcv.data
	spool := filepath.Join(dir, "spool")
	os.Mkdir(spool, 0o700)
	before := time.Now()
	sealed := recordInto(t, b, spool, "6s")
	run(t, "uploadbox", "upload", "--state", b.state, "--spool", spool)

	rs := lifeList(t, data)
	if len(rs) != 1 || rs[0].Segments != sealed {
		t.Fatalf("recordings list: %+v, want one recording of %d segments", rs, sealed)
	}
	r := rs[0]
	// The box's clock is this machine's: the recording started after
	// `before`; 6 s of media in 2 s segments lasts 6 s, estimated from the
	// last segment's size to within a segment.
	if r.Device != "room-7" || r.Start.Before(before.Add(-time.Second)) || r.Duration < 4.5 || r.Duration > 7.5 || !r.End.After(r.Start) {
		t.Fatalf("recording listed as %+v: want room-7, started after %s, about 6 s", r, before)
	}
	human := run(t, "uploadbox-receiver", "recordings", "list", "--data", data)
	row := regexp.MustCompile(r.ID + `\s+room-7\s+\d{4}-\d\d-\d\d \d\d:\d\d\s+[4-7]s\s+` + `\d+\s+[0-9.]+ (KiB|MiB)\s`)
	if !row.MatchString(human) {
		t.Fatalf("recordings list does not show room, start, duration and a human size:\n%s", human)
	}

	if out, stderr, code := cpRun(t, "uploadbox-receiver", "recordings", "scrub", "--all", "--data", data); code != 0 || !strings.Contains(out, "0 damaged") {
		t.Fatalf("scrub of intact segments: exit %d\n%s%s", code, out, stderr)
	}
	// Flip one byte in the middle of a stored object.
	obj := filepath.Join(data, "store", filepath.FromSlash(r.Keys[1]))
	seg, err := os.ReadFile(obj)
	if err != nil {
		t.Fatal(err)
	}
	seg[len(seg)/2] ^= 0x01
	if err := os.WriteFile(obj, seg, 0o600); err != nil {
		t.Fatal(err)
	}
	// The server's own scrub finds it and says so in its metrics.
	cpWait(t, time.Minute, "the background scrub's metrics", func() bool {
		return strings.Contains(scrubMetrics(t, data), "uploadbox_receiver_scrub_damaged_segments 1\n")
	})
	for _, args := range [][]string{{"--all"}, {r.ID}} {
		out, stderr, code := cpRun(t, "uploadbox-receiver", append([]string{"recordings", "scrub", "--data", data}, args...)...)
		if code != 1 || !strings.Contains(out, "DAMAGED "+r.ID+" segment 1 ") || !strings.Contains(out, r.Keys[1]) || !strings.Contains(out, "BLAKE3") || !strings.Contains(out, "1 damaged") {
			t.Fatalf("scrub %v of a flipped byte: exit %d, want 1 naming segment 1\n%s%s", args, code, out, stderr)
		}
	}
	m := scrubMetrics(t, data)
	if !strings.Contains(m, "uploadbox_receiver_scrub_damaged_segments 1\n") || strings.Contains(m, "uploadbox_receiver_scrub_last_run_timestamp_seconds 0\n") {
		t.Fatalf("scrub metrics after a damaged scrub:\n%s", m)
	}

	// Delete hides it from list and export; restore brings it back.
	if out := run(t, "uploadbox-receiver", "recordings", "delete", r.ID, "--data", data); !strings.Contains(out, "restored until") {
		t.Fatalf("recordings delete: %s", out)
	}
	if rs := lifeList(t, data); len(rs) != 0 {
		t.Fatalf("a deleted recording is listed: %+v", rs)
	}
	del := lifeList(t, data, "--deleted")
	if len(del) != 1 || del[0].DeletedBy != "admin" || del[0].PurgeAfter.Sub(del[0].Deleted) != 90*24*time.Hour {
		t.Fatalf("recordings list --deleted: %+v, want it, purged 90 days after its deletion", del)
	}
	human = run(t, "uploadbox-receiver", "recordings", "list", "--deleted", "--data", data)
	if !regexp.MustCompile(`PURGE AFTER\n` + r.ID + `\s+room-7\s.*\sadmin\s+` + del[0].PurgeAfter.Local().Format("2006-01-02 15:04")).MatchString(human) {
		t.Fatalf("recordings list --deleted does not show who deleted it and when it is purged:\n%s", human)
	}
	// Nothing is due: the recording stays within its grace period.
	if out := run(t, "uploadbox-receiver", "recordings", "purge", "--data", data); !strings.Contains(out, "0 recordings deleted by retention; 0 purged") {
		t.Fatalf("recordings purge within the grace period: %s", out)
	}
	_, stderr, code := cpRun(t, "uploadbox-receiver", "recordings", "export", r.ID, "-o", filepath.Join(dir, "x.mp4"), "--identity", filepath.Join(data, "org.key"), "--data", data)
	if code == 0 || !strings.Contains(stderr, "recordings restore "+r.ID) {
		t.Fatalf("export of a deleted recording: exit %d\n%s", code, stderr)
	}
	run(t, "uploadbox-receiver", "recordings", "restore", r.ID, "--data", data)
	if rs := lifeList(t, data); len(rs) != 1 {
		t.Fatalf("a restored recording is not listed: %+v", rs)
	}

	// Without the server, scrub reads the data directory's store itself.
	b.rcv.stop(t)
	if out, stderr, code := cpRun(t, "uploadbox-receiver", "recordings", "scrub", "--all", "--data", data); code != 1 || !strings.Contains(out, "1 damaged") {
		t.Fatalf("scrub without the server: exit %d, want 1\n%s%s", code, out, stderr)
	}
	// Delete and restore open the database themselves without the server.
	run(t, "uploadbox-receiver", "recordings", "delete", r.ID, "--data", data)
	if del := lifeList(t, data, "--deleted"); len(del) != 1 || len(lifeList(t, data)) != 0 {
		t.Fatalf("delete without the server: deleted list %+v", del)
	}
	run(t, "uploadbox-receiver", "recordings", "restore", r.ID, "--data", data)
	if rs := lifeList(t, data); len(rs) != 1 {
		t.Fatalf("restore without the server: %+v", rs)
	}
	audit, _ := os.ReadFile(filepath.Join(data, "audit.jsonl"))
	for _, ev := range []string{`"event":"recording.scrub"`, `"event":"recording.delete"`, `"event":"recording.restore"`} {
		if !strings.Contains(string(audit), ev) {
			t.Errorf("audit log has no %s entry", ev)
		}
	}
}
