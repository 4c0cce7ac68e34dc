package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/internal/viewtoken"
	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/wire"
)

// TestTeacherTalkDecision (issue 16): "Coach may speak" through the real
// binaries. The receiver's admin socket (consent decide --talk) signs an
// accept that lets the coach speak: the statement, verified with the
// box's own copy of the token key, says talk; --talk with a decline is a
// usage error and nothing is sent. The teacher's endpoint takes "talk"
// with video_only and signs it the same way (the receiver's audit says
// talk=true); "talk" with a decision that grants nothing is 400
// malformed, before the box. The box's answers say the grants let the
// coaches speak, and its consent state (the teacher's rooms) marks both.
func TestTeacherTalkDecision(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon and a receiver; skipped under -short")
	}
	b, lb, _ := startRelayBox(t)
	c := receiverClient(t, b)
	teacher, _ := receiverLoginRole(t, b, "tess", "teacher")
	coach := receiverLogin(t, b, "coach-c")
	coach2 := receiverLogin(t, b, "coach-d")
	for _, name := range []string{"coach-c", "coach-d", "tess"} {
		run(t, "uploadbox-receiver", "viewers", "allow", name, "room-7", "--data", b.rcv.data)
	}
	pub, err := viewtoken.ReadPublicKeyFile(filepath.Join(b.state, viewtoken.ReceiverKeyFile))
	if err != nil {
		t.Fatal(err)
	}

	// The admin socket: accept --talk.
	held := heldOffer(t, c, b, "room-7", coach)
	req := pendingRequest(t, lb, "coach-c")
	if _, stderr, ok := decide(t, b.rcv.data, "", "room-7", req, "decline", "--as", "tess", "--talk"); ok || !strings.Contains(stderr, "--talk goes with accept and video_only") {
		t.Fatalf("decline --talk: ok=%t %s", ok, stderr)
	}
	ans, stderr, ok := decide(t, b.rcv.data, "", "room-7", req, "accept", "--as", "tess", "--talk", "--for", "15m")
	if !ok || ans.Status != http.StatusOK || ans.Result.Viewer != "coach-c" || !ans.Result.Talk {
		t.Fatalf("accept --talk: %+v %s", ans, stderr)
	}
	if d, err := wire.VerifyDecision(pub, ans.Statement, time.Now()); err != nil || !d.Talk || d.Decision != wire.DecisionAccept || d.Teacher != "tess" {
		t.Fatalf("the statement the box got: %+v %v, want tess's accept with talk", d, err)
	}
	if a := <-held; a == nil || a.Status != http.StatusCreated {
		t.Fatalf("coach-c's held offer after the accept: %+v", a)
	}

	// The teacher's endpoint: talk with a decline is refused before the
	// box; video_only with talk is signed and sent.
	held = heldOffer(t, c, b, "room-7", coach2)
	req = pendingRequest(t, lb, "coach-d")
	if code, _, problem := teacherPost(t, c, b, "room-7", teacher, map[string]any{"decision": "decline", "request": req, "talk": true}); code != http.StatusBadRequest || problem["reason"] != "malformed" || !strings.Contains(problem["error"], `"talk"`) {
		t.Fatalf("decline with talk: HTTP %d %v, want 400 malformed naming talk", code, problem)
	}
	code, tans, problem := teacherPost(t, c, b, "room-7", teacher, map[string]any{"decision": "video_only", "request": req, "for": "15m", "talk": true})
	if code != http.StatusOK || tans.Result.Viewer != "coach-d" || !tans.Result.Talk {
		t.Fatalf("video_only with talk: HTTP %d %+v %v", code, tans, problem)
	}
	if a := <-held; a == nil || a.Status != http.StatusCreated {
		t.Fatalf("coach-d's held offer after the accept: %+v", a)
	}
	awaitRoom(t, teacherEvents(t, c, b, teacher), "room-7", "coach-c and coach-d watching, both may speak", func(r receiver.TeacherRoom) bool {
		return r.State != nil && len(r.State.Watching) == 2 && r.State.Watching[0].Talk && r.State.Watching[1].Talk
	})
	rlog, _ := os.ReadFile(filepath.Join(b.rcv.data, "audit.jsonl"))
	var talks []string
	for _, line := range strings.Split(string(rlog), "\n") {
		if strings.Contains(line, `"event":"consent.decision"`) && strings.Contains(line, "talk=true") {
			talks = append(talks, line)
		}
	}
	if len(talks) != 2 || !strings.Contains(talks[0], "decision=accept") || !strings.Contains(talks[1], "decision=video_only") {
		t.Errorf("the receiver's audit of decisions with talk:\n%s\nwant the accept and the video_only", strings.Join(talks, "\n"))
	}
}
