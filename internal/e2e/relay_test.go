package e2e

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/agent/live/livetest"
	"github.com/uploadbox/uploadbox/internal/viewtoken"
)

// receiverClient trusts the receiver's CA (from the box's enrollment).
func receiverClient(t *testing.T, b enrolled) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(filepath.Join(b.state, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	return &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
}

// relayOffer POSTs a pion viewer's offer to the receiver's relay of room.
func relayOffer(t *testing.T, c *http.Client, b enrolled, room, token string, wait time.Duration) *livetest.Response {
	t.Helper()
	r, err := livetest.Offer(t.Context(), c, "https://"+b.rcv.addr+"/v1/rooms/"+room+"/whep", token, livetest.Options{Loopback: true, Wait: wait})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Viewer.Close() })
	return r
}

func relayDo(t *testing.T, c *http.Client, method, url, token string) *http.Response {
	t.Helper()
	req, _ := http.NewRequestWithContext(t.Context(), method, url, bytes.NewReader(nil))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/trickle-ice-sdpfrag")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func fileHas(t *testing.T, path, s string) bool {
	t.Helper()
	b, _ := os.ReadFile(path)
	return strings.Contains(string(b), s)
}

// TestLiveViewRelay (issue 12): a coach outside the LAN logs in at the
// receiver and reaches the box's live view through the receiver's WHEP
// relay. The receiver refuses rooms not allowed (403, nothing reaches the
// box) and bad tokens (401); the box, not the receiver, admits: a viewer
// is pending until the teacher accepts, and a token the box does not
// trust (signed by a receiver whose key changed) is refused by the box.
// DELETE ends the session; a box offline is 503.
func TestLiveViewRelay(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon and a receiver; skipped under -short")
	}
	b, lb, p := startRelayBox(t)

	c := receiverClient(t, b)
	token := receiverLogin(t, b, "coach-c")

	// No token or a forged one: 401 from the receiver.
	if r := relayOffer(t, c, b, "room-7", "", 0); r.Status != http.StatusUnauthorized {
		t.Fatalf("no token: HTTP %d %s, want 401", r.Status, r.Body)
	}
	_, other, _ := ed25519.GenerateKey(nil)
	forged, err := viewtoken.Mint(other, viewtoken.IssuerReceiver, "coach-c", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if r := relayOffer(t, c, b, "room-7", forged, 0); r.Status != http.StatusUnauthorized {
		t.Fatalf("forged token: HTTP %d %s, want 401", r.Status, r.Body)
	}

	// Rooms are denied unless allowed: 403 from the receiver, nothing
	// reaches the box (no consent request, nothing in its audit).
	r := relayOffer(t, c, b, "room-7", token, 0)
	if reason, _ := refusal(t, r); r.Status != http.StatusForbidden || reason != "room" {
		t.Fatalf("room not allowed: HTTP %d %s, want 403 room", r.Status, r.Body)
	}
	var reqs []struct{ ID, Viewer, State string }
	ctl(t, lb.boxDirs, &reqs, "consent", "list")
	if len(reqs) != 0 || fileHas(t, lb.audit, "coach-c") {
		t.Fatalf("a viewer refused by the receiver reached the box: consent list %+v", reqs)
	}
	if fileHas(t, lb.audit, "receiver-relay") {
		t.Fatal("a token refused by the receiver reached the box (the box audited it)")
	}
	if !fileHas(t, filepath.Join(b.rcv.data, "audit.jsonl"), `"live.room"`) {
		t.Error("the receiver did not audit the refused room")
	}

	run(t, "uploadbox-receiver", "viewers", "allow", "coach-c", "room-7", "--data", b.rcv.data)
	if out := run(t, "uploadbox-receiver", "viewers", "list", "--data", b.rcv.data); !strings.Contains(out, "room-7") {
		t.Fatalf("viewers list does not show the room:\n%s", out)
	}
	// Allowed room: the box answers, pending until the teacher accepts.
	r = relayOffer(t, c, b, "room-7", token, 0)
	reason, req := refusal(t, r)
	if r.Status != http.StatusForbidden || reason != "pending" || req == "" {
		t.Fatalf("allowed room without consent: HTTP %d %s, want 403 pending", r.Status, r.Body)
	}
	// Another room (not allowed) stays refused.
	if r := relayOffer(t, c, b, "room-8", token, 0); r.Status != http.StatusForbidden {
		t.Fatalf("room-8: HTTP %d, want 403", r.Status)
	}

	// Held with Prefer: wait until the teacher accepts.
	done := make(chan *livetest.Response, 1)
	go func() {
		r, err := livetest.Offer(t.Context(), c, "https://"+b.rcv.addr+"/v1/rooms/room-7/whep", token, livetest.Options{Loopback: true, Wait: 20 * time.Second})
		if err != nil {
			t.Error(err)
		}
		done <- r
	}()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		ctl(t, lb.boxDirs, &reqs, "consent", "list")
		if len(reqs) == 1 && reqs[0].Viewer == "coach-c" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("consent list: %+v", reqs)
		}
	}
	run(t, "uploadbox", "consent", "accept", reqs[0].ID, "--for", "30m", "--socket", lb.socket)
	a := <-done
	if a == nil {
		t.FailNow()
	}
	t.Cleanup(func() { a.Viewer.Close() })
	if a.Status != http.StatusCreated || a.Header.Get("Preference-Applied") == "" {
		t.Fatalf("held offer after the accept: HTTP %d %v %s", a.Status, a.Header, a.Body)
	}
	if !strings.HasPrefix(a.Viewer.Location, "https://"+b.rcv.addr+"/v1/rooms/room-7/whep/") || !strings.Contains(a.Viewer.Answer, "a=fingerprint:sha-256") {
		t.Fatalf("answer: Location %q, SDP:\n%s", a.Viewer.Location, a.Viewer.Answer)
	}
	// The answer is the box's own: its peer connection sends the media.
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	if _, err := a.Viewer.WaitPackets(ctx, "video"); err != nil {
		t.Fatalf("no video through the relayed answer: %v", err)
	}

	// PATCH (trickle ICE) is not served by the box: its 405 comes back.
	if resp := relayDo(t, c, http.MethodPatch, a.Viewer.Location, token); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("PATCH: HTTP %d, want the box's 405", resp.StatusCode)
	}
	// DELETE ends the session; the box says it ended.
	if code, err := a.Viewer.Delete(t.Context(), c, token); err != nil || code != http.StatusOK {
		t.Fatalf("DELETE: %d %v", code, err)
	}
	if resp := relayDo(t, c, http.MethodGet, a.Viewer.Location, token); resp.StatusCode != http.StatusGone {
		t.Errorf("GET after DELETE: HTTP %d, want 410", resp.StatusCode)
	}

	// A receiver whose token key changed (its tokens are not the ones the
	// box trusts) relays them: the box refuses them, 401.
	b.rcv.cmd.Process.Signal(syscall.SIGTERM)
	b.rcv.cmd.Wait()
	os.Remove(filepath.Join(b.rcv.data, "token.key"))
	b.rcv = startReceiver(t, b.rcv.data, b.rcv.addr)
	waitDevice(t, b.rcv.data, "room-7", "connected again", func(d deviceControl) bool { return d.Control.Connected })
	newToken := login(t, c, b, "coach-c")
	if r := relayOffer(t, c, b, "room-7", newToken, 0); r.Status != http.StatusUnauthorized {
		t.Fatalf("token the box does not trust: HTTP %d %s, want the box's 401", r.Status, r.Body)
	}
	if !fileHas(t, lb.audit, "receiver-relay") {
		t.Error("the box did not audit the refused relayed token")
	}

	// The box goes offline: 503 with Retry-After.
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	waitDevice(t, b.rcv.data, "room-7", "disconnected", func(d deviceControl) bool { return !d.Control.Connected })
	r = relayOffer(t, c, b, "room-7", newToken, 0)
	if r.Status != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" || !strings.Contains(string(r.Body), "offline") {
		t.Fatalf("box offline: HTTP %d %v %s, want 503 offline with Retry-After", r.Status, r.Header, r.Body)
	}
}

// login logs name (added by receiverLogin) in again.
func login(t *testing.T, c *http.Client, b enrolled, name string) string {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"name": name, "password": "Correct-Horse-Battery-9"})
	resp, err := c.Post("https://"+b.rcv.addr+"/v1/login", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var lr struct{ Token string }
	if err := json.NewDecoder(resp.Body).Decode(&lr); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("login: HTTP %d, %v", resp.StatusCode, err)
	}
	return lr.Token
}
