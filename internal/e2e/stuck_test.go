package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	spoolpkg "github.com/uploadbox/uploadbox/uploader/spool"
)

// smallFS mounts a small filesystem of size bytes at dir: an ext4 image
// made by the test on a loop device, or tmpfs with a size limit where
// loop devices are missing. Both need root (the CI machine runs as root).
// The mount is removed in t.Cleanup, after every process the test starts
// later has been stopped.
func smallFS(t *testing.T, dir string, size int64) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test mounts a small filesystem and must run as root (as CI does)")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	img := dir + ".img"
	kind := "ext4 on a loop device"
	err := func() error {
		f, err := os.Create(img)
		if err != nil {
			return err
		}
		f.Close()
		if err := os.Truncate(img, size); err != nil {
			return err
		}
		// -m 0: no blocks reserved for root, so the daemon and the filler
		// see the same free space.
		if out, err := exec.Command("mkfs.ext4", "-q", "-m", "0", img).CombinedOutput(); err != nil {
			return errors.New(string(out))
		}
		if out, err := exec.Command("mount", "-o", "loop", img, dir).CombinedOutput(); err != nil {
			return errors.New(string(out))
		}
		return nil
	}()
	if err != nil {
		t.Logf("loop mount not available (%v); using tmpfs", err)
		kind = "tmpfs"
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+strconv.FormatInt(size, 10)+",mode=0700", "tmpfs", dir).CombinedOutput(); err != nil {
			t.Fatalf("mount tmpfs at %s: %v: %s", dir, err, out)
		}
	}
	t.Logf("spool on %s of %d MiB at %s", kind, size>>20, dir)
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
			exec.Command("umount", "-l", dir).Run()
		}
		os.Remove(img)
	})
}

// fill grows path until the filesystem is full and returns how many bytes
// it wrote.
func fill(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 256<<10)
	var n int64
	for {
		m, err := f.Write(buf)
		n += int64(m)
		if errors.Is(err, syscall.ENOSPC) {
			// The last blocks, one small write at a time.
			for {
				m, err := f.Write(buf[:512])
				n += int64(m)
				if err != nil {
					return n
				}
			}
		}
		if err != nil {
			t.Fatalf("fill %s: %v", path, err)
		}
	}
}

// waitPartial waits for segment seq of a recording to be written and
// past min bytes, and returns its path.
func waitPartial(t *testing.T, spool string, seq int, min int64, within time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		files, _ := filepath.Glob(filepath.Join(spool, fmt.Sprintf("*-%06d.ubx.partial", seq)))
		for _, f := range files {
			if st, err := os.Stat(f); err == nil && st.Size() >= min {
				return f
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no segment %d of at least %d bytes being written within %s", seq, min, within)
	return ""
}

// waitStopped polls session status until the session is no longer active.
func waitStopped(t *testing.T, d boxDirs, within time.Duration) sessionStatus {
	t.Helper()
	var st sessionStatus
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		ctl(t, d, &st, "session", "status")
		if !st.Active {
			return st
		}
	}
	t.Fatalf("the session still records after %s: %+v", within, st)
	return st
}

type recordingState struct {
	ID        string `json:"id"`
	Segments  int    `json:"segments"`
	Truncated int    `json:"truncated"`
	Complete  bool   `json:"complete"`
	Ended     string `json:"ended"`
	Missing   int    `json:"missing"`
}

func recordingOf(t *testing.T, data, id string) recordingState {
	t.Helper()
	var rs []recordingState
	if err := json.Unmarshal([]byte(run(t, "uploadbox-receiver", "recordings", "list", "--data", data, "--json")), &rs); err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if r.ID == id {
			return r
		}
	}
	return recordingState{}
}

// waitComplete polls the receiver's listing of recording id until it is
// complete or within has passed, and returns the last listing.
func waitComplete(t *testing.T, data, id string, within time.Duration) recordingState {
	t.Helper()
	var r recordingState
	for deadline := time.Now().Add(within); ; time.Sleep(200 * time.Millisecond) {
		r = recordingOf(t, data, id)
		if r.Complete || time.Now().After(deadline) {
			return r
		}
	}
}

