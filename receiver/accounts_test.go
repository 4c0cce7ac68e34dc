package receiver_test

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestDisabledTeacherStreamEnds: a teacher's open event stream ends with
// "expired" as soon as an administrator disables the account (or removes
// it), through the admin socket of the running server; the token is then
// refused.
func TestDisabledTeacherStreamEnds(t *testing.T) {
	h := start(t)
	c := coachClient(t, h)
	base := "https://" + h.addr
	for _, n := range []string{"tess", "tina"} {
		if err := h.admin.AddViewer(n, "Correct-Horse-Battery-9"); err != nil {
			t.Fatal(err)
		}
		if err := h.admin.SetViewerRole(n, "teacher"); err != nil {
			t.Fatal(err)
		}
		if err := h.admin.AllowRoom(n, "room-9"); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name   string
		change func(string) error
	}{
		{"tess", h.admin.DisableViewer},
		{"tina", h.admin.RemoveViewer},
	} {
		tok := login(t, c, base, tc.name).Token
		_, events := openEvents(t, c, base, tok)
		if events == nil {
			t.Fatal("no event stream")
		}
		if name, _ := events.next(t); name != "room" {
			t.Fatalf("first event %s", name)
		}
		if err := tc.change(tc.name); err != nil {
			t.Fatal(err)
		}
		if name, _ := events.next(t); name != "expired" {
			t.Fatalf("%s: after the change the stream sent %q, want expired", tc.name, name)
		}
		select {
		case _, open := <-events.frames:
			if open {
				t.Fatalf("%s: the stream goes on", tc.name)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: the stream did not end", tc.name)
		}
		short := &http.Client{Transport: c.Transport, Timeout: 10 * time.Second}
		if resp, body := get(t, short, base+"/v1/teacher/rooms", tok); resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), `"reason":"token"`) {
			t.Fatalf("%s: rooms with the old token: HTTP %d %s", tc.name, resp.StatusCode, body)
		}
	}
}
