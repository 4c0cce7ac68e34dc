package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/jackc/pgx/v5"

	"github.com/uploadbox/uploadbox/internal/pgtest"
	"github.com/uploadbox/uploadbox/internal/rrproxy"
	"github.com/uploadbox/uploadbox/internal/s3test"
)

// TestPeerLeaseBounds: serve refuses a --peer-lease outside 1s to 10m,
// naming the flag, before it opens anything.
func TestPeerLeaseBounds(t *testing.T) {
	for _, v := range []string{"0s", "500ms", "11m", "-5s"} {
		_, stderr, code := cpRun(t, "uploadbox-receiver", "serve", "--data", t.TempDir(), "--peer-lease", v)
		if code != 2 || !strings.Contains(stderr, "--peer-lease "+strings.TrimPrefix(v, "+")) || !strings.Contains(stderr, "give 1s to 10m") {
			t.Errorf("serve --peer-lease %s: exit %d, want 2 naming the flag and its bounds\n%s", v, code, stderr)
		}
	}
}

// waitControlOf waits (bounded) until what data's devices list says of
// room-7's control connection satisfies ok.
func waitControlOf(t *testing.T, data, what string, ok func(connected bool, via string) bool) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if ok(controlOf(t, data, "room-7")) {
			return
		}
		if time.Now().After(deadline) {
			c, via := controlOf(t, data, "room-7")
			t.Fatalf("%s: room-7 still listed connected=%v via %q on %s", what, c, via, data)
		}
	}
}

// TestPeerLeaseExpiry (issue 15): two receivers on one PostgreSQL behind a
// round-robin proxy, the box's control connection on A. A is frozen
// (SIGSTOP): its holder row stays but is no longer renewed, and the proxy
// still sends the box to A, where its reconnects hang. A teacher's
// decision and a coach's offer made on B end as offline, not at their
// deadline: while A's lease runs, at the next lease check; after it, at
// once, B listing the box as not connected (A's row is not trusted). When
// the proxy sends the box to B instead, the box reconnects there and a
// coach's offer accepted by the teacher through B gets video. A resumed
// (SIGCONT) does not take the box back: it lists it as held by B, and a
// decision made on A reaches the box through B.
func TestPeerLeaseExpiry(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL, two receivers and the daemon; skipped under -short")
	}
	pg := pgtest.Start(t)
	url := pg.NewDB(t)
	dir := t.TempDir()
	serve := []string{"--database", url, "--peer-lease", "2s"}
	var rB *receiverProc
	var proxy *rrproxy.Proxy
	b, lb, _ := startRelayBoxIn(t, dir, serve, func(addr string) string {
		dataB := filepath.Join(dir, "receiver-2")
		copyKeys(t, filepath.Join(dir, "receiver"), dataB)
		rB = startReceiver(t, dataB, "127.0.0.1:0", serve...)
		var err error
		// Only A at first: the box's control connection lands there.
		if proxy, err = rrproxy.Start(addr); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { proxy.Close() })
		return proxy.Addr()
	})
	rA := b.rcv
	waitControlOf(t, rB.data, "B never listed room-7 as held by A", func(c bool, via string) bool { return c && via != "" })

	viaB := enrolled{state: b.state, rcv: rB}
	c := receiverClient(t, viaB)
	coach := receiverLogin(t, viaB, "coach-c")
	receiverLogin(t, viaB, "tess")
	for _, name := range []string{"coach-c", "tess"} {
		run(t, "uploadbox-receiver", "viewers", "allow", name, "room-7", "--data", rB.data)
	}

	// A freezes: the kernel still accepts connections for it, so the box's
	// reconnects through the proxy hang in their TLS handshake.
	if err := rA.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	resume := func() {
		if !resumed {
			resumed = true
			rA.cmd.Process.Signal(syscall.SIGCONT)
		}
	}
	t.Cleanup(resume)

	// A decision on B, made while A's row may still be within its lease,
	// is answered offline, by the lease check and not the call's deadline.
	offline := func(when string) {
		t.Helper()
		ans, stderr, ok := decide(t, rB.data, "", "room-7", "end_all", "--as", "tess")
		if ok || !strings.Contains(stderr+ans.Error, "offline") || strings.Contains(stderr+ans.Error, "deadline") {
			t.Fatalf("%s: end_all on B: ok=%v %+v\n%s\nwant an offline answer", when, ok, ans, stderr)
		}
		r := relayOffer(t, c, viaB, "room-7", coach, 0)
		if r.Status != http.StatusServiceUnavailable || !strings.Contains(string(r.Body), "offline") {
			t.Fatalf("%s: coach's offer on B: HTTP %d %s, want 503 offline", when, r.Status, r.Body)
		}
	}
	offline("A just frozen")
	// Past the lease B no longer trusts A's row.
	waitControlOf(t, rB.data, "A's row trusted past its lease", func(c bool, _ string) bool { return !c })
	offline("A's lease over")

	// The load balancer takes A out: the box's next attempt reaches B.
	proxy.SetBackends(rB.addr)
	waitControlOf(t, rB.data, "the box never reconnected to B", func(c bool, via string) bool { return c && via == "" })
	acceptHeld(t, viaB, lb, c, coach)

	// A resumes: it finds the box held by B and leaves it there.
	resume()
	waitControlOf(t, rA.data, "A resumed does not list room-7 as held by B", func(c bool, via string) bool { return c && via != "" })
	if conn, via := controlOf(t, rB.data, "room-7"); !conn || via != "" {
		t.Fatalf("after A resumed, B lists room-7 connected=%v via %q: want held by B", conn, via)
	}
	ans, stderr, ok := decide(t, rA.data, "", "room-7", "end_all", "--as", "tess")
	if !ok || ans.Status != http.StatusOK {
		t.Fatalf("end_all on the resumed A: %+v %s", ans, stderr)
	}
}

