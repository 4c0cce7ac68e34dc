package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// cpLines reads an audit log (or checkpoints file) as its lines.
func cpLines(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimRight(string(data), "\n"), "\n")
}

// cpCut removes the last n lines of the file at path, as someone who
// can write it could.
func cpCut(t *testing.T, path string, n int) {
	t.Helper()
	ls := cpLines(t, path)
	if len(ls) <= n {
		t.Fatalf("%s holds %d lines, cannot cut %d", path, len(ls), n)
	}
	if err := os.WriteFile(path, []byte(strings.Join(ls[:len(ls)-n], "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// cpSeq is the seq of one JSON line (an entry or a checkpoint).
func cpSeq(t *testing.T, line string) uint64 {
	t.Helper()
	var v struct {
		Seq uint64 `json:"seq"`
	}
	if err := json.Unmarshal([]byte(line), &v); err != nil {
		t.Fatalf("%q: %v", line, err)
	}
	return v.Seq
}

// cpRun runs a binary and returns its stdout, stderr and exit code.
func cpRun(t *testing.T, name string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, name), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("%s: %v", name, err)
	}
	return stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()
}

// TestAuditCheckpoints: the box signs its audit head with its device key
// and the receiver holds it; removing the last entries of the box's log
// is reported by the box's verify and by the receiver's audit-check (also
// when the box's checkpoints file is cut too); removing the last entries
// of the receiver's log is reported by its verify.
func TestAuditCheckpoints(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "receiver")
	rcv := startReceiver(t, data, "127.0.0.1:0", "--audit-checkpoint-every", "1s")
	b := enrollBox(t, rcv, "room-7", rcv.addr, filepath.Join(dir, "state"))
	d := writeBoxConfig(t, dir, b.state, "  checkpoint_every: 1s\n")
	p := startDaemon(t, d)
	held := cpReceiverPath(data, "room-7")

	// While the daemon runs, its checkpoints reach the receiver.
	p.cmd.Process.Signal(syscall.SIGHUP) // a reload is an audit entry
	var reload uint64
	cpWait(t, 20*time.Second, "the reload in the box's audit log", func() bool {
		for _, l := range cpLines(t, d.audit) {
			if strings.Contains(l, `"event":"config.reload"`) {
				reload = cpSeq(t, l)
			}
		}
		return reload > 0
	})
	cpWait(t, 20*time.Second, "the box's checkpoint covering the reload at the receiver", func() bool {
		c, err := os.ReadFile(held)
		return err == nil && cpSeq(t, string(c)) >= reload
	})

	// At stop the last checkpoint covers daemon.stop and reaches the receiver.
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		t.Fatal("the daemon did not stop within 15 s")
	}
	ls := cpLines(t, d.audit)
	if !strings.Contains(ls[len(ls)-1], `"event":"daemon.stop"`) {
		t.Fatalf("the log does not end with daemon.stop: %s", ls[len(ls)-1])
	}
	last := cpSeq(t, ls[len(ls)-1])
	cps := cpLines(t, d.audit+".checkpoints")
	if got := cpSeq(t, cps[len(cps)-1]); got != last {
		t.Fatalf("the box's last checkpoint covers seq %d, the log ends at %d", got, last)
	}
	c, err := os.ReadFile(held)
	if err != nil || cpSeq(t, string(c)) != last {
		t.Fatalf("the receiver holds %q (%v), want seq %d", c, err, last)
	}

	// Intact: both checks pass.
	if out := run(t, "uploadbox", "consent", "audit", "--verify", "--file", d.audit); !strings.Contains(out, "last checkpoint: seq") {
		t.Fatalf("box verify: %s", out)
	}
	run(t, "uploadbox-receiver", "devices", "audit-check", "room-7", "--file", d.audit, "--data", data)

	// The last 2 entries removed: the box's verify and the receiver's
	// audit-check both name them.
	cpCut(t, d.audit, 2)
	_, stderr, code := cpRun(t, "uploadbox", "consent", "audit", "--verify", "--file", d.audit)
	if code != 1 || !strings.Contains(stderr, "2 entries missing after the last checkpoint") {
		t.Fatalf("box verify of a cut log: exit %d, %s", code, stderr)
	}
	stdout, stderr, code := cpRun(t, "uploadbox-receiver", "devices", "audit-check", "room-7", "--file", d.audit, "--data", data, "--json")
	var res struct {
		OK      bool   `json:"ok"`
		Missing uint64 `json:"missing"`
		Problem string `json:"problem"`
	}
	if err := json.Unmarshal([]byte(stdout), &res); err != nil || code != 1 || res.OK || res.Missing != 2 ||
		!strings.Contains(stderr, "2 entries missing after the last checkpoint") {
		t.Fatalf("audit-check of a cut log: exit %d, %+v (%v)\n%s", code, res, err, stderr)
	}

	// The checkpoints file cut as well: the box alone cannot tell any
	// more, the receiver's copy still can.
	os.Remove(d.audit + ".checkpoints")
	run(t, "uploadbox", "consent", "audit", "--verify", "--file", d.audit)
	if _, stderr, code := cpRun(t, "uploadbox-receiver", "devices", "audit-check", "room-7", "--file", d.audit, "--data", data); code != 1 ||
		!strings.Contains(stderr, "2 entries missing after the last checkpoint") {
		t.Fatalf("audit-check with the box's checkpoints gone: exit %d, %s", code, stderr)
	}

	// A daemon started on the cut log (checkpoints restored) reports it
	// on the control socket: its own start entry fills one of the 2 seqs.
	if err := os.WriteFile(d.audit+".checkpoints", []byte(strings.Join(cps, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	p = startDaemon(t, d)
	if _, stderr, code := cpRun(t, "uploadbox", "consent", "audit", "--verify", "--socket", d.socket); code == 0 ||
		!strings.Contains(stderr, "1 entry missing after the last checkpoint") {
		t.Fatalf("daemon verify of a cut log: exit %d, %s", code, stderr)
	}
	// Nor does it sign over the cut: no new checkpoint, an error instead.
	cpWait(t, 20*time.Second, "the daemon's refusal to checkpoint a cut log", func() bool {
		return strings.Contains(p.log(), "audit checkpoint not written")
	})
	if got := cpLines(t, d.audit+".checkpoints"); len(got) != len(cps) {
		t.Fatalf("the daemon signed over a cut log: %s", got[len(got)-1])
	}
	if c, _ := os.ReadFile(held); cpSeq(t, string(c)) != last {
		t.Fatalf("the receiver's checkpoint changed: %s", c)
	}

	// The receiver checkpoints its own log at stop (receipt key); cutting
	// its last 2 entries is reported by its verify.
	rcv.cmd.Process.Signal(syscall.SIGTERM)
	if err := rcv.cmd.Wait(); err != nil {
		t.Fatalf("receiver stop: %v", err)
	}
	if out := run(t, "uploadbox-receiver", "audit", "verify", "--data", data); !strings.Contains(out, "last checkpoint: seq") {
		t.Fatalf("receiver verify: %s", out)
	}
	cpCut(t, filepath.Join(data, "audit.jsonl"), 2)
	if _, stderr, code := cpRun(t, "uploadbox-receiver", "audit", "verify", "--data", data); code != 1 ||
		!strings.Contains(stderr, "2 entries missing after the last checkpoint") {
		t.Fatalf("receiver verify of a cut log: exit %d, %s", code, stderr)
	}
}

// cpReceiverPath is where the receiver keeps a box's newest
// audit checkpoint (receiver.DeviceCheckpointPath).
func cpReceiverPath(data, device string) string {
	return filepath.Join(data, "audit-checkpoints", device+".json")
}

func cpWait(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
