package e2e

import (
	"context"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/agent/live/livetest"
	"github.com/uploadbox/uploadbox/internal/netns"
)

// openCoachPage opens the receiver's coach page in Chromium on the
// coach's network, signed in as viewer, rooms listed.
func (c *crossnet) openCoachPage(t *testing.T, viewer string) coachPage {
	t.Helper()
	opts := livetest.BrowserOptions{Width: 390, Height: 844}
	opts.NodeModules, _ = filepath.Abs("../../.cache/npm/node_modules")
	if c.net != nil {
		opts.Wrap = c.net.Coach.Wrap()
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	t.Cleanup(cancel)
	pg, err := livetest.OpenPage(ctx, "https://"+c.b.rcv.addr+"/", opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Close() })
	page := coachPage{pg, t}
	page.wait("the sign-in form", func(s livetest.PageState) bool { return s.State == "signed-out" && s.SignIn })
	c.signInAs(page, viewer)
	return page
}

// signInAs adds viewer at the receiver, allows it room-7 and signs it in
// on page (signing out whoever was in).
func (c *crossnet) signInAs(page coachPage, viewer string) {
	page.t.Helper()
	const password = "Correct-Horse-Battery-9"
	addViewer(page.t, c.b.rcv.data, viewer, password)
	run(page.t, "uploadbox-receiver", "viewers", "allow", viewer, "room-7", "--data", c.b.rcv.data)
	if !page.Last().SignIn {
		page.click("#signout")
		page.state("signed-out")
	}
	page.signIn(viewer, password)
	page.wait("the rooms", func(s livetest.PageState) bool { return s.State == "rooms" && len(s.Rooms) == 1 })
}

// relayedBytes is what the receiver's TURN relay carried for viewer.
func relayedBytes(t *testing.T, data, viewer string) int64 {
	var n int64
	for _, a := range turnStatus(t, data).Active {
		if a.Room == "room-7" && a.Viewer == viewer {
			n += a.BytesToPeers + a.BytesFromPeers
		}
	}
	return n
}

// coachFlow is issue 12's "Done when" on the coach page, wherever c runs:
// the coach signs in, asks, the teacher accepts (CLI) and Chromium decodes
// frames; a revoke leaves no new frame after 1 s and the page says the
// teacher ended it; a declined request shows declined; a view outlives its
// token; the box's daemon killed shows the box offline, and the view comes
// back without a reload once it runs again. A teacher's no sticks for the
// viewer it was said to (consent.decline_cooldown), so each step signs in
// another coach. During the first view Chromium's selected ICE pair must
// come to satisfy path (Chromium may start on one pair and move to a
// better one as its checks complete).
func coachFlow(t *testing.T, c *crossnet, what string, path func(local, remote string) bool) firstView {
	page := c.openCoachPage(t, "coach-c")
	page.askAndAccept(c.lb, "coach-c")
	s := page.wait(what, func(s livetest.PageState) bool { return s.Local != "" && path(s.Local, s.Remote) })
	first := firstView{local: s.Local, remote: s.Remote, relayed: relayedBytes(t, c.b.rcv.data, "coach-c")}

	run(t, "uploadbox", "consent", "revoke", "coach-c", "--socket", c.lb.socket)
	time.Sleep(time.Second)
	frames := page.Last().Frames
	time.Sleep(time.Second)
	if f := page.Last().Frames; f != frames {
		t.Errorf("Chromium decoded %d frames more than 1 s after the revoke", f-frames)
	}
	if s := page.state("ended"); s.Reason != "revoked" || s.Text != "The teacher ended the live view." {
		t.Errorf("revoked: %+v", s)
	}

	c.signInAs(page, "coach-d")
	page.click(`button.ask[data-room="room-7"]`)
	page.state("waiting")
	run(t, "uploadbox", "consent", "deny", pendingRequest(t, c.lb, "coach-d"), "--socket", c.lb.socket)
	if s := page.state("declined"); !strings.Contains(s.Text, "declined") {
		t.Errorf("declined: %+v", s)
	}

	// The box's daemon dies during a view and comes back.
	c.signInAs(page, "coach-e")
	page.askAndAccept(c.lb, "coach-e")
	c.p.cmd.Process.Signal(syscall.SIGKILL)
	<-c.p.done
	if s := page.state("offline"); !strings.Contains(s.Text, "offline") || strings.Contains(s.Text, "teacher ended") {
		t.Errorf("box killed: %+v", s)
	}
	c.p = startDaemonIn(t, c.boxNS(), c.lb.boxDirs)
	page.state("no-lesson")
	var st sessionStatus
	ctl(t, c.lb.boxDirs, &st, "session", "start", "--for", "30m")
	run(t, "uploadbox", "consent", "accept", pendingRequest(t, c.lb, "coach-e"), "--for", "30m", "--socket", c.lb.socket)
	if s := page.wait("frames after the restart", func(s livetest.PageState) bool { return s.State == "playing" && s.Frames >= 10 }); s.Loads != 1 {
		t.Errorf("the page loaded %d times, want once (no reload)", s.Loads)
	}
	page.click("#stop")
	page.state("idle")

	// A receiver issuing 15 s tokens: a view outlives its token.
	c.b.rcv.cmd.Process.Signal(syscall.SIGTERM)
	c.b.rcv.cmd.Wait()
	c.b.rcv = startReceiverIn(t, c.recvNS(), c.b.rcv.data, c.b.rcv.addr, "--turn-listen", c.turnListen(), "--viewer-token-ttl", "15s")
	waitDevice(t, c.b.rcv.data, "room-7", "connected again", func(d deviceControl) bool { return d.Control.Connected })
	c.signInAs(page, "coach-f")
	signedIn := time.Now()
	page.outlivesToken(page.askAndAccept(c.lb, "coach-f"), signedIn.Add(15*time.Second))
	return first
}