// sharedState starts a PostgreSQL database and a versitygw bucket for
// several receivers and returns the database's URL, the bucket and the
// serve flags that put a receiver's state and segments there.
func sharedState(t *testing.T, bucket string) (string, *s3test.Server, []string) {
	t.Helper()
	url := pgtest.Start(t).NewDB(t)
	gw := s3test.Start(t, bucket)
	for _, kv := range gw.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	return url, gw, []string{"--database", url,
		"--s3-bucket", gw.Bucket, "--s3-endpoint", gw.Endpoint, "--s3-region", s3test.Region, "--s3-path-style"}
}

// lifeMetric is the value of the admin socket's metric name on data
// ("" when it is not served).
func lifeMetric(t *testing.T, data, name string) string {
	t.Helper()
	for _, l := range strings.Split(scrubMetrics(t, data), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			return v
		}
	}
	return ""
}

// backdateDeletion moves recording id's deletion 100 days back in the
// shared database, so that its grace period is over.
func backdateDeletion(t *testing.T, url, id string) {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(t.Context())
	var raw []byte
	if err := conn.QueryRow(t.Context(), `SELECT v FROM kv WHERE bucket = 'recordings'::bytea AND k = $1::bytea`, []byte(id)).Scan(&raw); err != nil {
		t.Fatalf("recording %s's lifecycle row: %v", id, err)
	}
	var lr map[string]any
	if err := json.Unmarshal(raw, &lr); err != nil || lr["deleted"] == nil {
		t.Fatalf("recording %s's lifecycle row %s: %v, want a deletion", id, raw, err)
	}
	lr["deleted"] = time.Now().Add(-100 * 24 * time.Hour).UTC()
	raw, _ = json.Marshal(lr)
	if _, err := conn.Exec(t.Context(), `UPDATE kv SET v = $2 WHERE bucket = 'recordings'::bytea AND k = $1::bytea`, []byte(id), raw); err != nil {
		t.Fatal(err)
	}
}

