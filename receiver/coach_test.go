package receiver_test

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/internal/viewtoken"
	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/receiver/turn"
)

// coachClient trusts the receiver's CA, as the enrolled box does.
func coachClient(t *testing.T, h *harness) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(filepath.Join(h.data, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

func get(t *testing.T, c *http.Client, url, token string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// TestCoachPage: GET / is the coach's page under a strict CSP, and GET
// /v1/rooms lists the rooms the signed-in viewer is allowed, online while
// the box is connected, and nothing else.
func TestCoachPage(t *testing.T) {
	h := start(t)
	c := coachClient(t, h)
	base := "https://" + h.addr

	resp, body := get(t, c, base+"/", "")
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `id="signin"`) || !strings.Contains(string(body), "viewer.js") {
		t.Fatalf("GET /: HTTP %d\n%s", resp.StatusCode, body)
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("GET /: Content-Security-Policy %q", csp)
	}
	if resp, _ := get(t, c, base+"/viewer.js", ""); resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/javascript") {
		t.Errorf("GET /viewer.js: HTTP %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if resp, _ := get(t, c, base+"/nothing", ""); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /nothing: HTTP %d, want 404", resp.StatusCode)
	}

	if resp, body := get(t, c, base+"/v1/rooms", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("rooms without a token: HTTP %d %s", resp.StatusCode, body)
	}
	if err := h.admin.AddViewer("coach-r", "Correct-Horse-Battery-9"); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"room-9", "room-3"} {
		if err := h.admin.AllowRoom("coach-r", d); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.admin.AddViewer("coach-s", "Correct-Horse-Battery-9"); err != nil {
		t.Fatal(err)
	}
	rooms := func(name string) receiver.RoomList { return roomsOf(t, c, base, name) }
	if got := rooms("coach-s"); got.Viewer != "coach-s" || len(got.Rooms) != 0 {
		t.Errorf("a viewer allowed nothing is listed %+v", got)
	}
	want := []receiver.Room{{Name: "room-3"}, {Name: "room-9"}}
	if got := rooms("coach-r"); got.Viewer != "coach-r" || !reflect.DeepEqual(got.Rooms, want) {
		t.Errorf("rooms with the box offline: %+v, want %+v", got, want)
	}
	runLink(t, h, "room-9")
	waitFor(t, "connected", func() bool { return connectedIn(t, h, "room-9") })
	want[1].Online = true
	if got := rooms("coach-r"); !reflect.DeepEqual(got.Rooms, want) {
		t.Errorf("rooms with room-9 connected: %+v, want %+v", got, want)
	}
}

// roomsOf signs name in (password Correct-Horse-Battery-9) and returns its
// GET /v1/rooms.
func roomsOf(t *testing.T, c *http.Client, base, name string) receiver.RoomList {
	t.Helper()
	r, body := get(t, c, base+"/v1/rooms", login(t, c, base, name).Token)
	var out receiver.RoomList
	if err := json.Unmarshal(body, &out); err != nil || r.StatusCode != http.StatusOK {
		t.Fatalf("rooms of %s: HTTP %d %s", name, r.StatusCode, body)
	}
	return out
}

// TestRoomsICEServers: with TURN on, each room of GET /v1/rooms carries
// the viewer's TURN credential for that room (the TURN REST scheme:
// EXPIRY:viewer:ROOM:VIEWER), for the coach page's browser.
func TestRoomsICEServers(t *testing.T) {
	data := t.TempDir()
	srv, addr, stop := serve(t, receiver.ServerConfig{Data: data, Listen: "127.0.0.1:0", TURN: turn.Config{Listen: "127.0.0.1:0"}})
	t.Cleanup(func() { stop() })
	admin, err := receiver.OpenAdmin(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := admin.AddViewer("coach-t", "Correct-Horse-Battery-9"); err != nil {
		t.Fatal(err)
	}
	if err := admin.AllowRoom("coach-t", "room-5"); err != nil {
		t.Fatal(err)
	}
	got := roomsOf(t, coachClient(t, &harness{data: data}), "https://"+addr, "coach-t")
	if len(got.Rooms) != 1 || len(got.Rooms[0].ICEServers) != 1 {
		t.Fatalf("rooms with TURN on: %+v", got)
	}
	ice := got.Rooms[0].ICEServers[0]
	if len(ice.URLs) != 2 || !strings.Contains(ice.URLs[0], srv.TURNAddr()) || !strings.HasSuffix(ice.Username, ":viewer:room-5:coach-t") || ice.Credential == "" {
		t.Errorf("room-5's ICE server %+v, want TURN at %s for viewer:room-5:coach-t", ice, srv.TURNAddr())
	}
}

// TestRelayExpiredToken: a running view is bound to its grant, so the
// relay takes a session's GET and DELETE with its viewer's expired token
// on to the box (here: offline, 503 reason offline), while an offer, a
// PATCH and the room list need a token that has not expired (401).
func TestRelayExpiredToken(t *testing.T) {
	h := start(t)
	c := coachClient(t, h)
	base := "https://" + h.addr
	if err := h.admin.AddViewer("coach-x", "Correct-Horse-Battery-9"); err != nil {
		t.Fatal(err)
	}
	if err := h.admin.AllowRoom("coach-x", "room-9"); err != nil {
		t.Fatal(err)
	}
	key, err := viewtoken.ReadKeyFile(filepath.Join(h.data, receiver.TokenKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	expired, err := viewtoken.Mint(key, viewtoken.IssuerReceiver, "coach-x", time.Hour, time.Now().Add(-2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	session := base + "/v1/rooms/room-9/whep/SESSION"
	for _, tc := range []struct {
		method, url string
		want        int
		reason      string
	}{
		{http.MethodGet, session, http.StatusServiceUnavailable, "offline"},
		{http.MethodDelete, session, http.StatusServiceUnavailable, "offline"},
		{http.MethodPatch, session, http.StatusUnauthorized, "token"},
		{http.MethodPost, base + "/v1/rooms/room-9/whep", http.StatusUnauthorized, "token"},
		{http.MethodGet, base + "/v1/rooms", http.StatusUnauthorized, "token"},
	} {
		req, _ := http.NewRequestWithContext(t.Context(), tc.method, tc.url, strings.NewReader(""))
		req.Header.Set("Authorization", "Bearer "+expired)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var p struct{ Reason string }
		json.NewDecoder(resp.Body).Decode(&p)
		resp.Body.Close()
		if resp.StatusCode != tc.want || p.Reason != tc.reason {
			t.Errorf("%s %s with an expired token: HTTP %d %q, want %d %q", tc.method, tc.url, resp.StatusCode, p.Reason, tc.want, tc.reason)
		}
	}
}