// outlivesToken checks that the view playing (started before the sign-in
// token expires at expired) still plays, with new frames, after it.
func (p coachPage) outlivesToken(playing livetest.PageState, expired time.Time) {
	p.t.Helper()
	if time.Now().After(expired) {
		p.t.Fatal("the view started after the token expired; the test cannot show it outlives the token")
	}
	time.Sleep(time.Until(expired.Add(3 * time.Second)))
	later := p.Last()
	if later.State != "playing" || later.Frames <= playing.Frames {
		p.t.Fatalf("3 s after the token expired the page shows %+v (frames %d before)", later, playing.Frames)
	}
	p.wait("more frames", func(s livetest.PageState) bool { return s.Frames >= later.Frames+25 })
}

// firstView is the ICE candidate types of the pair Chromium selected for
// the first view and the bytes the TURN relay had carried for it then.
type firstView struct {
	local, remote string
	relayed       int64
}

// TestCoachPageAcrossNetworks (issue 12): coachFlow with the box and the
// coach's Chromium on two networks with no route between them: the media
// go through the receiver's TURN relay (a relay candidate in the pair
// Chromium selected; the relay's counters show the bytes).
func TestCoachPageAcrossNetworks(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a receiver, the daemon and Chromium in network namespaces; skipped under -short")
	}
	c := startCrossnet(t)
	c.unreachable(t, c.lb.live)
	v := coachFlow(t, c, "a relayed candidate pair (across the networks only a relayed pair can work)", relayedPair)
	t.Logf("Chromium's ICE pair %s/%s, %d bytes through the relay", v.local, v.remote, v.relayed)
	if v.relayed == 0 {
		t.Errorf("Chromium selected a %s/%s pair and the relay carried no bytes for it", v.local, v.remote)
	}
}

// TestCoachPageDirectPath (issue 12): coachFlow with everything on
// 127.0.0.1 and the relay on (the page and the box both have relay
// candidates): Chromium takes the direct path.
func TestCoachPageDirectPath(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a receiver, the daemon and Chromium; skipped under -short")
	}
	c := startViewing(t, nil, "--turn-listen", "127.0.0.1:0")
	v := coachFlow(t, c, "a direct candidate pair (everything is on one machine)", func(l, r string) bool { return !relayedPair(l, r) })
	t.Logf("Chromium's ICE pair %s/%s", v.local, v.remote)
}

// relayedPair says a candidate pair goes through a TURN relay.
func relayedPair(local, remote string) bool { return local == "relay" || remote == "relay" }

// boxNS and recvNS are the box's and the receiver's namespaces (nil: here).
func (c *crossnet) boxNS() *netns.NS {
	if c.net == nil {
		return nil
	}
	return c.net.Box
}

func (c *crossnet) recvNS() *netns.NS {
	if c.net == nil {
		return nil
	}
	return c.net.Recv
}

// turnListen is where the receiver's TURN server listens.
func (c *crossnet) turnListen() string {
	if c.net == nil {
		return "127.0.0.1:0"
	}
	return c.net.Service.String() + ":0"
}
