package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/agent/live/livetest"
	"github.com/uploadbox/uploadbox/wire"
)

// decide runs `uploadbox-receiver consent decide` with args (and stdin),
// returning the JSON answer, stderr and whether it succeeded.
func decide(t *testing.T, data, stdin string, args ...string) (answer struct {
	Statement string
	Status    int
	Error     string
	Result    wire.DecisionResult
}, stderr string, ok bool) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "uploadbox-receiver"), append(append([]string{"consent", "decide"}, args...), "--json", "--data", data)...)
	cmd.Stdin = strings.NewReader(stdin)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if len(out) > 0 {
		if jerr := json.Unmarshal(out, &answer); jerr != nil {
			t.Fatalf("consent decide %v: output %q: %v", args, out, jerr)
		}
	}
	return answer, errb.String(), err == nil
}

// heldOffer sends a viewer's offer to the receiver's relay of room with
// Prefer: wait=20, in the background: the box holds it for the teacher.
func heldOffer(t *testing.T, c *http.Client, b enrolled, room, token string) <-chan *livetest.Response {
	t.Helper()
	done := make(chan *livetest.Response, 1)
	go func() {
		r, err := livetest.Offer(t.Context(), c, "https://"+b.rcv.addr+"/v1/rooms/"+room+"/whep", token, livetest.Options{Loopback: true, Wait: 20 * time.Second})
		if err != nil {
			t.Error(err)
		} else {
			t.Cleanup(func() { r.Viewer.Close() })
		}
		done <- r
	}()
	return done
}

// startRelayBox enrolls a box with live view on, starts its daemon, waits
// until its control connection to the receiver is up and starts a
// ten-minute recording session.
func startRelayBox(t *testing.T) (enrolled, liveBox, *daemonProc) {
	t.Helper()
	return startRelayBoxWith(t, nil)
}

// startRelayBoxWith is startRelayBox with extra serve flags.
func startRelayBoxWith(t *testing.T, serve []string) (enrolled, liveBox, *daemonProc) {
	t.Helper()
	return startRelayBoxIn(t, t.TempDir(), serve, nil)
}

// startRelayBoxIn is startRelayBoxWith in dir (the receiver's data
// directory is dir/receiver), the box reaching the receiver through via
// (setupBox).
func startRelayBoxIn(t *testing.T, dir string, serve []string, via func(addr string) string) (enrolled, liveBox, *daemonProc) {
	t.Helper()
	return startRelayBoxLive(t, dir, serve, via, "")
}

// startRelayBoxLive is startRelayBoxIn with more keys of the box's live
// section (each line "  key: value\n").
func startRelayBoxLive(t *testing.T, dir string, serve []string, via func(addr string) string, live string) (enrolled, liveBox, *daemonProc) {
	t.Helper()
	b := setupBoxWith(t, dir, serve, via)
	lb := liveBox{live: freePort(t), indicator: filepath.Join(dir, "indicator")}
	os.WriteFile(lb.indicator, nil, 0o600)
	lb.boxDirs = writeBoxConfig(t, dir, b.state, "live:\n  enabled: true\n  listen: "+lb.live+"\n"+live+"indicator:\n  path: "+lb.indicator+"\n"+fastLink)
	p := startDaemon(t, lb.boxDirs)
	waitControl(t, lb.boxDirs, "connected", connected)
	var st sessionStatus
	ctl(t, lb.boxDirs, &st, "session", "start", "--for", "10m")
	return b, lb, p
}

