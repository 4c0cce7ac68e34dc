package e2e

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/agent/live/livetest"
)

var fingerprintRE = regexp.MustCompile(`(?m)^a=fingerprint:(\S+ \S+)\r?$`)

// statusDTLS is the fingerprint `uploadbox status --json` reports.
func statusDTLS(t *testing.T, d boxDirs) string {
	t.Helper()
	var st struct {
		LiveDTLS string `json:"live_dtls_fingerprint"`
	}
	ctl(t, d, &st, "status")
	if !strings.HasPrefix(st.LiveDTLS, "sha-256 ") {
		t.Fatalf("status reports live_dtls_fingerprint %q, want sha-256 …", st.LiveDTLS)
	}
	return st.LiveDTLS
}

// checkAnswerIdentity checks that an accepted offer's SDP answer carries
// fingerprint (and no other), and that the DTLS peer the viewer's media
// comes from holds that certificate.
func checkAnswerIdentity(t *testing.T, what string, r *livetest.Response, fingerprint string) {
	t.Helper()
	if r.Status != http.StatusCreated {
		t.Fatalf("%s: HTTP %d %s, want 201", what, r.Status, r.Body)
	}
	for _, m := range fingerprintRE.FindAllStringSubmatch(r.Viewer.Answer, -1) {
		if m[1] != fingerprint {
			t.Errorf("%s: the answer carries a=fingerprint:%s, the box shows %s", what, m[1], fingerprint)
		}
	}
	if !fingerprintRE.MatchString(r.Viewer.Answer) {
		t.Fatalf("%s: no a=fingerprint in the answer:\n%s", what, r.Viewer.Answer)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := r.Viewer.WaitPackets(ctx, "video"); err != nil {
		t.Fatalf("%s: no video: %v", what, err)
	}
	sum := sha256.Sum256(r.Viewer.PC.SCTP().Transport().GetRemoteCertificate())
	var hex []string
	for _, b := range sum {
		hex = append(hex, fmt.Sprintf("%02X", b))
	}
	if got := "sha-256 " + strings.Join(hex, ":"); got != fingerprint {
		t.Errorf("%s: the DTLS peer's certificate is %s, the box shows %s", what, got, fingerprint)
	}
}

// TestLiveDTLSIdentity (issue 12): the box's live view has one DTLS
// certificate, made at its first start and kept in its state directory.
// Every answer carries its fingerprint — two sessions on the box's own
// endpoint, one through the receiver's relay, and one after a restart —
// and it is what `uploadbox status` and `uploadbox diag` show, so that a
// coach can tell that DTLS ends at the box, not at the relay.
func TestLiveDTLSIdentity(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon and a receiver; skipped under -short")
	}
	b, lb, p := startLiveBox(t, t.TempDir())
	waitControl(t, lb.boxDirs, "connected", connected)
	var st sessionStatus
	ctl(t, lb.boxDirs, &st, "session", "start", "--for", "10m")

	fp := statusDTLS(t, lb.boxDirs)
	if keyInfo, err := os.Stat(filepath.Join(b.state, "live-dtls.key")); err != nil || keyInfo.Mode().Perm() != 0o600 {
		t.Fatalf("live-dtls.key: %v, want mode 0600", err)
	}
	out := run(t, "uploadbox", "status", "--socket", lb.socket)
	if !strings.Contains(out, "live dtls: "+fp+"\n") {
		t.Errorf("uploadbox status does not show the fingerprint:\n%s", out)
	}
	if m := diagDaemon(t, lb.boxDirs); m["live_dtls_fingerprint"] != fp {
		t.Errorf("diag --json: daemon metrics %v, want live_dtls_fingerprint %s", m, fp)
	}
	if res := runExit(t, 30*time.Second, "uploadbox", "diag", "--config", lb.config, "--check", "daemon"); res.code > 1 || !strings.Contains(res.stdout, "\nnote  live view DTLS fingerprint "+fp+"\n") {
		t.Errorf("diag (exit %d) does not show the fingerprint as a note:\n%s%s", res.code, res.stdout, res.stderr)
	}

	// Two sessions on the box's own endpoint.
	tokenA := grantViewer(t, b, lb, "coach-a")
	tokenB := grantViewer(t, b, lb, "coach-b")
	checkAnswerIdentity(t, "coach-a", lb.offer(t, tokenA, false), fp)
	checkAnswerIdentity(t, "coach-b", lb.offer(t, tokenB, false), fp)

	// Through the receiver's relay: the SDP the coach receives names the
	// box's certificate, and the DTLS peer is the box.
	c := receiverClient(t, b)
	tokenC := receiverLogin(t, b, "coach-c")
	run(t, "uploadbox-receiver", "viewers", "allow", "coach-c", "room-7", "--data", b.rcv.data)
	relayOffer(t, c, b, "room-7", tokenC, 0)
	run(t, "uploadbox", "consent", "accept", pendingRequest(t, lb, "coach-c"), "--socket", lb.socket)
	checkAnswerIdentity(t, "coach-c through the relay", relayOffer(t, c, b, "room-7", tokenC, 0), fp)

	// A restart keeps the identity.
	p.cmd.Process.Signal(syscall.SIGTERM)
	<-p.done
	p = startDaemon(t, lb.boxDirs)
	ctl(t, lb.boxDirs, &st, "session", "start", "--for", "10m")
	if again := statusDTLS(t, lb.boxDirs); again != fp {
		t.Fatalf("after a restart status reports %s, before %s", again, fp)
	}
	r := lb.offer(t, tokenA, false)
	if r.Status == http.StatusForbidden {
		run(t, "uploadbox", "consent", "accept", pendingRequest(t, lb, "coach-a"), "--socket", lb.socket)
		r = lb.offer(t, tokenA, false)
	}
	checkAnswerIdentity(t, "coach-a after a restart", r, fp)

	// A DTLS key others can read is refused, naming the chmod; the live
	// view does not start with it (nor replace it).
	p.cmd.Process.Signal(syscall.SIGTERM)
	<-p.done
	key := filepath.Join(b.state, "live-dtls.key")
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	certBefore := readFile(t, filepath.Join(b.state, "live-dtls.crt"))
	res := runExit(t, 30*time.Second, "uploadbox", "run", "--config", lb.config)
	if res.code == 0 || !strings.Contains(res.stderr, "chmod 600 "+key) {
		t.Fatalf("daemon with a 0644 live-dtls.key: exit %d, stderr lacks %q:\n%s", res.code, "chmod 600 "+key, res.stderr)
	}
	if readFile(t, filepath.Join(b.state, "live-dtls.crt")) != certBefore {
		t.Fatal("the daemon replaced the DTLS identity whose key it refused")
	}
}