// TestDiskFullMidSegment: the spool's filesystem (a small real one) fills
// at a random moment inside a segment, several times. Every time the
// session ends with a one-sentence alert that says what happened and what
// to do, the metric shows it, and the segment cut short is uploaded to the
// receiver as far as it got, without a restart of the daemon.
func TestDiskFullMidSegment(t *testing.T) {
	if testing.Short() {
		t.Skip("mounts a filesystem and runs the daemon with a receiver; skipped under -short")
	}
	dir := t.TempDir()
	b := setupBox(t, dir, nil)
	d := writeBoxConfig(t, dir, b.state, "")
	smallFS(t, d.spool, 48<<20)
	// Segments of 6 s: the disk fills well inside one, between fragments.
	cfg, _ := os.ReadFile(d.config)
	os.WriteFile(d.config, bytes.Replace(cfg, []byte("segment: 2s"), []byte("segment: 6s"), 1), 0o600)
	startDaemon(t, d)

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 11))
	filler := filepath.Join(d.spool, "filler")
	const rounds = 3
	for round := range rounds {
		var st sessionStatus
		ctl(t, d, &st, "session", "start", "--for", "60s")
		// The first or second segment, past its first fragment so that it
		// holds media, then a random moment before its end.
		waitPartial(t, d.spool, rng.IntN(2), 64<<10, 20*time.Second)
		time.Sleep(time.Duration(rng.IntN(3000)) * time.Millisecond)
		n := fill(t, filler)
		st = waitStopped(t, d, 20*time.Second)
		t.Logf("round %d: filled %d MiB; session %s stopped: %s after %d sealed segments", round, n>>20, st.Recording, st.StopReason, st.Segments)
		if st.StopReason != "disk error" || !strings.Contains(st.Alert, "is full") ||
			!strings.Contains(st.Alert, "was kept as far as it got and is uploaded") || !strings.Contains(st.Alert, "free space") {
			t.Fatalf("round %d: the session did not end with the disk-full alert: %+v", round, st)
		}
		if v := metricValue(t, d.metrics, "uploadbox_alert"); v != 1 {
			t.Errorf("round %d: uploadbox_alert = %v, want 1", round, v)
		}
		out := run(t, "uploadbox", "session", "status", "--socket", d.socket)
		if strings.Count(out, "ALERT:") != 1 || strings.Count(out, "is full") != 1 || strings.Contains(out, "error:") {
			t.Errorf("round %d: session status does not print the alert once:\n%s", round, out)
		}
		// While the disk is full the end of the recording may not be
		// sealed yet: the queue says so and is not empty.
		var q queueStatus
		ctl(t, d, &q, "queue")
		if q.EndsPending > 0 {
			if out := run(t, "uploadbox", "queue", "--socket", d.socket); !strings.Contains(out, "wait for their end to be sealed") || strings.Contains(out, "queue empty") {
				t.Errorf("round %d: an end waits to be sealed, but uploadbox queue says:\n%s", round, out)
			}
		}
		// Space comes back; the daemon is not restarted.
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
		waitDrained(t, d, 60*time.Second)
		if left := spoolSegments(t, d.spool); len(left) != 0 {
			t.Fatalf("round %d: segments left on the box: %v", round, left)
		}
		// The receiver gets the sealed segments, the one cut short
		// (truncated) and, once there is room, the empty end segment that
		// says "disk error"; then the recording is complete.
		r := waitComplete(t, b.rcv.data, st.Recording, 60*time.Second)
		if !r.Complete || r.Ended != "disk error" || r.Truncated != 1 || r.Segments < st.Segments+1 {
			t.Fatalf("round %d: receiver has %+v; want the %d sealed segments, the one cut short (truncated) and the end, complete, ended by a disk error", round, r, st.Segments)
		}
	}
	audit, _ := os.ReadFile(d.audit)
	if n := bytes.Count(audit, []byte(`"segment.truncated"`)); n != rounds {
		t.Errorf("box audit log has %d segment.truncated events, want %d", n, rounds)
	}
}

// killAtSegmentStart waits until segment seq of the running session has
// its header on disk and no payload chunk yet, then SIGKILLs the daemon,
// and returns the file's size at the kill.
func killAtSegmentStart(t *testing.T, p *daemonProc, spool string, seq int) int64 {
	t.Helper()
	return signalAtSegmentStart(t, p, spool, seq, syscall.SIGKILL)
}

