package e2e

import (
	"context"
	"image/png"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/agent/live/livetest"
	"github.com/uploadbox/uploadbox/internal/audit"
)

// coachPage is the receiver's coach page open in Chromium, 390 px wide.
type coachPage struct {
	*livetest.Page
	t *testing.T
}

// openReceiverPage opens b's receiver page in Chromium, 390 px wide,
// with extra Chromium flags args, and waits for its sign-in form; it is
// closed when the test ends.
func openReceiverPage(t *testing.T, ctx context.Context, b enrolled, args ...string) coachPage {
	t.Helper()
	modules, _ := filepath.Abs("../../.cache/npm/node_modules")
	pg, err := livetest.OpenPage(ctx, "https://"+b.rcv.addr+"/", livetest.BrowserOptions{NodeModules: modules, Width: 390, Height: 844, Args: args})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Close() })
	page := coachPage{pg, t}
	page.wait("the sign-in form", func(s livetest.PageState) bool { return s.State == "signed-out" && s.SignIn })
	return page
}

// wait waits up to 40 s for the page to reach a state ok accepts.
func (p coachPage) wait(what string, ok func(livetest.PageState) bool) livetest.PageState {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.t.Context(), 40*time.Second)
	defer cancel()
	s, err := p.Wait(ctx, ok)
	if err != nil {
		p.t.Fatalf("the coach page never showed %s: %v", what, err)
	}
	return s
}

func (p coachPage) state(name string) livetest.PageState {
	p.t.Helper()
	return p.wait("state "+name, func(s livetest.PageState) bool { return s.State == name })
}

func (p coachPage) click(sel string) {
	p.t.Helper()
	if err := p.Click(p.t.Context(), sel); err != nil {
		p.t.Fatal(err)
	}
}

func (p coachPage) signIn(name, password string) {
	p.t.Helper()
	for _, f := range [][2]string{{"#name", name}, {"#password", password}} {
		if err := p.Fill(p.t.Context(), f[0], f[1]); err != nil {
			p.t.Fatal(err)
		}
	}
	p.click("#signin-button")
}

// askAndAccept asks for room-7 and accepts as the teacher (CLI); it
// returns once Chromium decodes frames.
func (p coachPage) askAndAccept(lb liveBox, viewer string) livetest.PageState {
	p.t.Helper()
	p.click(`button.ask[data-room="room-7"]`)
	p.state("waiting")
	run(p.t, "uploadbox", "consent", "accept", pendingRequest(p.t, lb, viewer), "--for", "30m", "--socket", lb.socket)
	return p.wait("frames", func(s livetest.PageState) bool { return s.State == "playing" && s.Frames >= 10 && s.Ends != "" })
}

// fits checks that nothing on the page overflows a 390 px window sideways
// and saves a screenshot as evidence.
func (p coachPage) fits(name string) {
	p.t.Helper()
	shot := filepath.Join(p.t.TempDir(), name+".png")
	if err := p.Screenshot(p.t.Context(), shot); err != nil {
		p.t.Fatal(err)
	}
	f, err := os.Open(shot)
	if err != nil {
		p.t.Fatal(err)
	}
	defer f.Close()
	img, err := png.DecodeConfig(f)
	if err != nil {
		p.t.Fatalf("screenshot %s: %v", name, err)
	}
	if s := p.Last(); s.ScrollWidth > 390 || img.Width > 390 {
		p.t.Errorf("%s: the page is %d px wide (screenshot %d px) in a 390 px window", name, s.ScrollWidth, img.Width)
	}
}

