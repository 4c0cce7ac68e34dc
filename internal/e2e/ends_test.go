package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// endedInfo is one line of `recordings list --json` with its end.
type endedInfo struct {
	ID        string `json:"id"`
	Segments  int    `json:"segments"`
	Complete  bool   `json:"complete"`
	Ended     string `json:"ended"`
	Missing   int    `json:"missing"`
	Truncated int    `json:"truncated"`
}

func endedRecordings(t *testing.T, data string) map[string]endedInfo {
	t.Helper()
	var rs []endedInfo
	out := run(t, "uploadbox-receiver", "recordings", "list", "--data", data, "--json")
	if err := json.Unmarshal([]byte(out), &rs); err != nil {
		t.Fatalf("recordings list --json: %v\n%s", err, out)
	}
	m := map[string]endedInfo{}
	for _, r := range rs {
		m[r.ID] = r
	}
	return m
}

// waitSessionEnd polls `session status` until the session is over.
func waitSessionEnd(t *testing.T, d boxDirs, within time.Duration) sessionStatus {
	t.Helper()
	var st sessionStatus
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		ctl(t, d, &st, "session", "status")
		if !st.Active {
			return st
		}
	}
	t.Fatalf("the session still runs after %s: %+v", within, st)
	return st
}

func wantEnded(t *testing.T, rs map[string]endedInfo, id string, complete bool, ended string) endedInfo {
	t.Helper()
	r, ok := rs[id]
	if !ok {
		t.Fatalf("recording %s is not on the receiver: %+v", id, rs)
	}
	if r.Complete != complete || r.Ended != ended {
		t.Errorf("recording %s: complete %v, ended %q; want complete %v, ended %q (%+v)", id, r.Complete, r.Ended, complete, ended, r)
	}
	return r
}

// TestRecordingsSayWhyTheyEnded: with the real daemon and receiver, a
// session whose time is up, one stopped by a command and one stopped by a
// full spool are each listed complete, with the reason the box signed.
func TestRecordingsSayWhyTheyEnded(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon with a receiver; skipped under -short")
	}
	dir := t.TempDir()
	b := setupBox(t, dir, nil)
	d := writeBoxConfig(t, dir, b.state, "")
	p := startDaemon(t, d)

	var st sessionStatus
	ctl(t, d, &st, "session", "start", "--for", "5s")
	timeUp := waitSessionEnd(t, d, 30*time.Second)

	ctl(t, d, &st, "session", "start", "--for", "60s")
	for deadline := time.Now().Add(30 * time.Second); st.Segments < 1 && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		ctl(t, d, &st, "session", "status")
	}
	ctl(t, d, nil, "session", "stop")
	stopped := waitSessionEnd(t, d, 30*time.Second)
	waitDrained(t, d, 60*time.Second)

	rs := endedRecordings(t, b.rcv.data)
	wantEnded(t, rs, timeUp.Recording, true, "session time up")
	wantEnded(t, rs, stopped.Recording, true, "stopped")
	human := run(t, "uploadbox-receiver", "recordings", "list", "--data", b.rcv.data)
	if !strings.Contains(human, "ENDED") || !strings.Contains(human, "session time up") {
		t.Errorf("recordings list does not show the end:\n%s", human)
	}

	// A full spool: uploads off and a 2 MiB spool, so recording stops on
	// its own; then uploads on again and everything arrives.
	good, _ := os.ReadFile(d.config)
	full := bytes.Replace(good, []byte("  min_free: 0\n"), []byte("  min_free: 0\n  max_size: 2MiB\n"), 1)
	full = bytes.Replace(full, []byte("upload:\n"), []byte("upload:\n  enabled: false\n"), 1)
	os.WriteFile(d.config, full, 0o600)
	p.cmd.Process.Signal(syscall.SIGHUP)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && strings.Count(p.log(), "config reloaded") < 1; {
		time.Sleep(100 * time.Millisecond)
	}
	ctl(t, d, &st, "session", "start", "--for", "60s")
	spoolFull := waitSessionEnd(t, d, 60*time.Second)
	if !strings.Contains(spoolFull.Alert, "spool full") {
		t.Fatalf("the session did not stop for a full spool: %+v", spoolFull)
	}
	os.WriteFile(d.config, good, 0o600)
	p.cmd.Process.Signal(syscall.SIGHUP)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && strings.Count(p.log(), "config reloaded") < 2; {
		time.Sleep(100 * time.Millisecond)
	}
	waitDrained(t, d, 60*time.Second)
	rs = endedRecordings(t, b.rcv.data)
	r := wantEnded(t, rs, spoolFull.Recording, true, "spool full")
	if r.Segments != spoolFull.Segments || r.Truncated != 0 || r.Missing != 0 {
		t.Errorf("recording stopped by a full spool: %+v, want the %d segments the box sealed, none truncated or missing", r, spoolFull.Segments)
	}
}
