package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/crypto"
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

// enrolledDaemon starts a receiver, enrolls a box and runs its daemon.
func enrolledDaemon(t *testing.T) (enrolled, boxDirs, *daemonProc) {
	t.Helper()
	dir := t.TempDir()
	b := setupBox(t, dir, nil)
	d := writeBoxConfig(t, dir, b.state, "")
	return b, d, startDaemon(t, d)
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
	b, d, p := enrolledDaemon(t)

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
	if !strings.Contains(spoolFull.Error, "spool full") || spoolFull.Alert == "" {
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

// TestCrashedRecordingIsClosed: the daemon is killed in the middle of a
// session; at its next start it seals the recording's end as "box
// crashed", and the receiver lists the recording complete (every segment
// the box sealed, the cut one TRUNCATED) with that reason.
func TestCrashedRecordingIsClosed(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon with a receiver; skipped under -short")
	}
	b, d, p := enrolledDaemon(t)
	var st sessionStatus
	ctl(t, d, &st, "session", "start", "--for", "60s")
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		var now sessionStatus
		ctl(t, d, &now, "session", "status")
		if now.Segments >= 2 {
			break
		}
	}
	time.Sleep(time.Second) // inside segment 2
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done

	p = startDaemon(t, d)
	waitDrained(t, d, 60*time.Second)
	rs := endedRecordings(t, b.rcv.data)
	r := wantEnded(t, rs, st.Recording, true, "box crashed")
	if r.Truncated != 1 || r.Missing != 0 || r.Segments < 4 {
		t.Errorf("crashed recording: %+v, want its sealed segments, the cut one truncated, and the end", r)
	}
	if !strings.Contains(p.log(), "recording end sealed") {
		t.Errorf("the daemon did not log the end it sealed")
	}
	audit, _ := os.ReadFile(d.audit)
	if !bytes.Contains(audit, []byte(`"recording.end"`)) || !bytes.Contains(audit, []byte("reason=box_crashed")) {
		t.Errorf("the box audit log lacks the recording.end entry:\n%s", audit)
	}
	// The empty end segment exports with the rest, and the recording plays.
	mp4 := filepath.Join(t.TempDir(), "crashed.mp4")
	exp := run(t, "uploadbox-receiver", "recordings", "export", st.Recording, "-o", mp4, "--identity", filepath.Join(b.rcv.data, "org.key"), "--data", b.rcv.data)
	if !strings.Contains(exp, fmt.Sprintf("exported %d segments", r.Segments)) {
		t.Errorf("export: %s", exp)
	}
	if d := checkRecording(t, mp4, true); d < 4 {
		t.Errorf("the crashed recording exports %.2f s, want the two sealed segments and the cut one's prefix", d)
	}
	// A second start finds nothing left to close.
	p.cmd.Process.Signal(syscall.SIGTERM)
	<-p.done
	p = startDaemon(t, d)
	waitDrained(t, d, 30*time.Second)
	if n := strings.Count(p.log(), "recording end sealed"); n != 0 {
		t.Errorf("a clean restart sealed %d more ends", n)
	}
	if got := endedRecordings(t, b.rcv.data)[st.Recording]; got != r {
		t.Errorf("after a clean restart: %+v, was %+v", got, r)
	}
}

// TestRecordDurationEndsTimeUp: `uploadbox record --duration` seals its
// last segment with "session time up", prints it, and after `uploadbox
// upload` the receiver lists the recording complete with that end.
func TestRecordDurationEndsTimeUp(t *testing.T) {
	if testing.Short() {
		t.Skip("records and uploads; skipped under -short")
	}
	dir := t.TempDir()
	b := setupBox(t, dir, nil)
	spool := filepath.Join(dir, "spool")
	os.Mkdir(spool, 0o700)
	out := run(t, "uploadbox", "record", "--source", "test", "--size", "320x240", "--fps", "15", "--bitrate", "500k",
		"--duration", "3s", "--segment", "1s", "--state", b.state, "--out", spool)
	if !strings.Contains(out, "last, ended: session time up)") {
		t.Fatalf("record does not print the end of its last segment:\n%s", out)
	}
	// verify reads the end from the signed trailer, without any key.
	dev, err := crypto.ReadDeviceKeyFile(filepath.Join(b.state, "device.key"))
	if err != nil {
		t.Fatal(err)
	}
	segs, _ := filepath.Glob(filepath.Join(spool, "*.ubx"))
	slices.Sort(segs)
	if v := run(t, "uploadbox-receiver", "verify", "--device-pub", dev.Public().String(), segs[len(segs)-1]); !strings.Contains(v, "\nended:      session time up\n") {
		t.Errorf("verify of the last segment does not say how the recording ended:\n%s", v)
	}
	run(t, "uploadbox", "upload", "--state", b.state, "--spool", spool)
	rs := endedRecordings(t, b.rcv.data)
	if len(rs) != 1 {
		t.Fatalf("receiver has %+v, want one recording", rs)
	}
	for id := range rs {
		wantEnded(t, rs, id, true, "session time up")
	}
}
