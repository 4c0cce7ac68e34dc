package e2e

import (
	"path/filepath"
	"testing"

	"github.com/uploadbox/uploadbox/internal/pgtest"
	"github.com/uploadbox/uploadbox/internal/rrproxy"
	"github.com/uploadbox/uploadbox/internal/s3test"
)

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
	if left := staged(t, client, gw.Bucket); len(left) != 0 {
		t.Fatalf("staged objects left in the bucket: %v", left)
	}
	if n := lb.Connections()[rcv2.addr]; n == 0 {
		t.Fatal("the second receiver was never used")
	}
}