// TestCoachPage (issue 12): a coach uses the receiver's page, in Chromium
// 390 px wide, through the real receiver and daemon: sign-in (a wrong
// password is said so), only the rooms the coach may watch, ask → waiting
// → the teacher accepts → frames with the grant's end → revoke says the
// teacher ended it; a decline says declined; the session's stop says the
// lesson ended; the daemon killed says the box is offline and the view
// comes back without a reload once it runs again; a token that expires
// during a view does not end it, and afterwards the page asks to sign in
// again instead of offering "Ask to watch".
func TestCoachPage(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon, a receiver and Chromium; skipped under -short")
	}
	turnFlags := []string{"--turn-listen", "127.0.0.1:0"}
	b, lb, p := startRelayBoxWith(t, turnFlags)
	var st sessionStatus

	const password = "Correct-Horse-Battery-9"
	addViewer(t, b.rcv.data, "coach-c", password)
	addViewer(t, b.rcv.data, "coach-d", password)
	run(t, "uploadbox-receiver", "devices", "add", "room-8", "--data", b.rcv.data)
	run(t, "uploadbox-receiver", "viewers", "allow", "coach-c", "room-7", "--data", b.rcv.data)
	run(t, "uploadbox-receiver", "viewers", "allow", "coach-d", "room-8", "--data", b.rcv.data)

	modules, _ := filepath.Abs("../../.cache/npm/node_modules")
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	pg, err := livetest.OpenPage(ctx, "https://"+b.rcv.addr+"/", livetest.BrowserOptions{NodeModules: modules, Width: 390, Height: 844})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	page := coachPage{pg, t}

	// Sign-in: a wrong password is said so; the right one lists the rooms
	// this coach may watch (room-8 is another coach's).
	page.wait("the sign-in form", func(s livetest.PageState) bool { return s.State == "signed-out" && s.SignIn })
	page.fits("signin")
	page.signIn("coach-c", "wrong-password-1")
	if s := page.state("signin-failed"); s.Reason != "credentials" || !strings.Contains(s.Text, "Wrong name or password") {
		t.Errorf("wrong password: %+v", s)
	}
	page.signIn("coach-c", password)
	rooms := page.wait("the rooms", func(s livetest.PageState) bool { return s.State == "rooms" && len(s.Rooms) > 0 })
	if len(rooms.Rooms) != 1 || rooms.Rooms[0] != (livetest.Room{Name: "room-7", Online: true, Recording: rooms.Rooms[0].Recording, Ask: true}) || rooms.SignIn {
		t.Fatalf("rooms listed: %+v (sign-in form showing: %t), want room-7 online only", rooms.Rooms, rooms.SignIn)
	}
	page.fits("rooms")

	// Ask, accept, watch until the grant's end; the teacher revokes.
	accepted := time.Now()
	s := page.askAndAccept(lb, "coach-c")
	ends, err := time.Parse(time.RFC3339, s.Ends)
	if err != nil || ends.Before(accepted.Add(9*time.Minute)) || ends.After(time.Now().Add(31*time.Minute)) {
		t.Errorf("watching shows the grant's end %q (%v), want 30 min from the accept or the session's end (10 min)", s.Ends, err)
	}
	if !strings.Contains(s.Text, "until") || slices.ContainsFunc(s.Rooms, func(r livetest.Room) bool { return r.Ask }) {
		t.Errorf("watching: %+v (no ask while watching)", s)
	}
	t.Logf("watching: %q, ICE pair %s → %s", s.Text, s.Local, s.Remote)
	// The page gathers with the room's TURN credential from GET /v1/rooms:
	// the browser's own allocation is audited with its viewer and room.
	if !slices.ContainsFunc(auditEntries(t, filepath.Join(b.rcv.data, "audit.jsonl"), "turn.allocate"), func(e audit.Entry) bool {
		return e.Identity == "coach-c" && e.Outcome == "ok" && strings.Contains(e.Detail, "room room-7")
	}) {
		t.Errorf("the coach page's browser made no TURN allocation of its own (turn.allocate coach-c room-7)")
	}
	page.fits("watching")
	run(t, "uploadbox", "consent", "revoke", "coach-c", "--socket", lb.socket)
	if s := page.state("ended"); s.Reason != "revoked" || s.Text != "The teacher ended the live view." {
		t.Errorf("revoked: %+v", s)
	}
	// The teacher's no holds (the box's cooldown): asking again is told
	// so at once and makes no new request.
	page.click(`button.ask[data-room="room-7"]`)
	page.state("waiting")
	if s := page.state("ended"); s.Reason != "revoked" || !strings.Contains(s.Text, "teacher ended") {
		t.Errorf("asking again after the revoke: %+v", s)
	}
	var reqs []struct{ ID, Viewer, State string }
	ctl(t, lb.boxDirs, &reqs, "consent", "list")
	if slices.ContainsFunc(reqs, func(r struct{ ID, Viewer, State string }) bool { return r.State == "pending" }) {
		t.Errorf("asking in the cooldown made a request: %+v", reqs)
	}

	// The lesson ends during the view (a person stopping the session also
	// lifts the cooldown: the next lesson starts fresh).
	ctl(t, lb.boxDirs, nil, "session", "stop")
	ctl(t, lb.boxDirs, &st, "session", "start", "--for", "10m")
	page.askAndAccept(lb, "coach-c")
	ctl(t, lb.boxDirs, nil, "session", "stop")
	if s := page.state("lesson-ended"); s.Reason != "session ended" && s.Reason != "recording ended" || strings.Contains(s.Text, "teacher ended") {
		t.Errorf("session stopped: %+v", s)
	}
	ctl(t, lb.boxDirs, &st, "session", "start", "--for", "10m")

	// Declined, also when asking again; the teacher lets the coach in
	// after all by accepting the declined request.
	page.click(`button.ask[data-room="room-7"]`)
	page.state("waiting")
	declined := pendingRequest(t, lb, "coach-c")
	run(t, "uploadbox", "consent", "deny", declined, "--socket", lb.socket)
	if s := page.state("declined"); !strings.Contains(s.Text, "declined") {
		t.Errorf("declined: %+v", s)
	}
	page.click(`button.ask[data-room="room-7"]`)
	page.state("waiting")
	page.state("declined")
	run(t, "uploadbox", "consent", "accept", declined, "--socket", lb.socket)
	page.click(`button.ask[data-room="room-7"]`)
	page.wait("frames after the late accept", func(s livetest.PageState) bool { return s.State == "playing" && s.Frames >= 10 })
	page.click("#stop")
	page.state("idle")
	ctl(t, lb.boxDirs, nil, "session", "stop") // ends the grant: the next view needs an accept
	ctl(t, lb.boxDirs, &st, "session", "start", "--for", "10m")

	// The box goes offline during a view, stopped (SIGTERM) or killed, and
	// comes back: the page says so and recovers without a reload once a
	// lesson runs and the teacher accepts again (a restarted daemon has
	// neither).
	page.askAndAccept(lb, "coach-c")
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		p.cmd.Process.Signal(sig)
		<-p.done
		s := page.state("offline")
		if !strings.Contains(s.Text, "offline") || strings.Contains(s.Text, "teacher ended") {
			t.Errorf("box stopped by %v: %+v", sig, s)
		}
		t.Logf("box stopped by %v: the page says %q (reason %s)", sig, s.Text, s.Reason)
		p = startDaemon(t, lb.boxDirs)
		page.state("no-lesson")
		ctl(t, lb.boxDirs, &st, "session", "start", "--for", "10m")
		run(t, "uploadbox", "consent", "accept", pendingRequest(t, lb, "coach-c"), "--for", "30m", "--socket", lb.socket)
		s = page.wait("frames after the restart", func(s livetest.PageState) bool { return s.State == "playing" && s.Frames >= 10 })
		if s.Loads != 1 {
			t.Errorf("after %v the page loaded %d times, want once (no reload)", sig, s.Loads)
		}
	}

	// Tokens that expire: the receiver now issues 15 s tokens. A view
	// outlives its token; afterwards the page asks to sign in again.
	page.click("#stop")
	page.state("idle")
	ctl(t, lb.boxDirs, nil, "session", "stop") // ends the grant: the next view needs an accept
	ctl(t, lb.boxDirs, &st, "session", "start", "--for", "10m")
	b.rcv.cmd.Process.Signal(syscall.SIGTERM)
	b.rcv.cmd.Wait()
	b.rcv = startReceiver(t, b.rcv.data, b.rcv.addr, append(turnFlags, "--viewer-token-ttl", "15s")...)
	waitDevice(t, b.rcv.data, "room-7", "connected again", func(d deviceControl) bool { return d.Control.Connected })
	page.click("#signout")
	page.state("signed-out")
	page.signIn("coach-c", password)
	page.wait("the rooms", func(s livetest.PageState) bool { return s.State == "rooms" && len(s.Rooms) == 1 })
	signedIn := time.Now()
	page.outlivesToken(page.askAndAccept(lb, "coach-c"), signedIn.Add(15*time.Second))
	page.click("#stop")
	if s := page.state("signin-expired"); !s.SignIn || !strings.Contains(s.Text, "sign-in expired") || slices.ContainsFunc(s.Rooms, func(r livetest.Room) bool { return r.Ask }) {
		t.Errorf("after the view with an expired token: %+v, want the sign-in form and no ask", s)
	}
}