// signalAtSegmentStart waits until segment seq of the running session has
// its header on disk and no payload chunk yet, then sends sig to the
// daemon, and returns the file's size right after.
func signalAtSegmentStart(t *testing.T, p *daemonProc, spool string, seq int, sig syscall.Signal) int64 {
	t.Helper()
	pattern := filepath.Join(spool, fmt.Sprintf("*-%06d.ubx.partial", seq))
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
		files, _ := filepath.Glob(pattern)
		if len(files) == 1 {
			if st, err := os.Stat(files[0]); err == nil && st.Size() > 0 {
				p.cmd.Process.Signal(sig)
				if sig == syscall.SIGKILL {
					<-p.done
				} else {
					waitProcState(t, p.cmd.Process.Pid, 'T')
				}
				st, _ = os.Stat(files[0])
				if st.Size() >= 16<<10 {
					t.Fatalf("signalled too late: segment %d already holds %d bytes", seq, st.Size())
				}
				return st.Size()
			}
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("segment %d was not started within 30 s", seq)
	return 0
}

// waitProcState waits until process pid is in state (as /proc shows it:
// 'T' stopped).
func waitProcState(t *testing.T, pid int, state byte) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			t.Fatal(err)
		}
		// "pid (comm) S ...": the state follows the last ')'.
		if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) && b[i+2] == state {
			return
		}
	}
	t.Fatalf("process %d did not reach state %c", pid, state)
}

