package receiver_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/agent/link"
	"github.com/uploadbox/uploadbox/internal/viewtoken"
	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/wire"
)

// TestDecide: the receiver signs a teacher's decision with its token key
// (which the box trusts from enrollment, token.pub) only for an account
// allowed the room, sends it over the box's control connection and
// returns the box's answer; an offline box is an error; each decision
// sent is audited.
func TestDecide(t *testing.T) {
	h := start(t)
	pub, err := viewtoken.ReadPublicKeyFile(filepath.Join(filepath.Dir(h.data), "box", viewtoken.ReceiverKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan wire.Decision, 4)
	// A fake box that verifies the statement as the daemon does.
	c := link.New(link.Options{
		Receiver: h.box.Receiver, TLS: h.box.TLSConfig(),
		Hello:        wire.Hello{Device: "room-9", Version: "test", Capabilities: []string{wire.OpDecision}},
		PingInterval: 200 * time.Millisecond, PingTimeout: time.Second, RetryMax: time.Second,
		Serve: func(_ context.Context, op string, params json.RawMessage) wire.Response {
			var p wire.DecisionParams
			json.Unmarshal(params, &p)
			d, err := wire.VerifyDecision(pub, p.Statement, time.Now())
			if op != wire.OpDecision || err != nil {
				res, _ := json.Marshal(wire.DecisionResult{Reason: wire.DecisionForged})
				return wire.Response{Status: http.StatusForbidden, Error: "refused: " + op, Result: res}
			}
			got <- d
			res, _ := json.Marshal(wire.DecisionResult{Decision: d.Decision, Request: d.Request, Viewer: "coach-c", State: "accepted"})
			return wire.Response{Status: http.StatusOK, Result: res}
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	waitFor(t, "connected", func() bool { return connectedIn(t, h, "room-9") })

	in := receiver.DecideRequest{Teacher: "tess", Request: "0123456789abcdef", Decision: wire.DecisionAccept, Grant: wire.GrantLesson}
	if _, err := h.srv.Decide(t.Context(), "room-9", in, "test"); err == nil || !strings.Contains(err.Error(), "not an account allowed room room-9") {
		t.Fatalf("decide for an unknown account: %v", err)
	}
	if err := h.admin.AddViewer("tess", "Correct-Horse-Battery-9"); err != nil {
		t.Fatal(err)
	}
	if err := h.admin.AllowRoom("tess", "room-9"); err != nil {
		t.Fatal(err)
	}
	bad := in
	bad.Grant = "forever"
	if _, err := h.srv.Decide(t.Context(), "room-9", bad, "test"); err == nil || !strings.Contains(err.Error(), "grant") {
		t.Fatalf("decide with a bad grant: %v", err)
	}

	// Through the admin socket, as the CLI does.
	ans, err := h.admin.Decide("room-9", in)
	if err != nil {
		t.Fatal(err)
	}
	d := <-got
	if ans.Status != http.StatusOK || ans.Result.Viewer != "coach-c" || d.Teacher != "tess" || d.Device != "room-9" || d.Grant != wire.GrantLesson ||
		d.Expires.Sub(d.IssuedAt) != time.Minute || !strings.HasPrefix(ans.Statement, "ubxd1.") {
		t.Fatalf("answer %+v, the box got %+v", ans, d)
	}
	// A statement forwarded as it is; the box's refusal comes back.
	ans, err = h.admin.Decide("room-9", receiver.DecideRequest{Statement: "ubxd1.bm9wZQ.AAAA"})
	if err != nil || ans.Status != http.StatusForbidden || ans.Result.Reason != wire.DecisionForged {
		t.Fatalf("forwarded statement: %+v, %v", ans, err)
	}
	if err := h.admin.AllowRoom("tess", "room-8"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.srv.Decide(t.Context(), "room-8", in, "test"); !errors.Is(err, receiver.ErrOffline) {
		t.Fatalf("decide for a box without a connection: %v", err)
	}
	log := h.auditText(t)
	if n := strings.Count(log, `"event":"consent.decision"`); n != 3 || !strings.Contains(string(log), `"by":"teacher:tess"`) ||
		!strings.Contains(string(log), `"outcome":"refused"`) || !strings.Contains(string(log), `"outcome":"failed"`) {
		t.Fatalf("%d consent.decision entries (want 3: ok by teacher:tess, refused, failed):\n%s", n, log)
	}
}
