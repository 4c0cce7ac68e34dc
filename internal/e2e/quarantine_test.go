package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

type heldSegment struct {
	ID      string `json:"id"`
	State   string `json:"state"`
	File    string `json:"file"`
	Status  int    `json:"status"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

type queueHeld struct {
	Count   int            `json:"count"`
	ByState map[string]int `json:"by_state"`
	Held    []heldSegment  `json:"held"`
}

// waitQueue polls the daemon's queue until ok says so.
func waitQueue(t *testing.T, d boxDirs, within time.Duration, what string, ok func(queueHeld) bool) queueHeld {
	t.Helper()
	var q queueHeld
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		q = queueHeld{}
		ctl(t, d, &q, "queue")
		if ok(q) {
			return q
		}
	}
	t.Fatalf("%s: not within %s; queue %+v", what, within, q)
	return q
}

// recordSession starts a session of length and waits until it ended.
func recordSession(t *testing.T, d boxDirs, length string) sessionStatus {
	t.Helper()
	var st sessionStatus
	ctl(t, d, &st, "session", "start", "--for", length)
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		ctl(t, d, &st, "session", "status")
		if !st.Active {
			break
		}
	}
	if st.Active || st.Segments < 1 {
		t.Fatalf("session did not end with segments: %+v", st)
	}
	return st
}

// runCode runs a command and returns its stdout, stderr and exit code.
func runCode(t *testing.T, name string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, name), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return stdout.String(), stderr.String(), 0
	case errors.As(err, &ee):
		return stdout.String(), stderr.String(), ee.ExitCode()
	}
	t.Fatalf("%s %v: %v", name, args, err)
	return "", "", -1
}

type auditLine struct {
	Event    string `json:"event"`
	Identity string `json:"identity"`
	By       string `json:"by"`
	Outcome  string `json:"outcome"`
	Detail   string `json:"detail"`
}

// decidedBy reports whether the entry names uid as who acted, with the
// user name: "uid:N(name)".
func (e auditLine) decidedBy(uid string) bool {
	return strings.HasPrefix(e.By, uid+"(") && strings.HasSuffix(e.By, ")")
}

// auditEvents returns the box's audit entries of event.
func auditEvents(t *testing.T, path, event string) []auditLine {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []auditLine
	for _, l := range bytes.Split(data, []byte("\n")) {
		var e auditLine
		if json.Unmarshal(l, &e) == nil && e.Event == event {
			out = append(out, e)
		}
	}
	return out
}

// waitAudit waits until the box's audit log holds n entries of event.
func waitAudit(t *testing.T, path, event string, n int) []auditLine {
	t.Helper()
	var es []auditLine
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if es = auditEvents(t, path, event); len(es) >= n {
			break
		}
	}
	if len(es) != n {
		t.Errorf("%d %s audit entries, want %d: %+v", len(es), event, n, es)
	}
	return es
}

func metricAt(t *testing.T, d boxDirs, name string, want float64) {
	t.Helper()
	if v := metricValue(t, d.metrics, name); v != want {
		t.Errorf("%s = %v, want %v", name, v, want)
	}
}

// TestQuarantinedSegmentDoesNotBlockQueue: the receiver already stores
// other bytes for the oldest segment in the daemon's spool (the same
// device sealed segment 0 of the same recording twice), so it refuses that
// segment's commit with 409 every time. The real daemon quarantines it
// after its bounded fresh uploads, the segments recorded after it upload,
// `uploadbox queue` shows it with the receiver's answer, the metric counts
// it, diag's spool check fails with the remedy, discard without --yes
// deletes nothing, `queue retry` puts it back (and it is refused and
// quarantined again), and `queue discard --yes` deletes it; both audited
// with the caller's uid. Before quarantine existed the 409 blocked every
// later segment, so the first wait below timed out.
func TestQuarantinedSegmentDoesNotBlockQueue(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon with a receiver; skipped under -short")
	}
	dir := t.TempDir()
	b := setupBox(t, dir, nil)

	// Two different segments 0 of one recording, both sealed by this box.
	var id [16]byte
	rand.Read(id[:])
	rec := hex.EncodeToString(id[:])
	name := rec + "-000000.ubx"
	sealAs := func(content, out string) {
		in := filepath.Join(dir, content)
		if err := os.WriteFile(in, bytes.Repeat([]byte(content), 5000), 0o600); err != nil {
			t.Fatal(err)
		}
		run(t, "uploadbox", "seal", "--state", b.state, "--recording-id", rec, "--sequence", "0", "-o", out, in)
	}
	first := filepath.Join(dir, "first")
	os.Mkdir(first, 0o700)
	sealAs("first bytes", filepath.Join(first, name))
	out := run(t, "uploadbox", "upload", "--state", b.state, "--spool", first)
	if !strings.Contains(out, "committed "+name) {
		t.Fatalf("the first segment 0 was not stored: %s", out)
	}

	d := writeBoxConfig(t, dir, b.state, "")
	os.MkdirAll(d.spool, 0o700)
	conflict := filepath.Join(d.spool, name)
	sealAs("other bytes", conflict)
	old := time.Now().Add(-time.Hour) // the oldest in the queue
	os.Chtimes(conflict, old, old)
	startDaemon(t, d)

	// The planted recording has no last segment, so at start the daemon
	// closes it as crashed with an empty end segment 1; that one links to
	// the "other bytes" segment 0 and is refused too (chain).
	endName := rec + "-000001.ubx"
	st := recordSession(t, d, "5s")
	q := waitQueue(t, d, 90*time.Second, "the segments after the refused ones upload", func(q queueHeld) bool {
		return q.Count == 2 && q.ByState["quarantined"] == 2
	})
	rs := recordings(t, b.rcv.data)
	var later *recordingInfo
	for i := range rs {
		if rs[i].ID == st.Recording {
			later = &rs[i]
		}
	}
	if later == nil || later.Segments != st.Segments || !later.Complete {
		t.Fatalf("receiver has %+v, want recording %s complete with %d segments", rs, st.Recording, st.Segments)
	}
	if len(q.Held) != 2 {
		t.Fatalf("queue held %+v, want the two quarantined segments", q.Held)
	}
	h, end := q.Held[0], q.Held[1]
	if h.ID != name {
		h, end = end, h
	}
	if end.ID != endName || end.State != "quarantined" || end.Status != 409 || end.Reason != "chain" {
		t.Fatalf("held end segment %+v", end)
	}
	// Until the receiver sends reasons, the box falls back on the 409:
	// fresh uploads, bounded, then quarantine. With a reason it is "exists".
	if h.ID != name || h.State != "quarantined" || h.Status != 409 || (h.Reason != "" && h.Reason != "exists") || h.Message == "" || h.File != conflict {
		t.Fatalf("held segment %+v", h)
	}
	if _, err := os.Stat(conflict); err != nil {
		t.Fatalf("the quarantined file is gone: %v", err)
	}
	text := run(t, "uploadbox", "queue", "--socket", d.socket)
	t.Logf("uploadbox queue:\n%s", text)
	for _, want := range []string{"2 quarantined", name, "HTTP 409", h.Message, "uploadbox queue retry ID", "uploadbox queue discard ID --yes"} {
		if !strings.Contains(text, want) {
			t.Errorf("uploadbox queue does not show %q:\n%s", want, text)
		}
	}
	metricAt(t, d, "uploadbox_quarantined_segments", 2)
	waitAudit(t, d.audit, "queue.quarantine", 2)

	// diag fails the spool check and says what to do.
	stdout, _, code := runCode(t, "uploadbox", "diag", "--config", d.config, "--check", "spool")
	t.Logf("uploadbox diag --check spool (exit %d):\n%s", code, stdout)
	if code != 2 || !strings.Contains(stdout, name) || !strings.Contains(stdout, "uploadbox queue retry "+name) || !strings.Contains(stdout, "uploadbox queue discard "+name+" --yes") {
		t.Errorf("diag --check spool: exit %d\n%s", code, stdout)
	}

	// Discard without --yes deletes nothing and says what it would delete.
	_, stderr, code := runCode(t, "uploadbox", "queue", "discard", name, "--socket", d.socket)
	t.Logf("uploadbox queue discard without --yes (exit %d): %s", code, stderr)
	if code != 2 || !strings.Contains(stderr, conflict) || !strings.Contains(stderr, "--yes") {
		t.Errorf("discard without --yes: exit %d: %s", code, stderr)
	}
	if _, err := os.Stat(conflict); err != nil {
		t.Fatalf("discard without --yes deleted the file: %v", err)
	}
	// Neither command touches a segment that is not held.
	if _, stderr, code := runCode(t, "uploadbox", "queue", "retry", rec+"-000099", "--socket", d.socket); code == 0 || !strings.Contains(stderr, "not in the queue") {
		t.Errorf("retry of an unknown segment: exit %d: %s", code, stderr)
	}

	// Retry: back in the queue, refused again, quarantined again.
	uid := "uid:" + strconv.Itoa(os.Getuid())
	out = run(t, "uploadbox", "queue", "retry", strings.TrimSuffix(name, ".ubx"), "--socket", d.socket)
	if !strings.Contains(out, name+" is sealed again") {
		t.Errorf("queue retry: %s", out)
	}
	waitQueue(t, d, 60*time.Second, "the retried segment is refused and quarantined again", func(q queueHeld) bool {
		return q.ByState["quarantined"] == 2
	})
	waitAudit(t, d.audit, "queue.quarantine", 3)
	if es := auditEvents(t, d.audit, "queue.retry"); len(es) != 1 || !es[0].decidedBy(uid) || !strings.Contains(es[0].Detail, name) {
		t.Errorf("queue.retry audit entries %+v, want one by %s naming %s", es, uid, name)
	}

	// Discard --yes: the file is deleted, the queue is empty, diag passes.
	out = run(t, "uploadbox", "queue", "discard", name, "--yes", "--socket", d.socket)
	if !strings.Contains(out, "discarded "+name) {
		t.Errorf("queue discard --yes: %s", out)
	}
	if _, err := os.Stat(conflict); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the discarded file is still there: %v", err)
	}
	run(t, "uploadbox", "queue", "discard", endName, "--yes", "--socket", d.socket)
	waitQueue(t, d, 10*time.Second, "the queue is empty after the discard", func(q queueHeld) bool { return q.Count == 0 })
	metricAt(t, d, "uploadbox_quarantined_segments", 0)
	if es := auditEvents(t, d.audit, "queue.discard"); len(es) != 2 || !es[0].decidedBy(uid) || es[0].Outcome != "deleted" || !strings.Contains(es[0].Detail, conflict) || !strings.Contains(es[0].Detail, " blake3=") {
		t.Errorf("queue.discard audit entries %+v, want one by %s naming %s and the segment hash", es, uid, conflict)
	}
	if stdout, _, code := runCode(t, "uploadbox", "diag", "--config", d.config, "--check", "spool"); code != 0 {
		t.Errorf("diag --check spool after the discard: exit %d\n%s", code, stdout)
	}
	if out := run(t, "uploadbox", "consent", "audit", "--verify", "--file", d.audit); !strings.Contains(out, "OK") {
		t.Errorf("box audit log: %s", out)
	}
}

// TestQuarantineForeignKeyThenRetry: segments sealed with one device key
// and uploaded with another enrollment's certificate are refused by the
// real receiver with 403 at commit (signed by another device). They are
// quarantined, the segments the current key records still upload, and
// once the box runs with the key that sealed them again, `queue retry`
// uploads them.
func TestQuarantineForeignKeyThenRetry(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon with a receiver; skipped under -short")
	}
	dir := t.TempDir()
	b := setupBox(t, dir, nil)
	other := enrollBox(t, b.rcv, "room-8", b.rcv.addr, filepath.Join(dir, "state-8"))

	// Record with room-7's key while uploads are off, so the daemon
	// indexes the segments as sealed by the key it then holds.
	d := writeBoxConfig(t, dir, b.state, "")
	cfg, _ := os.ReadFile(d.config)
	off := bytes.Replace(cfg, []byte("upload:\n"), []byte("upload:\n  enabled: false\n"), 1)
	os.WriteFile(d.config, off, 0o600)
	p := startDaemon(t, d)
	first := recordSession(t, d, "4s")
	stop := func(p *daemonProc) {
		p.cmd.Process.Signal(syscall.SIGTERM)
		<-p.done
	}
	stop(p)

	// The box now runs as room-8: the receiver refuses room-7's segments.
	os.WriteFile(d.config, bytes.Replace(cfg, []byte("state_dir: "+b.state+"\n"), []byte("state_dir: "+other.state+"\n"), 1), 0o600)
	p = startDaemon(t, d)
	second := recordSession(t, d, "4s")
	q := waitQueue(t, d, 90*time.Second, "room-7's segments are quarantined and room-8's upload", func(q queueHeld) bool {
		return q.Count == first.Segments && q.ByState["quarantined"] == first.Segments
	})
	for _, h := range q.Held {
		if h.Status != 403 || (h.Reason != "" && h.Reason != "foreign-key") || !strings.HasPrefix(h.ID, first.Recording) {
			t.Errorf("held %+v, want a 403 foreign-key refusal of recording %s", h, first.Recording)
		}
	}
	metricAt(t, d, "uploadbox_quarantined_segments", float64(first.Segments))
	byID := map[string]recordingInfo{}
	for _, r := range recordings(t, b.rcv.data) {
		byID[r.ID] = r
	}
	if r := byID[second.Recording]; r.Segments != second.Segments || !r.Complete {
		t.Fatalf("room-8's recording %s: %+v, want %d segments", second.Recording, r, second.Segments)
	}
	if _, ok := byID[first.Recording]; ok {
		t.Fatalf("room-7's recording was stored under room-8")
	}
	stop(p)

	// Back to room-7: each retried segment uploads.
	os.WriteFile(d.config, cfg, 0o600)
	startDaemon(t, d)
	for _, h := range q.Held {
		run(t, "uploadbox", "queue", "retry", h.ID, "--socket", d.socket)
	}
	waitDrained(t, d, 60*time.Second)
	byID = map[string]recordingInfo{}
	for _, r := range recordings(t, b.rcv.data) {
		byID[r.ID] = r
	}
	if r := byID[first.Recording]; r.Segments != first.Segments || !r.Complete {
		t.Fatalf("room-7's recording %s after retry: %+v, want %d segments", first.Recording, r, first.Segments)
	}
	metricAt(t, d, "uploadbox_quarantined_segments", 0)
	if n := len(auditEvents(t, d.audit, "queue.retry")); n != first.Segments {
		t.Errorf("%d queue.retry audit entries, want %d", n, first.Segments)
	}
}

// TestRevokedBoxKeepsQueueAndAlerts: when the receiver refuses the box
// itself (its device revoked: the real receiver refuses the certificate in
// the TLS handshake), no segment is quarantined: every one stays queued on
// disk, `uploadbox status` shows an ALERT and the metric says so.
func TestRevokedBoxKeepsQueueAndAlerts(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon with a receiver; skipped under -short")
	}
	dir := t.TempDir()
	b := setupBox(t, dir, nil)
	d := writeBoxConfig(t, dir, b.state, "")
	startDaemon(t, d)
	run(t, "uploadbox-receiver", "devices", "revoke", "room-7", "--data", b.rcv.data)
	st := recordSession(t, d, "4s")

	var ds struct {
		UploadAlert string `json:"upload_alert"`
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline) && ds.UploadAlert == ""; time.Sleep(200 * time.Millisecond) {
		ctl(t, d, &ds, "status")
	}
	if !strings.Contains(ds.UploadAlert, "refuses this box") {
		t.Fatalf("status upload_alert = %q, want the receiver refusing the box", ds.UploadAlert)
	}
	if out := run(t, "uploadbox", "status", "--socket", d.socket); !strings.Contains(out, "ALERT:") || !strings.Contains(out, "refuses this box") {
		t.Errorf("uploadbox status does not show the alert:\n%s", out)
	}
	metricAt(t, d, "uploadbox_upload_device_refused", 1)
	var q queueHeld
	ctl(t, d, &q, "queue")
	if q.Count != st.Segments || q.ByState["quarantined"] != 0 || len(q.Held) != 0 {
		t.Fatalf("queue %+v, want all %d segments queued and none quarantined", q, st.Segments)
	}
	metricAt(t, d, "uploadbox_quarantined_segments", 0)
	if n := len(spoolSegments(t, d.spool)); n != st.Segments {
		t.Fatalf("%d segment files on the box, %d were sealed", n, st.Segments)
	}
}
