package e2e

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/uploadbox/uploadbox/internal/faultproxy"
	"github.com/uploadbox/uploadbox/internal/pgtest"
	"github.com/uploadbox/uploadbox/internal/rrproxy"
	"github.com/uploadbox/uploadbox/internal/s3test"
)

// TestReplicasSurviveAKill: two receivers on one PostgreSQL database and one
// S3 bucket behind a round-robin TCP proxy, the second made from the
// first's backup as docs/receiver.md "Running more than one" says. The
// box's daemon records through the proxy; one receiver is SIGKILLed while
// an upload runs on it and restarted. Every segment arrives exactly once,
// the box verifies receipts and wipes, and the export plays.
func TestReplicasSurviveAKill(t *testing.T) {
	if testing.Short() {
		t.Skip("runs PostgreSQL, versitygw, two receivers and the daemon; skipped under -short")
	}
	dir := t.TempDir()
	_, gw, serve := sharedState(t, "replicas")
	serve = append(serve, "--metrics-listen", "127.0.0.1:0")
	dataA, dataB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	a := startReceiver(t, dataA, "127.0.0.1:0", serve...)
	backup := filepath.Join(dir, "a.backup")
	run(t, "uploadbox-receiver", "backup", "--out", backup, "--data", dataA)
	run(t, "uploadbox-receiver", "restore", "--from", backup, "--data", dataB)
	b := startReceiver(t, dataB, "127.0.0.1:0", serve...)

	// Each receiver behind a link of about 2 MB/s, so that a 2 s segment's
	// upload takes long enough to be caught running; both behind the
	// round-robin proxy the box knows as its receiver.
	linkA, err := faultproxy.Start(a.addr, faultproxy.Options{Rate: 2 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer linkA.Close()
	linkB, err := faultproxy.Start(b.addr, faultproxy.Options{Rate: 2 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer linkB.Close()
	lb, err := rrproxy.Start(linkA.Addr(), linkB.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()

	box := enrollBox(t, a, "room-7", lb.Addr(), filepath.Join(dir, "state"))
	d := writeBoxConfig(t, dir, box.state, "")
	startDaemon(t, d)
	var st sessionStatus
	ctl(t, d, &st, "session", "start", "--for", "16s")

	// Kill A while it holds a running upload (its /readyz counts them).
	caught := false
	for deadline := time.Now().Add(14 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if inFlight(a) > 0 {
			caught = true
			break
		}
	}
	if !caught {
		t.Fatal("no upload ran on receiver A during the recording: the proxy did not spread the box's connections")
	}
	a.cmd.Process.Signal(syscall.SIGKILL)
	a.cmd.Wait()
	t.Log("receiver A killed with an upload running")
	time.Sleep(2 * time.Second) // the box meets the dead receiver, and goes on through B
	a = startReceiver(t, dataA, a.addr, serve...)

	st = waitSessionEnd(t, d, 60*time.Second)
	waitDrained(t, d, 90*time.Second)
	if left := spoolSegments(t, d.spool); len(left) != 0 {
		t.Fatalf("local copies left after the drain (the box wipes only after a verified receipt): %v", left)
	}
	for _, data := range []string{dataA, dataB} {
		rs := recordingsByID(t, data)
		r, ok := rs[st.Recording]
		if !ok || r.Segments != st.Segments || !r.Complete || len(r.Keys) != st.Segments {
			t.Fatalf("receiver %s lists %+v, want %d segments stored once, complete", filepath.Base(data), r, st.Segments)
		}
	}
	// Each segment is one object in the bucket, named by the listing.
	list, err := gw.Client().ListObjectsV2(t.Context(), &s3.ListObjectsV2Input{Bucket: aws.String(gw.Bucket)})
	if err != nil {
		t.Fatal(err)
	}
	inBucket := map[string]bool{}
	for _, o := range list.Contents {
		inBucket[aws.ToString(o.Key)] = true
	}
	keys := map[string]bool{}
	for _, k := range recordingsByID(t, dataB)[st.Recording].Keys {
		if !inBucket[k] {
			t.Errorf("segment object %s is not in the bucket", k)
		}
		keys[k] = true
	}
	if len(keys) != st.Segments {
		t.Fatalf("%d distinct objects for %d segments", len(keys), st.Segments)
	}
	mp4 := filepath.Join(dir, "rec.mp4")
	files := fetchSegments(t, gw, recordingsByID(t, dataB)[st.Recording].Keys, filepath.Join(dir, "fetched"))
	run(t, "uploadbox-receiver", append([]string{"export", "-o", mp4, "--identity", filepath.Join(dataB, "org.key")}, files...)...)
	if dur := checkRecording(t, mp4, true); dur < float64(st.Segments-1)*2-0.5 {
		t.Fatalf("the export plays %.1f s of %d segments of 2 s", dur, st.Segments)
	}
	if c := lb.Connections(); c[linkA.Addr()] == 0 || c[linkB.Addr()] == 0 {
		t.Fatalf("connections per receiver: %v, want both used", c)
	}
}

// inFlight is the number of requests p (started with --metrics-listen)
// is running, as its /readyz says; -1 if it does not answer.
func inFlight(p *receiverProc) int64 {
	resp, err := http.Get("http://" + p.metricsAddr + "/readyz")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var rd struct {
		InFlight int64 `json:"in_flight"`
	}
	json.NewDecoder(resp.Body).Decode(&rd)
	return rd.InFlight
}

// TestUploadMovesToOtherReplica (issue 15, "Uploads that any replica can
// continue"): two receiver processes share one PostgreSQL database (state
// and tus locks) and one versitygw bucket (segments and staged uploads),
// behind a round-robin proxy. The box uploads through a slow link to the
// first; while one of its uploads is staged in the bucket the proxy sends
// new connections to the second only and the first is SIGKILLed. The box
// resumes on the second, which finds the upload in the bucket and its
// owner in the database: every segment is stored once, the box wipes after
// verifying each receipt, nothing stays staged.
func TestUploadMovesToOtherReplica(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL, versitygw and two receivers; skipped under -short")
	}
	pg := pgtest.Start(t)
	gw := s3test.Start(t, "recordings")
	flags := append(s3Serve(t, gw), "--database", pg.NewDB(t))
	dir := t.TempDir()
	data1, data2 := filepath.Join(dir, "r1"), filepath.Join(dir, "r2")
	rcv1 := startReceiver(t, data1, "127.0.0.1:0", flags...)
	copyKeys(t, data1, data2)
	rcv2 := startReceiver(t, data2, "127.0.0.1:0", flags...)
	lb, err := rrproxy.Start(rcv1.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer lb.Close()
	b := enrollBox(t, rcv1, "room-7", slowLink(t, 256<<10)(lb.Addr()), filepath.Join(dir, "state"))

	spool := filepath.Join(dir, "spool")
	client := gw.Client()
	sealed, up := uploadUntilStaged(t, b, spool, client, gw.Bucket)
	lb.SetBackends(rcv2.addr)
	rcv1.kill()
	if err := up.Wait(); err != nil {
		t.Logf("the upload run that saw the first receiver die: %v", err)
	}
	b.rcv = rcv2
	uploadRest(t, b, spool, sealed)
	left := stagedData(t, client, gw.Bucket, spool)
	if len(left) != 0 {
		t.Fatalf("staged objects left in the bucket: %v", left)
	}
	if n := lb.Connections()[rcv2.addr]; n == 0 {
		t.Fatal("the second receiver was never used")
	}
}
