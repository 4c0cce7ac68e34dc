package receiver_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/agent/link"
	"github.com/uploadbox/uploadbox/internal/viewtoken"
	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/receiver/viewers"
	"github.com/uploadbox/uploadbox/wire"
)

// login signs name in and returns the login answer.
func login(t *testing.T, c *http.Client, base, name string) viewers.LoginResponse {
	t.Helper()
	lb, _ := json.Marshal(map[string]string{"name": name, "password": "Correct-Horse-Battery-9"})
	resp, err := c.Post(base+"/v1/login", "application/json", bytes.NewReader(lb))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var lr viewers.LoginResponse
	if err := json.NewDecoder(resp.Body).Decode(&lr); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("login %s: HTTP %d %v", name, resp.StatusCode, err)
	}
	return lr
}

// sseStream is an open GET /v1/teacher/events, read frame by frame.
type sseStream struct {
	frames chan string
}

func openEvents(t *testing.T, c *http.Client, base, token string) (*http.Response, *sseStream) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, base+"/v1/teacher/events", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return resp, nil
	}
	s := &sseStream{frames: make(chan string, 32)}
	go func() {
		defer resp.Body.Close()
		defer close(s.frames)
		r := bufio.NewReader(resp.Body)
		var frame strings.Builder
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			frame.WriteString(line)
			if line == "\n" {
				s.frames <- frame.String()
				frame.Reset()
			}
		}
	}()
	return resp, s
}

// next returns the next frame that is not a ping, checking the framing:
// "event: NAME\ndata: JSON\n\n".
func (s *sseStream) next(t *testing.T) (string, receiver.TeacherRoom) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case f, ok := <-s.frames:
			if !ok {
				t.Fatal("the event stream ended")
			}
			if f == ": ping\n\n" {
				continue
			}
			lines := strings.Split(strings.TrimSuffix(f, "\n\n"), "\n")
			if len(lines) != 2 || !strings.HasPrefix(lines[0], "event: ") || !strings.HasPrefix(lines[1], "data: ") {
				t.Fatalf("malformed frame %q", f)
			}
			var room receiver.TeacherRoom
			name := strings.TrimPrefix(lines[0], "event: ")
			if name == "room" {
				if err := json.Unmarshal([]byte(strings.TrimPrefix(lines[1], "data: ")), &room); err != nil {
					t.Fatalf("frame %q: %v", f, err)
				}
			}
			return name, room
		case <-deadline:
			t.Fatal("no event within 20 s")
		}
	}
}

