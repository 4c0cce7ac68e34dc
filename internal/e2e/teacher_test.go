package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/wire"
)

// teacherEvents opens GET /v1/teacher/events with token and sends each
// event's name and data (room events decoded) on the channel until the
// stream ends or the test does.
type sseEvent struct {
	Name string
	Room receiver.TeacherRoom
	At   time.Time
}

func teacherEvents(t *testing.T, c *http.Client, b enrolled, token string) <-chan sseEvent {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "https://"+b.rcv.addr+"/v1/teacher/events", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	// No client timeout: the stream is long-lived (the test's context ends it).
	sc := &http.Client{Transport: c.Transport}
	resp, err := sc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("teacher events: HTTP %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	ch := make(chan sseEvent, 64)
	go func() {
		defer resp.Body.Close()
		defer close(ch)
		r := bufio.NewScanner(resp.Body)
		r.Buffer(make([]byte, 64<<10), 1<<20)
		var ev sseEvent
		for r.Scan() {
			line := r.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				ev.Name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				if ev.Name == "room" {
					if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &ev.Room); err != nil {
						t.Errorf("room event %q: %v", line, err)
					}
				}
			case line == "" && ev.Name != "":
				ev.At = time.Now()
				select {
				case ch <- ev:
				case <-t.Context().Done():
					return
				}
				ev = sseEvent{}
			}
		}
	}()
	return ch
}

// awaitRoom reads events until one of room satisfies ok (or the generous
// deadline passes: then the test fails, showing the last one).
func awaitRoom(t *testing.T, events <-chan sseEvent, room, what string, ok func(receiver.TeacherRoom) bool) sseEvent {
	t.Helper()
	deadline := time.After(30 * time.Second)
	var last sseEvent
	for {
		select {
		case ev, open := <-events:
			if !open {
				t.Fatalf("the event stream ended waiting for %s (last %+v)", what, last)
			}
			if ev.Name == "room" && ev.Room.Device == room {
				last = ev
				if ok(ev.Room) {
					return ev
				}
			}
		case <-deadline:
			b, _ := json.Marshal(last.Room)
			t.Fatalf("no event with %s within 30s; last: %s", what, b)
		}
	}
}

func teacherPost(t *testing.T, c *http.Client, b enrolled, room, token string, body any) (int, receiver.TeacherDecisionAnswer, map[string]string) {
	t.Helper()
	j, _ := json.Marshal(body)
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, "https://"+b.rcv.addr+"/v1/teacher/rooms/"+room+"/decision", bytes.NewReader(j))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var ans receiver.TeacherDecisionAnswer
	var problem map[string]string
	json.Unmarshal(raw, &ans)
	json.Unmarshal(raw, &problem)
	return resp.StatusCode, ans, problem
}