// acceptHeld has coach-c (token coach) send an offer for room-7 through
// b's receiver, the box hold it, and tess accept it through the same
// receiver's admin socket (consent decide) for 30 minutes; the coach must
// get the answer and video. It returns the signed statement and the coach's
// answer (its viewer).
func acceptHeld(t *testing.T, b enrolled, lb liveBox, c *http.Client, coach string) (string, *livetest.Response) {
	t.Helper()
	held := heldOffer(t, c, b, "room-7", coach)
	req := pendingRequest(t, lb, "coach-c")
	ans, stderr, ok := decide(t, b.rcv.data, "", "room-7", req, "accept", "--as", "tess", "--for", "30m")
	if !ok || ans.Status != http.StatusOK || ans.Result.Viewer != "coach-c" || ans.Result.State != "accepted" {
		t.Fatalf("accept: %+v %s", ans, stderr)
	}
	a := <-held
	if a == nil {
		t.FailNow()
	}
	if a.Status != http.StatusCreated {
		t.Fatalf("held offer after the teacher's accept: HTTP %d %s", a.Status, a.Body)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	if _, err := a.Viewer.WaitPackets(ctx, "video"); err != nil {
		t.Fatalf("no video after the teacher's accept: %v", err)
	}
	return ans.Statement, a
}

// TestTeacherDecisionThroughReceiver (issue 13): a teacher's decision
// reaches the box as a statement the receiver signs, over the control
// connection: accepted → the coach's held offer is answered and video
// flows; the box's audit names the teacher; the same statement sent again
// and a statement signed with another key are refused by the box and
// audited there; a declined coach is told "declined" and asking again
// makes no new request; the teacher ends all viewing ("ended") and stops
// and starts the recording, after which asking again is a new request.
func TestTeacherDecisionThroughReceiver(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon and a receiver; skipped under -short")
	}
	b, lb, _ := startRelayBox(t)

	c := receiverClient(t, b)
	coach := receiverLogin(t, b, "coach-c")
	receiverLogin(t, b, "tess")
	for _, name := range []string{"coach-c", "tess"} {
		run(t, "uploadbox-receiver", "viewers", "allow", name, "room-7", "--data", b.rcv.data)
	}

	// An account not allowed the room cannot decide for it: nothing is
	// sent to the box.
	receiverLogin(t, b, "mallory")
	if _, stderr, ok := decide(t, b.rcv.data, "", "room-7", "end_all", "--as", "mallory"); ok || !strings.Contains(stderr, "not an account allowed room room-7") {
		t.Fatalf("decide as an account without the room: ok=%t %s", ok, stderr)
	}

	// The coach asks; the teacher accepts through the receiver.
	statement, a := acceptHeld(t, b, lb, c, coach)
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()

	// The same statement again: refused by the box (replayed).
	again, stderr, ok := decide(t, b.rcv.data, statement+"\n", "room-7", "--statement-stdin")
	if ok || again.Result.Reason != wire.DecisionReplayed || !strings.Contains(stderr, "refused the decision (replayed)") {
		t.Fatalf("replayed statement: ok=%t %+v %s", ok, again, stderr)
	}
	// A statement signed with another key: refused (forged).
	_, other, _ := ed25519.GenerateKey(nil)
	forged, _, err := wire.MintDecision(other, "tess", "room-7", "", wire.DecisionEndAll, "", time.Now(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if f, stderr, ok := decide(t, b.rcv.data, forged+"\n", "room-7", "--statement-stdin"); ok || f.Result.Reason != wire.DecisionForged {
		t.Fatalf("forged statement: ok=%t %+v %s", ok, f, stderr)
	}
	// Neither touched the grant: video still flows.
	if _, err := a.Viewer.WaitPackets(ctx, "video"); err != nil {
		t.Fatalf("the refused statements ended the coach's video: %v", err)
	}

	// A second coach is declined: the held offer is told so, and asking
	// again is refused without a new request.
	coach2 := receiverLogin(t, b, "coach-d")
	run(t, "uploadbox-receiver", "viewers", "allow", "coach-d", "room-7", "--data", b.rcv.data)
	held := heldOffer(t, c, b, "room-7", coach2)
	req2 := pendingRequest(t, lb, "coach-d")
	if ans, stderr, ok := decide(t, b.rcv.data, "", "room-7", req2, "decline", "--as", "tess"); !ok || ans.Result.State != "denied" {
		t.Fatalf("decline: %+v %s", ans, stderr)
	}
	d := <-held
	if d == nil {
		t.FailNow()
	}
	if reason, r := refusal(t, d); d.Status != http.StatusForbidden || reason != "declined" || r != req2 {
		t.Fatalf("held offer after the decline: HTTP %d %s, want 403 declined", d.Status, d.Body)
	}
	if r := relayOffer(t, c, b, "room-7", coach2, 0); r.Status != http.StatusForbidden {
		t.Fatalf("asking again: HTTP %d", r.Status)
	} else if reason, _ := refusal(t, r); reason != "declined" {
		t.Fatalf("asking again: reason %q, want declined", reason)
	}
	var reqs []struct{ ID, Viewer, State string }
	ctl(t, lb.boxDirs, &reqs, "consent", "list")
	if len(reqs) != 2 {
		t.Fatalf("consent list after asking again: %+v, want no new request", reqs)
	}

	// End all viewing: coach-c's video stops, its page is told "ended",
	// and asking again is refused the same way.
	if ans, stderr, ok := decide(t, b.rcv.data, "", "room-7", "end_all", "--as", "tess"); !ok || ans.Result.Ended != 1 {
		t.Fatalf("end all: %+v %s", ans, stderr)
	}
	if resp := relayDo(t, c, http.MethodGet, a.Viewer.Location, coach); resp.StatusCode != http.StatusGone {
		t.Errorf("coach-c's session after end all: HTTP %d, want 410", resp.StatusCode)
	}
	if r := relayOffer(t, c, b, "room-7", coach, 0); r.Status != http.StatusForbidden {
		t.Fatalf("asking again after end all: HTTP %d", r.Status)
	} else if reason, _ := refusal(t, r); reason != "ended" {
		t.Fatalf("asking again after end all: reason %q, want ended", reason)
	}
	// --anonymise goes with start_session only, and with a known mode: a
	// usage error and nothing sent (the receiver's count of decisions
	// below stays 7).
	for _, args := range [][]string{
		{"room-7", "end_all", "--anonymise", "whole"},
		{"room-7", "stop_session", "--anonymise", "off"},
		{"room-7", req2, "accept", "--anonymise", "masks"},
		{"room-7", "start_session", "--anonymise", "blur"},
	} {
		_, stderr, code := cpRun(t, "uploadbox-receiver", append(append([]string{"consent", "decide"}, args...), "--as", "tess", "--data", b.rcv.data)...)
		if code != 2 || !strings.Contains(stderr, "--anonymise") {
			t.Errorf("consent decide %v: exit %d, %q; want 2 naming --anonymise", args, code, stderr)
		}
	}
	// The teacher stops and starts the recording, with the picture
	// anonymised whole: the next lesson starts fresh, coach-d may ask
	// again.
	for _, args := range [][]string{{"stop_session"}, {"start_session", "--anonymise", "whole"}} {
		if _, stderr, ok := decide(t, b.rcv.data, "", append([]string{"room-7", "--as", "tess"}, args...)...); !ok {
			t.Fatalf("%v: %s", args, stderr)
		}
	}
	var st struct {
		Active    bool   `json:"active"`
		Anonymise string `json:"anonymise"`
	}
	if ctl(t, lb.boxDirs, &st, "session", "status"); !st.Active || st.Anonymise != "whole" {
		t.Errorf("session status after start_session --anonymise whole: %+v", st)
	}
	var es []auditEntry
	ctl(t, lb.boxDirs, &es, "consent", "audit", "--last", "0")
	var start auditEntry
	for _, e := range es {
		if e.Event == "session.start" {
			start = e
		}
	}
	if start.By != "teacher:tess" || !strings.HasSuffix(start.Detail, " anonymise=whole") {
		t.Errorf("box audit: last session.start %+v, want by teacher:tess ending anonymise=whole", start)
	}
	if r := relayOffer(t, c, b, "room-7", coach2, 0); r.Status != http.StatusForbidden {
		t.Fatalf("coach-d in the next session: HTTP %d", r.Status)
	} else if reason, _ := refusal(t, r); reason != "pending" {
		t.Fatalf("coach-d in the next session: reason %q, want pending", reason)
	}

	// The box's audit chain names the teacher for each decision, and the
	// refused statements with their reasons.
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	caller := "uid:" + me.Uid + "(" + me.Username + ")"
	got := decisionAudit(t, lb)
	want := []string{
		"session.start  by " + caller,
		"consent.accept coach-c by teacher:tess",
		"consent.decision refused reason=replayed by teacher:tess",
		"consent.decision refused reason=forged by ",
		"consent.deny coach-d by teacher:tess",
		"consent.end_all coach-c by teacher:tess",
		"session.stop  by teacher:tess",
		"session.start  by teacher:tess",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("box audit:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if out := run(t, "uploadbox", "consent", "audit", "--last", "0", "--socket", lb.socket); !strings.Contains(out, "teacher:tess") {
		t.Errorf("consent audit does not show the teacher:\n%s", out)
	}
	// The receiver audits what it sent and what the box answered.
	rlog, _ := os.ReadFile(filepath.Join(b.rcv.data, "audit.jsonl"))
	if !strings.Contains(string(rlog), `decision=start_session `) || !strings.Contains(string(rlog), ` anonymise=whole"`) {
		t.Errorf("receiver audit: no start_session with anonymise=whole\n%s", rlog)
	}
	if n := strings.Count(string(rlog), `"consent.decision"`); n != 7 {
		t.Errorf("receiver audited %d decisions, want 7 (accept, replayed, forged, decline, end all, stop, start)\n%s", n, rlog)
	}
}

// decisionAudit lists the decisions in the box's audit chain, who made
// them: "EVENT IDENTITY by BY" for accept, deny, end all and session
// start and stop, "consent.decision OUTCOME reason=… by BY" for a refused
// statement.
func decisionAudit(t *testing.T, lb liveBox) []string {
	t.Helper()
	var es []auditEntry
	ctl(t, lb.boxDirs, &es, "consent", "audit", "--last", "0")
	var got []string
	for _, e := range es {
		switch e.Event {
		case "consent.accept", "consent.deny", "consent.end_all", "session.start", "session.stop":
			got = append(got, e.Event+" "+e.Identity+" by "+e.By)
		case "consent.decision":
			reason, _, _ := strings.Cut(e.Detail, " ")
			got = append(got, e.Event+" "+e.Outcome+" "+reason+" by "+e.By)
		}
	}
	return got
}