// TestLifecycleLeader (issue 15): two receivers on one PostgreSQL and one
// S3 bucket, scrubbing every second. One of them, A (started first), leads
// the lifecycle jobs: its metric says so and its scrubs run, while B's
// never do. A recording deleted on B whose grace period is over (its
// deletion moved back in the database) is purged once A is SIGKILLed: B
// takes the lead and purges it at once. A restarted follows. The audit
// chain both share in the database verifies and holds one
// recording.purge, written by B, and the segments' objects are gone from
// the bucket.
func TestLifecycleLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("runs PostgreSQL, versitygw, two receivers and records; skipped under -short")
	}
	dir := t.TempDir()
	url, gw, serve := sharedState(t, "leader")
	serve = append(serve, "--scrub-every", "1s")
	dataA, dataB := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	a := startReceiver(t, dataA, "127.0.0.1:0", serve...)
	const leaderMetric, scrubMetric = "uploadbox_receiver_lifecycle_leader", "uploadbox_receiver_scrub_last_run_timestamp_seconds"
	cpWait(t, 30*time.Second, "A leading the lifecycle jobs", func() bool { return lifeMetric(t, dataA, leaderMetric) == "1" })

	box := enrollBox(t, a, "room-7", a.addr, filepath.Join(dir, "state"))
	spool := filepath.Join(dir, "spool")
	os.Mkdir(spool, 0o700)
	sealed := recordInto(t, box, spool, "4s")
	run(t, "uploadbox", "upload", "--state", box.state, "--spool", spool)

	copyKeys(t, dataA, dataB)
	startReceiver(t, dataB, "127.0.0.1:0", serve...)
	// A scrubs (its last run moves on, twice past B's start) while B,
	// which runs the same --scrub-every, never does.
	for i := range 2 {
		last := lifeMetric(t, dataA, scrubMetric)
		cpWait(t, 30*time.Second, fmt.Sprintf("A's scrub %d after B started", i+1), func() bool { return lifeMetric(t, dataA, scrubMetric) != last })
	}
	if l, s := lifeMetric(t, dataB, leaderMetric), lifeMetric(t, dataB, scrubMetric); l != "0" || s != "0" {
		t.Fatalf("B (following) says %s %s, %s %s: want 0 and no scrub run", leaderMetric, l, scrubMetric, s)
	}

	rs := lifeList(t, dataB)
	if len(rs) != 1 || rs[0].Segments != sealed {
		t.Fatalf("recordings list on B: %+v, want one recording of %d segments", rs, sealed)
	}
	r := rs[0]
	run(t, "uploadbox-receiver", "recordings", "delete", r.ID, "--data", dataB)
	backdateDeletion(t, url, r.ID)

	// The leader dies: B takes the lead and purges what is due at once.
	a.kill()
	cpWait(t, 60*time.Second, "B leading after A was killed", func() bool { return lifeMetric(t, dataB, leaderMetric) == "1" })
	cpWait(t, 60*time.Second, "the purge of the recording by B", func() bool { return len(lifeList(t, dataB, "--deleted")) == 0 })
	a = startReceiver(t, dataA, "127.0.0.1:0", serve...)
	if l := lifeMetric(t, dataA, leaderMetric); l != "0" {
		t.Fatalf("A restarted says %s %s while B leads: want 0", leaderMetric, l)
	}
	cpWait(t, 30*time.Second, "B's scrubs after A's restart", func() bool { return lifeMetric(t, dataB, scrubMetric) != "0" })

	// One audit chain for both receivers, in the database: it verifies
	// (from either data directory), and holds one delete and one purge,
	// both written by B (the delete was asked of B), while A wrote the
	// box's first connection.
	for _, data := range []string{dataA, dataB} {
		if out, stderr, code := cpRun(t, "uploadbox-receiver", "audit", "verify", "--data", data, "--database", url); code != 0 || !strings.Contains(out, "OK") {
			t.Fatalf("audit verify --data %s --database: exit %d\n%s%s", data, code, out, stderr)
		}
	}
	if msg := runFails(t, "uploadbox-receiver", "audit", "verify", "--data", dataA); !strings.Contains(msg, "is in PostgreSQL") || !strings.Contains(msg, "--database") {
		t.Fatalf("audit verify without --database on a PostgreSQL receiver: %s", msg)
	}
	listed := func(kind string) []auditEntry {
		var es []auditEntry
		if err := json.Unmarshal([]byte(run(t, "uploadbox-receiver", "audit", "list", "--type", kind, "--json", "--data", dataA, "--database", url)), &es); err != nil {
			t.Fatal(err)
		}
		return es
	}
	rec, conn := listed("recording"), listed("device.connect")
	var got []string
	for _, e := range rec {
		got = append(got, e.Event+"/"+e.By)
	}
	if strings.Join(got, " ") != "recording.delete/admin recording.purge/admin" || !strings.Contains(rec[1].Detail, "recording "+r.ID+": "+strconv.Itoa(sealed)+" segments") {
		t.Fatalf("recording audit entries %q, want the delete and one purge of %s's %d segments: %+v", got, r.ID, sealed, rec)
	}
	if len(conn) == 0 || rec[0].Receiver == "" || rec[1].Receiver != rec[0].Receiver || conn[0].Receiver == rec[0].Receiver {
		t.Fatalf("writers: the delete by %q, the purge by %q (want both B), the first connection by %q (want A)", rec[0].Receiver, rec[1].Receiver, conn[0].Receiver)
	}
	list, err := gw.Client().ListObjectsV2(t.Context(), &s3.ListObjectsV2Input{Bucket: aws.String(gw.Bucket)})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range list.Contents {
		if slices.Contains(r.Keys, aws.ToString(o.Key)) {
			t.Errorf("purged segment %s is still in the bucket", aws.ToString(o.Key))
		}
	}
}