func teacherGet(t *testing.T, c *http.Client, b enrolled, path, token string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "https://"+b.rcv.addr+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

func viewing(r receiver.TeacherRoom, viewer string) bool {
	return r.State != nil && slices.ContainsFunc(r.State.Watching, func(w wire.ConsentWatching) bool { return w.Viewer == viewer })
}

// TestTeacherControl (issue 13): a teacher account sees its room's
// consent state on the receiver as the box pushes it, and decides there.
// Through the real binaries: the teacher's event stream shows the coach's
// request (asked through the relay), the teacher's POST accepts it and the
// coach's held offer gets 201, the stream shows the coach watching, end
// all → nobody watching (the coach in its cooldown); the box stopped →
// the room offline, without its last state. A coach's token on the
// teacher endpoints is 403 role, a room not allowed 403 room; the box's
// audit names teacher:NAME. The time from the coach's POST to the event
// is logged (not asserted).
func TestTeacherControl(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon and a receiver; skipped under -short")
	}
	b, lb, p := startRelayBox(t)
	c := receiverClient(t, b)
	teacher, role := receiverLoginRole(t, b, "tess", "teacher")
	if role != "teacher" {
		t.Fatalf("the login answer names role %q, want teacher", role)
	}
	coach := receiverLogin(t, b, "coach-c")
	for _, name := range []string{"coach-c", "tess"} {
		run(t, "uploadbox-receiver", "viewers", "allow", name, "room-7", "--data", b.rcv.data)
	}
	var list []struct{ Name, Role string }
	if err := json.Unmarshal([]byte(run(t, "uploadbox-receiver", "viewers", "list", "--json", "--data", b.rcv.data)), &list); err != nil {
		t.Fatal(err)
	}
	if got := list[0].Name + "=" + list[0].Role + " " + list[1].Name + "=" + list[1].Role; got != "coach-c=viewer tess=teacher" {
		t.Fatalf("viewers list roles: %s", got)
	}

	// The stream starts with the room; the box's state follows (it pushed
	// it after connecting and when the session started).
	events := teacherEvents(t, c, b, teacher)
	awaitRoom(t, events, "room-7", "the room online and recording", func(r receiver.TeacherRoom) bool {
		return r.Online && r.State != nil && r.State.Recording && len(r.State.Pending) == 0
	})

	// The coach asks through the relay: the request reaches the stream.
	asked := time.Now()
	held := heldOffer(t, c, b, "room-7", coach)
	ev := awaitRoom(t, events, "room-7", "coach-c's request", func(r receiver.TeacherRoom) bool {
		return r.State != nil && len(r.State.Pending) == 1 && r.State.Pending[0].Viewer == "coach-c"
	})
	t.Logf("coach's POST to the teacher's event: %s", ev.At.Sub(asked).Round(time.Millisecond))
	pending := ev.Room.State.Pending[0]
	if pending.Request == "" || pending.AskedAt.IsZero() {
		t.Fatalf("pending request without its id or time: %+v", pending)
	}

	// Refusals: a coach's token (role), a teacher without the room
	// (room), no token.
	for _, path := range []string{"/v1/teacher/rooms", "/v1/teacher/events"} {
		if code, body := teacherGet(t, c, b, path, coach); code != http.StatusForbidden || !strings.Contains(string(body), `"reason":"role"`) {
			t.Errorf("GET %s with a coach's token: HTTP %d %s, want 403 role", path, code, body)
		}
	}
	if code, _, problem := teacherPost(t, c, b, "room-7", coach, map[string]string{"decision": "accept", "request": pending.Request}); code != http.StatusForbidden || problem["reason"] != "role" {
		t.Errorf("a coach's decision: HTTP %d %v, want 403 role", code, problem)
	}
	other, _ := receiverLoginRole(t, b, "tom", "teacher")
	if code, _, problem := teacherPost(t, c, b, "room-7", other, map[string]string{"decision": "end_all"}); code != http.StatusForbidden || problem["reason"] != "room" {
		t.Errorf("a teacher without the room: HTTP %d %v, want 403 room", code, problem)
	}
	if code, _, problem := teacherPost(t, c, b, "room-7", "", map[string]string{"decision": "end_all"}); code != http.StatusUnauthorized || problem["reason"] != "token" {
		t.Errorf("no token: HTTP %d %v, want 401 token", code, problem)
	}

	// The teacher accepts on the receiver: the coach's held offer gets 201.
	code, ans, problem := teacherPost(t, c, b, "room-7", teacher, map[string]string{"decision": "accept", "request": pending.Request, "for": "15m"})
	if code != http.StatusOK || ans.Result.Viewer != "coach-c" || ans.Result.State != "accepted" {
		t.Fatalf("accept: HTTP %d %+v %v", code, ans, problem)
	}
	a := <-held
	if a == nil {
		t.FailNow()
	}
	if a.Status != http.StatusCreated {
		t.Fatalf("held offer after the teacher's accept: HTTP %d %s", a.Status, a.Body)
	}
	awaitRoom(t, events, "room-7", "coach-c watching", func(r receiver.TeacherRoom) bool {
		return viewing(r, "coach-c") && len(r.State.Pending) == 0
	})
	code, raw := teacherGet(t, c, b, "/v1/teacher/rooms", teacher)
	var rooms receiver.TeacherRooms
	if err := json.Unmarshal(raw, &rooms); err != nil || code != http.StatusOK || len(rooms.Rooms) != 1 || !viewing(rooms.Rooms[0], "coach-c") {
		t.Fatalf("GET /v1/teacher/rooms: HTTP %d %s", code, raw)
	}
	// The same request again: the box's refusal with its status.
	if code, _, problem := teacherPost(t, c, b, "room-7", teacher, map[string]string{"decision": "decline", "request": pending.Request}); code < 400 || code >= 500 || problem["reason"] != wire.DecisionNotPending {
		t.Errorf("declining a request already accepted: HTTP %d %v, want the box's not-pending", code, problem)
	}

	// End all: nobody watches, the coach is in its cooldown.
	code, ans, problem = teacherPost(t, c, b, "room-7", teacher, map[string]string{"decision": "end_all"})
	if code != http.StatusOK || ans.Result.Ended != 1 {
		t.Fatalf("end all: HTTP %d %+v %v", code, ans, problem)
	}
	awaitRoom(t, events, "room-7", "nobody watching", func(r receiver.TeacherRoom) bool {
		return r.State != nil && len(r.State.Watching) == 0 &&
			slices.ContainsFunc(r.State.Cooldowns, func(c wire.ConsentCooldown) bool { return c.Viewer == "coach-c" && c.Reason == "ended" })
	})

	// The box's audit names the teacher.
	var es []auditEntry
	ctl(t, lb.boxDirs, &es, "consent", "audit", "--last", "0")
	var got []string
	for _, e := range es {
		if e.Event == "consent.accept" || e.Event == "consent.end_all" {
			got = append(got, e.Event+" "+e.Identity+" by "+e.By)
		}
	}
	if want := "consent.accept coach-c by teacher:tess\nconsent.end_all coach-c by teacher:tess"; strings.Join(got, "\n") != want {
		t.Errorf("box audit:\n%s\nwant:\n%s", strings.Join(got, "\n"), want)
	}

	// The box stops: the room is offline, its last state not shown.
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		t.Fatal("the daemon did not stop within 20 s of SIGTERM")
	}
	awaitRoom(t, events, "room-7", "the room offline", func(r receiver.TeacherRoom) bool { return !r.Online && r.State == nil })

	rlog, _ := os.ReadFile(filepath.Join(b.rcv.data, "audit.jsonl"))
	for _, want := range []string{`"event":"viewer.role","identity":"tess"`, `"event":"teacher.role","identity":"coach-c"`} {
		if !strings.Contains(string(rlog), want) {
			t.Errorf("receiver audit has no %s", want)
		}
	}
}
