package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/internal/pgtest"
	"github.com/uploadbox/uploadbox/internal/rrproxy"
	"github.com/uploadbox/uploadbox/internal/s3test"
	"github.com/uploadbox/uploadbox/internal/syncbuf"
)

// TestFrozenReceiverMidUpload: two receivers on one PostgreSQL database
// and one versitygw bucket behind a round-robin proxy; receiver A is frozen
// (SIGSTOP: its kernel still answers, so its database sessions and its tus
// lock stay open) while the box's PATCH runs on it, and the proxy sends new
// connections to B only (as a load balancer's health check would). The
// box gives up on the stalled PATCH and resumes on B, which ends the frozen
// holder's lock session once its lease ran out and commits the segment.
// Then A is resumed: its PATCH, fenced, writes nothing into the upload B
// continued; every segment is stored once, the box wipes after verifying
// each receipt, and nothing stays staged in the bucket.
func TestFrozenReceiverMidUpload(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL, versitygw and two receivers; skipped under -short")
	}
	pg := pgtest.Start(t)
	gw := s3test.Start(t, "recordings")
	db := pg.NewDB(t)
	flags := append(s3Serve(t, gw), "--database", db, "--peer-lease", "1s", "--metrics-listen", "127.0.0.1:0")
	dir := t.TempDir()
	dataA, dataB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	a := startReceiver(t, dataA, "127.0.0.1:0", flags...)
	copyKeys(t, dataA, dataB)
	b := startReceiver(t, dataB, "127.0.0.1:0", flags...)
	lb, err := rrproxy.Start(a.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	box := enrollBox(t, a, "room-7", slowLink(t, 256<<10)(lb.Addr()), filepath.Join(dir, "state"))

	spool := filepath.Join(dir, "spool")
	os.Mkdir(spool, 0o700)
	sealed := recordInto(t, box, spool, "6s")
	up := exec.Command(filepath.Join(binDir, "uploadbox"), "upload", "--state", box.state, "--spool", spool)
	var upLog syncbuf.Buffer
	up.Stderr = &upLog
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Process.Kill(); up.Wait() })
	upDone := make(chan error, 1)
	go func() { upDone <- up.Wait() }()

	// A PATCH runs on A once s3store's part file there takes its bytes.
	for deadline := time.Now().Add(time.Minute); !receivingPart(filepath.Join(dataA, "uploads")); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no PATCH ever ran on receiver A")
		}
	}
	if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozen := time.Now()
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			a.cmd.Process.Signal(syscall.SIGCONT)
		}
	}
	t.Cleanup(resume)
	lb.SetBackends(b.addr)
	t.Log("receiver A frozen with a PATCH running on it")

	// The segment A was receiving is committed by B, within a bound of a
	// few leases plus the box's stall timeout and the rest of the upload.
	for deadline := time.Now().Add(2 * time.Minute); !strings.Contains(b.stderr.String(), "segment committed"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no segment was committed on B within 2 minutes of A's freeze\nbox:\n%s\nB:\n%s", upLog.String(), b.stderr.String())
		}
	}
	t.Logf("from A's freeze to the first segment committed on B: %s", time.Since(frozen).Round(10*time.Millisecond))
	select {
	case err := <-upDone:
		if err != nil {
			t.Fatalf("the upload run: %v\n%s", err, upLog.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("the upload run did not end within 2 minutes of the first commit on B\n%s", upLog.String())
	}
	t.Logf("from A's freeze to the box's upload run ending: %s", time.Since(frozen).Round(10*time.Millisecond))

	// A resumes: whatever its PATCH still had, it must not reach the bucket.
	resume()
	for deadline := time.Now().Add(time.Minute); inFlight(a) != 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("receiver A still runs requests a minute after it resumed\n%s", a.stderr.String())
		}
	}
	box.rcv = b
	uploadRest(t, box, spool, sealed)
	if left := stagedData(t, gw.Client(), gw.Bucket, spool); len(left) != 0 {
		t.Fatalf("staged objects left in the bucket after A resumed: %v\nA:\n%s", left, a.stderr.String())
	}
	// B ended A's lock session, logged and audited it; A, resumed, found
	// its session gone.
	if !strings.Contains(b.stderr.String(), "ended the lock session of a frozen receiver") {
		t.Fatalf("B did not log ending A's lock session:\n%s", b.stderr.String())
	}
	out := run(t, "uploadbox-receiver", "audit", "list", "--data", dataB, "--database", db, "--type", "upload.lock", "--json")
	var ended []auditEntry
	if err := json.Unmarshal([]byte(out), &ended); err != nil {
		t.Fatalf("audit list --json printed %q: %v", out, err)
	}
	found := false
	for _, e := range ended {
		found = found || (e.Event == "upload.lock" && e.Outcome == "ended" && e.Identity == "room-7" && e.Receiver != "")
	}
	if !found {
		t.Fatalf("the receivers' audit chain has no upload.lock ended entry for room-7 naming its receiver:\n%s", out)
	}
	if !strings.Contains(a.stderr.String(), "tus lock session lost") {
		t.Fatalf("A, resumed, did not find its lock session gone:\n%s", a.stderr.String())
	}
}