// TestTeacherEndpoints: a teacher's token lists its rooms and streams
// them (framing, online/offline, the state the box pushes, an offline
// box's state not shown), and its decisions reach the box, whose answer
// comes back with the box's status. A coach's token is 403 role, a room
// not allowed 403 room, no token 401; the event streams are bounded per
// teacher. The login answer and the token carry the role, and the box's
// verifier accepts such a token.
func TestTeacherEndpoints(t *testing.T) {
	h := start(t)
	c := coachClient(t, h)
	base := "https://" + h.addr
	for _, a := range []struct{ name, role string }{{"tess", "teacher"}, {"coach-c", ""}, {"tom", "admin"}} {
		if err := h.admin.AddViewer(a.name, "Correct-Horse-Battery-9"); err != nil {
			t.Fatal(err)
		}
		if a.role != "" {
			if err := h.admin.SetViewerRole(a.name, a.role); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, n := range []string{"tess", "coach-c"} {
		if err := h.admin.AllowRoom(n, "room-9"); err != nil {
			t.Fatal(err)
		}
	}
	teacher, coach, admin := login(t, c, base, "tess"), login(t, c, base, "coach-c"), login(t, c, base, "tom")
	if teacher.Role != viewers.RoleTeacher || coach.Role != viewers.RoleViewer || admin.Role != viewers.RoleAdmin {
		t.Fatalf("login roles: %q %q %q", teacher.Role, coach.Role, admin.Role)
	}
	pub, err := viewtoken.ReadPublicKeyFile(filepath.Join(filepath.Dir(h.data), "box", viewtoken.ReceiverKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	claims, err := viewtoken.NewVerifier(viewtoken.TrustedKey{Issuer: viewtoken.IssuerReceiver, Key: pub}).Verify(teacher.Token, time.Now())
	if err != nil || claims.Role != viewers.RoleTeacher || claims.Subject != "tess" {
		t.Fatalf("the box's verifier on a teacher's token: %+v %v", claims, err)
	}

	// Refusals (bounded: a stream let through by mistake would not end).
	short := &http.Client{Transport: c.Transport, Timeout: 10 * time.Second}
	for _, p := range []string{"/v1/teacher/rooms", "/v1/teacher/events"} {
		if resp, body := get(t, short, base+p, coach.Token); resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), `"reason":"role"`) {
			t.Errorf("%s with a coach's token: HTTP %d %s", p, resp.StatusCode, body)
		}
		if resp, body := get(t, short, base+p, ""); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), `"reason":"token"`) {
			t.Errorf("%s without a token: HTTP %d %s", p, resp.StatusCode, body)
		}
	}
	post := func(token, device string, body any) (int, map[string]any) {
		t.Helper()
		j, _ := json.Marshal(body)
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, base+"/v1/teacher/rooms/"+device+"/decision", bytes.NewReader(j))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	endAll := map[string]string{"decision": wire.DecisionEndAll}
	if code, out := post(coach.Token, "room-9", endAll); code != http.StatusForbidden || out["reason"] != "role" {
		t.Errorf("a coach's decision: %d %v", code, out)
	}
	if code, out := post(admin.Token, "room-9", endAll); code != http.StatusForbidden || out["reason"] != "room" {
		t.Errorf("an admin's decision for a room not allowed: %d %v", code, out)
	}
	if code, out := post(teacher.Token, "room-9", endAll); code != http.StatusServiceUnavailable || out["reason"] != "offline" {
		t.Errorf("a decision for an offline box: %d %v", code, out)
	}
	if code, out := post(teacher.Token, "room-9", map[string]string{"decision": wire.DecisionStartSession, "for": "45m"}); code != http.StatusBadRequest || out["reason"] != "malformed" {
		t.Errorf("start_session with a length: %d %v", code, out)
	}
	// An anonymisation mode goes with start_session only, and must be one
	// the box knows: refused before the box.
	for _, body := range []map[string]string{{"decision": wire.DecisionEndAll, "anonymise": "whole"}, {"decision": wire.DecisionStartSession, "anonymise": "blur"}} {
		if code, out := post(teacher.Token, "room-9", body); code != http.StatusBadRequest || out["reason"] != "malformed" || !strings.Contains(out["error"].(string), "anonymis") {
			t.Errorf("%v: %d %v, want 400 malformed naming the mode", body, code, out)
		}
	}

	// The stream: the room offline first.
	resp, events := openEvents(t, c, base, teacher.Token)
	if events == nil || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: HTTP %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if name, room := events.next(t); name != "room" || room.Device != "room-9" || room.Online || room.State != nil {
		t.Fatalf("first event %s %+v, want room-9 offline", name, room)
	}
	// Bounded per teacher: with MaxTeacherStreams open, one more is 503.
	for range receiver.MaxTeacherStreams - 1 {
		if r, s := openEvents(t, c, base, teacher.Token); s == nil {
			t.Fatalf("stream within the bound: HTTP %d", r.StatusCode)
		}
	}
	if r, s := openEvents(t, c, base, teacher.Token); s != nil || r.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("one stream more than %d: HTTP %d", receiver.MaxTeacherStreams, r.StatusCode)
	}

	// A box connects and pushes its state; decisions reach it.
	decided := make(chan string, 4)
	box := link.New(link.Options{
		Receiver: h.box.Receiver, TLS: h.box.TLSConfig(),
		Hello:        wire.Hello{Device: "room-9", Version: "test"},
		PingInterval: 200 * time.Millisecond, PingTimeout: time.Second, RetryMax: time.Second,
		Serve: func(_ context.Context, op string, params json.RawMessage) wire.Response {
			var p wire.DecisionParams
			json.Unmarshal(params, &p)
			d, err := wire.VerifyDecision(pub, p.Statement, time.Now())
			if err != nil {
				return wire.Response{Status: http.StatusForbidden, Error: err.Error()}
			}
			talk := ""
			if d.Talk {
				talk = " talk"
			}
			decided <- d.Teacher + " " + d.Decision + " " + d.Request + " " + d.Grant + talk
			if d.Decision == wire.DecisionDecline {
				res, _ := json.Marshal(wire.DecisionResult{Decision: d.Decision, Request: d.Request, Reason: wire.DecisionNotPending})
				return wire.Response{Status: http.StatusConflict, Error: "not pending", Result: res}
			}
			res, _ := json.Marshal(wire.DecisionResult{Decision: d.Decision, Request: d.Request, Viewer: "coach-c", State: "accepted"})
			return wire.Response{Status: http.StatusOK, Result: res}
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- box.Run(ctx) }()
	defer func() { cancel(); <-done }()
	if _, room := events.next(t); !room.Online || room.State != nil {
		t.Fatalf("after the box connected: %+v, want online without a state", room)
	}
	waitFor(t, "the box's side open", func() bool { return box.State().Connected })
	st := wire.ConsentState{Recording: true, Pending: []wire.ConsentPending{{Request: "0123456789abcdef", Viewer: "coach-c", AskedAt: time.Now().UTC(), Audio: true}},
		Watching: []wire.ConsentWatching{}, Cooldowns: []wire.ConsentCooldown{}, At: time.Now().UTC()}
	if r, err := box.Request(t.Context(), wire.OpConsentState, st); err != nil || r.Status != http.StatusOK {
		t.Fatalf("push: %+v %v", r, err)
	}
	if _, room := events.next(t); !room.Online || room.State == nil || len(room.State.Pending) != 1 || room.State.Pending[0].Viewer != "coach-c" {
		t.Fatalf("after the push: %+v", room)
	}
	if r, body := get(t, c, base+"/v1/teacher/rooms", teacher.Token); r.StatusCode != http.StatusOK || !strings.Contains(string(body), `"request":"0123456789abcdef"`) {
		t.Fatalf("rooms: HTTP %d %s", r.StatusCode, body)
	}
	if r, body := get(t, c, base+"/v1/teacher/rooms", admin.Token); r.StatusCode != http.StatusOK || string(body) != "{\"rooms\":[]}\n" {
		t.Errorf("an admin allowed no room: HTTP %d %s", r.StatusCode, body)
	}
	// Any other op from the box is refused.
	if _, err := box.Request(t.Context(), "nonsense", nil); err == nil || !strings.Contains(err.Error(), wire.CodeUnknownOp) {
		t.Errorf("unknown op from the box: %v", err)
	}

	code, out := post(teacher.Token, "room-9", map[string]string{"decision": wire.DecisionAccept, "request": "0123456789abcdef", "for": "15m"})
	if got := <-decided; code != http.StatusOK || got != "tess accept 0123456789abcdef 15m" || out["result"].(map[string]any)["viewer"] != "coach-c" {
		t.Fatalf("accept: %d %v; the box got %q", code, out, got)
	}
	// "Coach may speak": the statement the box verifies carries talk; talk
	// with a decision that grants nothing is refused before the box.
	code, out = post(teacher.Token, "room-9", map[string]any{"decision": wire.DecisionVideoOnly, "request": "0123456789abcdef", "for": "15m", "talk": true})
	if got := <-decided; code != http.StatusOK || got != "tess video_only 0123456789abcdef 15m talk" {
		t.Fatalf("video_only with talk: %d %v; the box got %q", code, out, got)
	}
	if code, out := post(teacher.Token, "room-9", map[string]any{"decision": wire.DecisionDecline, "request": "0123456789abcdef", "talk": true}); code != http.StatusBadRequest || out["reason"] != "malformed" || !strings.Contains(out["error"].(string), `"talk"`) {
		t.Errorf("decline with talk: %d %v, want 400 malformed naming talk", code, out)
	}
	code, out = post(teacher.Token, "room-9", map[string]string{"decision": wire.DecisionDecline, "request": "0123456789abcdef"})
	if <-decided; code != http.StatusConflict || out["reason"] != wire.DecisionNotPending || out["error"] != "not pending" {
		t.Fatalf("the box's refusal: %d %v", code, out)
	}

	// The box goes away: offline, its state not shown.
	cancel()
	<-done
	done <- nil
	if _, room := events.next(t); room.Online || room.State != nil {
		t.Fatalf("after the box left: %+v", room)
	}

	log := h.auditText(t)
	for _, want := range []string{`"event":"viewer.role","identity":"tess","source":"local","outcome":"ok","detail":"role viewer -\u003e teacher"`, `"event":"teacher.role","identity":"coach-c"`, `"event":"teacher.room","identity":"tom"`, `"by":"teacher:tess"`, `request=0123456789abcdef grant=15m nonce=`, ` talk=true"`} {
		if !strings.Contains(string(log), want) {
			t.Errorf("audit log has no %s", want)
		}
	}
}