// TestDiskFullAtSegmentStart: the spool's filesystem fills right after a
// segment's header was written, before its first payload chunk (the daemon
// is frozen there with SIGSTOP while the disk is filled). That segment
// holds no media and is never uploaded; once there is room, without a
// restart, the recording's end ("disk error") is sealed under its number,
// linked to the segment before it, so the receiver lists the recording
// complete with nothing missing.
func TestDiskFullAtSegmentStart(t *testing.T) {
	if testing.Short() {
		t.Skip("mounts a filesystem and runs the daemon with a receiver; skipped under -short")
	}
	dir := t.TempDir()
	b := setupBox(t, dir, nil)
	d := writeBoxConfig(t, dir, b.state, "")
	smallFS(t, d.spool, 48<<20)
	p := startDaemon(t, d)
	var st sessionStatus
	ctl(t, d, &st, "session", "start", "--for", "60s")
	id := st.Recording
	size := signalAtSegmentStart(t, p, d.spool, 1, syscall.SIGSTOP)
	filler := filepath.Join(d.spool, "filler")
	n := fill(t, filler)
	p.cmd.Process.Signal(syscall.SIGCONT)
	t.Logf("segment 1 at %d bytes when the disk was filled (%d MiB)", size, n>>20)
	st = waitStopped(t, d, 20*time.Second)
	if st.StopReason != "disk error" || !strings.Contains(st.Alert, "held no media yet") {
		t.Errorf("session ended %q with alert %q; want a disk error, segment 1 dropped as holding no media", st.StopReason, st.Alert)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	waitDrained(t, d, 60*time.Second)
	r := waitComplete(t, b.rcv.data, id, 60*time.Second)
	if !r.Complete || r.Ended != "disk error" || r.Missing != 0 || r.Segments != 2 || r.Truncated != 0 {
		t.Errorf("receiver has %+v; want segment 0 and the end in place of the empty segment 1: complete, ended by a disk error, none missing", r)
	}
	audit, _ := os.ReadFile(d.audit)
	var empty, ends int
	for _, l := range strings.Split(string(audit), "\n") {
		switch {
		case strings.Contains(l, `"segment.empty"`):
			empty++
			if !strings.Contains(l, id+"-000001.ubx") || !strings.Contains(l, "empty after a write error") {
				t.Errorf("segment.empty: %s", l)
			}
		case strings.Contains(l, `"recording.end"`):
			ends++
			if !strings.Contains(l, "recording="+id+" segment=1 reason=disk_error") {
				t.Errorf("recording.end: %s", l)
			}
		}
	}
	if empty != 1 || ends != 1 {
		t.Errorf("audit log: %d segment.empty, %d recording.end; want 1 each", empty, ends)
	}
}

// TestCrashAtSegmentStart: the daemon is killed right after a segment's
// header is written. At the next start the audit log says the previous run
// did not end cleanly (daemon.unclean_stop with the session and its last
// sealed segment) and ends its session; session status says the session
// ended by a crash; the header-only segment is recorded as empty after a
// crash, removed and never uploaded, and the recording's end ("box
// crashed") takes its number, linked to the segment before it, so the
// receiver lists the recording complete with nothing missing. A clean stop
// afterwards reports no crash, and a start without a session
// logs no "recording session ended".
func TestCrashAtSegmentStart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon with a receiver; skipped under -short")
	}
	dir := t.TempDir()
	b := setupBox(t, dir, nil)
	d := writeBoxConfig(t, dir, b.state, "")
	p := startDaemon(t, d)
	var st sessionStatus
	ctl(t, d, &st, "session", "start", "--for", "60s")
	id := st.Recording
	size := killAtSegmentStart(t, p, d.spool, 1)
	t.Logf("killed with segment 1 at %d bytes", size)

	p = startDaemon(t, d)
	out := run(t, "uploadbox", "session", "status", "--socket", d.socket)
	if !strings.Contains(out, "last session "+id+" ended by a crash at about ") {
		t.Errorf("session status after the crash:\n%s", out)
	}
	ctl(t, d, &st, "session", "status")
	if st.Recording != id || st.StopReason != "box crashed" || st.Active {
		t.Errorf("session status --json after the crash: %+v", st)
	}
	waitDrained(t, d, 60*time.Second)
	if left := spoolSegments(t, d.spool); len(left) != 0 {
		t.Errorf("segment files left on the box: %v", left)
	}
	// The empty segment 1 is never uploaded; the end "box crashed" takes
	// its number, linked to segment 0, so nothing the box sealed is missing.
	r := waitComplete(t, b.rcv.data, id, 60*time.Second)
	if !r.Complete || r.Ended != "box crashed" || r.Missing != 0 || r.Segments != 2 || r.Truncated != 0 {
		t.Errorf("receiver has %+v; want segment 0 and the end in place of the empty segment 1: complete, ended by a crash, none missing", r)
	}
	audit, _ := os.ReadFile(d.audit)
	var unclean, stops, empty int
	for _, l := range strings.Split(string(audit), "\n") {
		switch {
		case strings.Contains(l, `"daemon.unclean_stop"`):
			unclean++
			if !strings.Contains(l, "recording="+id) || !strings.Contains(l, "last_sealed=0") {
				t.Errorf("daemon.unclean_stop does not name the session and its last sealed segment: %s", l)
			}
		case strings.Contains(l, `"session.stop"`) && strings.Contains(l, "recording="+id):
			stops++
			if !strings.Contains(l, "reason=box_crashed") {
				t.Errorf("the crashed session ended in the log as: %s", l)
			}
		case strings.Contains(l, `"segment.empty"`):
			empty++
			if !strings.Contains(l, fmt.Sprintf("%s-000001.ubx", id)) || !strings.Contains(l, "empty after a crash") {
				t.Errorf("segment.empty: %s", l)
			}
		}
	}
	if unclean != 1 || stops != 1 || empty != 1 {
		t.Errorf("audit log: %d daemon.unclean_stop, %d session.stop, %d segment.empty; want 1 each", unclean, stops, empty)
	}

	// A clean stop and a start: no crash reported, no session ended.
	p.cmd.Process.Signal(syscall.SIGTERM)
	<-p.done
	sp, err := spoolpkg.Open(d.spool, spoolpkg.Options{})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := sp.Get(fmt.Sprintf("%s-000001.ubx", id))
	sp.Close()
	if err != nil || rec.State != spoolpkg.Wiped || !rec.Last {
		t.Errorf("spool index has %+v, %v; want segment 1 the recording's end, uploaded and wiped", rec, err)
	}
	p = startDaemon(t, d)
	out = run(t, "uploadbox", "session", "status", "--socket", d.socket)
	if !strings.Contains(out, "no session since the daemon started") {
		t.Errorf("session status after a clean restart:\n%s", out)
	}
	audit, _ = os.ReadFile(d.audit)
	if n := bytes.Count(audit, []byte(`"daemon.unclean_stop"`)); n != 1 {
		t.Errorf("%d daemon.unclean_stop after a clean stop, want still 1", n)
	}
	if strings.Contains(p.log(), "recording session ended") {
		t.Errorf("a start without a session logs that a session ended:\n%s", p.log())
	}
}