// receivingPart reports whether a receiver staging in S3 is receiving a
// PATCH: one of s3store's part files in its uploads directory has bytes.
func receivingPart(dir string) bool {
	parts, _ := filepath.Glob(filepath.Join(dir, "tusd-s3-*"))
	for _, p := range parts {
		if fi, err := os.Stat(p); err == nil && fi.Size() > 0 {
			return true
		}
	}
	return false
}

// TestFrozenLeaderLosesTheLead: two receivers on one PostgreSQL database
// (--peer-lease 1s); A leads the lifecycle jobs. Frozen with SIGSTOP, A
// keeps its database session and so the job's lock; B ends that session
// once it has been silent beyond the lease (at least two of the leader's
// 3 s checks) and takes the lead. Resumed, A finds its session gone, stops
// its jobs and follows.
func TestFrozenLeaderLosesTheLead(t *testing.T) {
	if testing.Short() {
		t.Skip("runs PostgreSQL, versitygw and two receivers; skipped under -short")
	}
	dir := t.TempDir()
	_, _, serve := sharedState(t, "frozen-leader")
	serve = append(serve, "--peer-lease", "1s")
	dataA, dataB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	a := startReceiver(t, dataA, "127.0.0.1:0", serve...)
	const leaderMetric = "uploadbox_receiver_lifecycle_leader"
	cpWait(t, 30*time.Second, "A leading the lifecycle jobs", func() bool { return lifeMetric(t, dataA, leaderMetric) == "1" })
	copyKeys(t, dataA, dataB)
	b := startReceiver(t, dataB, "127.0.0.1:0", serve...)
	if l := lifeMetric(t, dataB, leaderMetric); l != "0" {
		t.Fatalf("B says %s %s while A leads: want 0", leaderMetric, l)
	}
	if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.cmd.Process.Signal(syscall.SIGCONT) })
	frozen := time.Now()
	cpWait(t, time.Minute, "B leading after A froze", func() bool { return lifeMetric(t, dataB, leaderMetric) == "1" })
	t.Logf("from A's freeze to B leading: %s", time.Since(frozen).Round(10*time.Millisecond))
	if !strings.Contains(b.stderr.String(), "ended the session of a frozen leader") {
		t.Fatalf("B leads without having ended A's session:\n%s", b.stderr.String())
	}
	a.cmd.Process.Signal(syscall.SIGCONT)
	cpWait(t, 30*time.Second, "A following after it resumed", func() bool { return lifeMetric(t, dataA, leaderMetric) == "0" })
	if !strings.Contains(a.stderr.String(), "lost the job's lock") {
		t.Fatalf("A, resumed, did not say it lost the job's lock:\n%s", a.stderr.String())
	}
	if l := lifeMetric(t, dataB, leaderMetric); l != "1" {
		t.Fatalf("B says %s %s after A resumed: want 1", leaderMetric, l)
	}
}
