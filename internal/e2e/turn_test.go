package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/agent/live/livetest"
	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/receiver/turn"
)

// turnStatus is `uploadbox-receiver turn status --json`.
func turnStatus(t *testing.T, data string) turn.Status {
	t.Helper()
	var st turn.Status
	if err := json.Unmarshal([]byte(run(t, "uploadbox-receiver", "turn", "status", "--json", "--data", data)), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func auditEntries(t *testing.T, path, event string) []audit.Entry {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []audit.Entry
	for _, line := range strings.Split(string(data), "\n") {
		var e audit.Entry
		if json.Unmarshal([]byte(line), &e) == nil && e.Event == event {
			out = append(out, e)
		}
	}
	return out
}

// TestLiveViewTURN (issue 12): the receiver runs its TURN server
// (--turn-listen). A relayed WHEP exchange hands TURN credentials to the
// box with the offer (the box allocates a relay, audited as the box) and
// to the viewer in the 201's Link headers. A viewer forced to use relays
// only (ICE transport policy "relay") with those credentials gets the
// box's video through the receiver's relay, DTLS-encrypted to the box's
// own certificate (the fingerprint uploadbox status shows): its
// allocation is audited with the viewer and the room, and the relay's
// counters show the bytes.
func TestLiveViewTURN(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon and a receiver; skipped under -short")
	}
	dir := t.TempDir()
	b := setupBoxWith(t, dir, []string{"--turn-listen", "127.0.0.1:0"}, nil)
	lb := liveBox{live: freePort(t), indicator: filepath.Join(dir, "indicator")}
	os.WriteFile(lb.indicator, nil, 0o600)
	lb.boxDirs = writeBoxConfig(t, dir, b.state, "live:\n  enabled: true\n  listen: "+lb.live+"\nindicator:\n  path: "+lb.indicator+"\n"+fastLink)
	startDaemon(t, lb.boxDirs)
	waitControl(t, lb.boxDirs, "connected", connected)
	var st sessionStatus
	ctl(t, lb.boxDirs, &st, "session", "start", "--for", "10m")
	rcvAudit := filepath.Join(b.rcv.data, "audit.jsonl")

	c := receiverClient(t, b)
	token := receiverLogin(t, b, "coach-c")
	run(t, "uploadbox-receiver", "viewers", "allow", "coach-c", "room-7", "--data", b.rcv.data)
	ts := turnStatus(t, b.rcv.data)
	if len(ts.URLs) != 2 || !strings.HasPrefix(ts.URLs[0], "turn:127.0.0.1:") || ts.Allocated != 0 {
		t.Fatalf("turn status before any view: %+v", ts)
	}

	// A refused offer (pending: no grant yet) carries no credential.
	r := relayOffer(t, c, b, "room-7", token, 0)
	if reason, _ := refusal(t, r); r.Status != http.StatusForbidden || reason != "pending" {
		t.Fatalf("offer before the grant: HTTP %d %s", r.Status, r.Body)
	}
	if links := livetest.ICEServersFromLinks(r.Header); len(links) != 0 {
		t.Fatalf("a refused offer carries TURN credentials: %+v", links)
	}
	var reqs []struct{ ID, Viewer, State string }
	ctl(t, lb.boxDirs, &reqs, "consent", "list")
	if len(reqs) != 1 {
		t.Fatalf("consent list: %+v", reqs)
	}
	run(t, "uploadbox", "consent", "accept", reqs[0].ID, "--for", "30m", "--socket", lb.socket)

	// Admitted: the 201 carries the viewer's credential, one Link per
	// transport; the box got its own with the offer and allocated.
	first := relayOffer(t, c, b, "room-7", token, 0)
	if first.Status != http.StatusCreated {
		t.Fatalf("offer after the grant: HTTP %d %s", first.Status, first.Body)
	}
	ice := livetest.ICEServersFromLinks(first.Header)
	user := regexp.MustCompile(`^[0-9]+:viewer:room-7:coach-c$`)
	if len(ice) != 2 || ice[0].URLs[0] != ts.URLs[0] || ice[1].URLs[0] != ts.URLs[1] || !user.MatchString(ice[0].Username) || ice[0].Credential == "" || ice[0].Credential == nil {
		t.Fatalf("Link headers %q, parsed %+v", first.Header.Values("Link"), ice)
	}
	if !strings.Contains(strings.Join(first.Header.Values("Link"), "\n"), `credential-type="password"`) {
		t.Errorf("Link headers without credential-type: %q", first.Header.Values("Link"))
	}
	var boxAlloc bool
	for _, e := range auditEntries(t, rcvAudit, "turn.allocate") {
		boxAlloc = boxAlloc || (e.Outcome == "ok" && e.Identity == "room-7" && strings.Contains(e.Detail, "box room-7 for viewer coach-c"))
	}
	if !boxAlloc {
		t.Fatalf("the box made no TURN allocation with the credential relayed with the offer: %+v", auditEntries(t, rcvAudit, "turn.allocate"))
	}
	if !strings.Contains(first.Viewer.Answer, " typ relay ") {
		t.Errorf("the box's answer has no relay candidate:\n%s", first.Viewer.Answer)
	}

	// The viewer again, relays only, with the credential it was given:
	// the media can only come through the receiver's TURN server.
	relayed, err := livetest.Offer(t.Context(), c, "https://"+b.rcv.addr+"/v1/rooms/room-7/whep", token, livetest.Options{Loopback: true, ICEServers: ice, RelayOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { relayed.Viewer.Close() })
	if relayed.Status != http.StatusCreated {
		t.Fatalf("relay-only offer: HTTP %d %s", relayed.Status, relayed.Body)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if _, err := relayed.Viewer.WaitPackets(ctx, "video"); err != nil {
		t.Fatalf("no video through the TURN relay: %v", err)
	}
	// The relay moved ciphertext: the answer names the box's own DTLS
	// certificate, the one the viewer's DTLS peer holds.
	checkAnswerIdentity(t, "relay-only viewer", relayed, statusDTLS(t, lb.boxDirs))
	ts = turnStatus(t, b.rcv.data)
	var viewerBytes int64
	for _, a := range ts.Active {
		if !a.Box && a.Viewer == "coach-c" && a.Room == "room-7" {
			viewerBytes += a.BytesFromPeers
		}
	}
	if viewerBytes == 0 || ts.BytesFromPeers == 0 {
		t.Fatalf("the viewer's relay shows no bytes from the box: %+v", ts)
	}
	t.Logf("the viewer's relays got %d bytes from the box; the TURN server made %d allocations", viewerBytes, ts.Allocated)
	var viewerAlloc bool
	for _, e := range auditEntries(t, rcvAudit, "turn.allocate") {
		viewerAlloc = viewerAlloc || (e.Outcome == "ok" && e.Identity == "coach-c" && strings.Contains(e.Detail, "viewer coach-c in room room-7"))
	}
	if !viewerAlloc {
		t.Fatal("the viewer's TURN allocation is not in the receiver's audit log")
	}
	out := run(t, "uploadbox-receiver", "turn", "status", "--data", b.rcv.data)
	if !strings.Contains(out, "room room-7, viewer coach-c") {
		t.Errorf("turn status:\n%s", out)
	}
	if pass := ice[0].Credential.(string); fileHas(t, rcvAudit, pass) || strings.Contains(b.rcv.stderr.String(), pass) {
		t.Error("a TURN password is in the receiver's audit log or log")
	}
}
