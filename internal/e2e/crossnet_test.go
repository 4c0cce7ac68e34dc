package e2e

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/agent/live/livetest"
	"github.com/uploadbox/uploadbox/internal/netns"
)

// binCommand is a project binary's command, run inside ns (nil: here).
func binCommand(ns *netns.NS, name string, args ...string) *exec.Cmd {
	if ns == nil {
		return exec.Command(filepath.Join(binDir, name), args...)
	}
	return ns.Command(filepath.Join(binDir, name), args...)
}

// crossnet is a receiver, a box and a coach on three networks (see
// netns.Crossnet), or all three here on 127.0.0.1 when net is nil: the
// receiver on the address both others reach, the box enrolled with it
// from its own network, its daemon running there with live view on and a
// session started.
type crossnet struct {
	net *netns.Crossnet
	b   enrolled
	lb  liveBox
	p   *daemonProc
	// coach is an HTTPS client on the coach's network that trusts the
	// receiver's CA.
	coach *http.Client
}

// startCrossnet makes the networks and starts everything there; serve
// are more flags for the receiver. The test fails, with the reason, where
// namespaces cannot be made.
func startCrossnet(t *testing.T, serve ...string) *crossnet {
	t.Helper()
	n, err := netns.NewCrossnet(t)
	if err != nil {
		t.Fatalf("this test needs network namespaces: %v", err)
	}
	return startViewing(t, n, append([]string{"--turn-listen", n.Service.String() + ":0"}, serve...)...)
}

// startViewing starts the receiver and the box on n (nil: here).
func startViewing(t *testing.T, n *netns.Crossnet, serve ...string) *crossnet {
	t.Helper()
	dir := t.TempDir()
	c := &crossnet{net: n}
	var rcvNS, boxNS *netns.NS
	listen, live := "127.0.0.1:0", freePort(t)
	if n != nil {
		rcvNS, boxNS = n.Recv, n.Box
		// The box's own LAN page listens on the box's address: the coach
		// cannot reach it, only the receiver's relay.
		listen, live = n.Service.String()+":0", n.BoxAddr.String()+":8444"
	}
	rcv := startReceiverIn(t, rcvNS, filepath.Join(dir, "receiver"), listen, serve...)
	c.b = enrollBoxIn(t, boxNS, rcv, "room-7", rcv.addr, filepath.Join(dir, "state"))
	c.lb = liveBox{live: live, indicator: filepath.Join(dir, "indicator")}
	os.WriteFile(c.lb.indicator, nil, 0o600)
	c.lb.boxDirs = writeBoxConfig(t, dir, c.b.state, "live:\n  enabled: true\n  listen: "+c.lb.live+"\nindicator:\n  path: "+c.lb.indicator+"\n"+fastLink)
	c.p = startDaemonIn(t, boxNS, c.lb.boxDirs)
	waitControl(t, c.lb.boxDirs, "connected", connected)
	var st sessionStatus
	ctl(t, c.lb.boxDirs, &st, "session", "start", "--for", "30m")
	c.coach = receiverClient(t, c.b)
	if n != nil {
		c.coach.Transport.(*http.Transport).DialContext = n.Coach.DialContext
	}
	return c
}

// unreachable fails the test if the coach's namespace reaches addr.
func (c *crossnet) unreachable(t *testing.T, addr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
	defer cancel()
	if conn, err := c.net.Coach.DialContext(ctx, "tcp", addr); err == nil {
		conn.Close()
		t.Fatalf("the coach's network reaches the box at %s: the test would not show that the relay is needed", addr)
	}
}

// coachLogin adds viewer name at the receiver, allows it room-7 and logs
// it in from the coach's network.
func (c *crossnet) coachLogin(t *testing.T, name string) string {
	t.Helper()
	cmd := binCommand(nil, "uploadbox-receiver", "viewers", "add", name, "--password-stdin", "--data", c.b.rcv.data)
	cmd.Stdin = strings.NewReader("Correct-Horse-Battery-9\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("viewers add: %v\n%s", err, out)
	}
	run(t, "uploadbox-receiver", "viewers", "allow", name, "room-7", "--data", c.b.rcv.data)
	return login(t, c.coach, c.b, name)
}

// offer is a pion viewer on the coach's network asking the receiver's
// relay for room-7, held until the teacher decides.
func (c *crossnet) offer(t *testing.T, ctx context.Context, token string) (*livetest.Response, error) {
	opts := livetest.Options{Audio: true, Loopback: c.net == nil, Wait: 20 * time.Second}
	if c.net != nil {
		var err error
		if opts.Net, err = c.net.Coach.WebRTCNet(); err != nil {
			return nil, err
		}
	}
	r, err := livetest.Offer(ctx, c.coach, "https://"+c.b.rcv.addr+"/v1/rooms/room-7/whep", token, opts)
	if r != nil {
		t.Cleanup(func() { r.Viewer.Close() })
	}
	return r, err
}

// ask logs viewer in from the coach's network, asks for room-7 with a
// pion viewer and has the teacher accept: the relayed answer.
func (c *crossnet) ask(t *testing.T, viewer string) *livetest.Viewer {
	t.Helper()
	a := c.askAndDecide(t, viewer, "accept", "--for", "30m")
	if a.Status != http.StatusCreated {
		t.Fatalf("held offer after the accept: HTTP %d %s", a.Status, a.Body)
	}
	return a.Viewer
}

// askAndDecide logs viewer in from the coach's network, asks for room-7
// with a pion viewer (held until the teacher decides) and runs `uploadbox
// consent DECISION ID args...` for its request: the relayed answer.
func (c *crossnet) askAndDecide(t *testing.T, viewer, decision string, args ...string) *livetest.Response {
	t.Helper()
	token := c.coachLogin(t, viewer)
	done := make(chan *livetest.Response, 1)
	go func() {
		r, err := c.offer(t, t.Context(), token)
		if err != nil {
			t.Error(err)
		}
		done <- r
	}()
	c.decideWhenAsked(t, viewer, decision, args...)
	r := <-done
	if r == nil {
		t.FailNow()
	}
	return r
}

// watch is ask, then waits for video.
func (c *crossnet) watch(t *testing.T, viewer string) *livetest.Viewer {
	t.Helper()
	v := c.ask(t, viewer)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if _, err := v.WaitPackets(ctx, "video"); err != nil {
		t.Fatalf("no video reached the coach (ICE state %s): %v", v.PC.ICEConnectionState(), err)
	}
	return v
}

// decideWhenAsked runs `uploadbox consent DECISION ID args...` for
// viewer's pending request (the CLI over the box's control socket, from
// outside its network) once the box lists it.
func (c *crossnet) decideWhenAsked(t *testing.T, viewer, decision string, args ...string) {
	t.Helper()
	var reqs []struct{ ID, Viewer, State string }
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		ctl(t, c.lb.boxDirs, &reqs, "consent", "list")
		for _, r := range reqs {
			if r.Viewer == viewer && r.State == "pending" {
				run(t, "uploadbox", append([]string{"consent", decision, r.ID, "--socket", c.lb.socket}, args...)...)
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the box never listed a request of %s: %+v", viewer, reqs)
		}
	}
}

// TestLiveViewAcrossNetworks (issue 12): the box and the coach are on two
// networks with no route between them, both reach the receiver. The box
// enrolls and keeps its control connection from its own network; the
// coach logs in and asks from the other; the teacher accepts with the
// CLI; the media reach the coach through the receiver's TURN relay, the
// only path there is: the selected candidate pair has a relay candidate
// and the relay's counters show the bytes. A revoke silences the relayed
// media within 1 s; a declined request is refused as denied; with the
// box's daemon killed the receiver says the box is offline, and once it
// is back the coach watches again.
func TestLiveViewAcrossNetworks(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a receiver and the daemon in network namespaces; skipped under -short")
	}
	c := startCrossnet(t)
	c.unreachable(t, c.lb.live)
	waitDevice(t, c.b.rcv.data, "room-7", "connected", func(d deviceControl) bool { return d.Control.Connected })

	v := c.watch(t, "coach-x")
	l, r := v.CandidateTypes()
	t.Logf("selected candidate pair %s/%s", l, r)
	if l != "relay" && r != "relay" {
		t.Fatalf("selected candidate pair %s/%s: across the networks only a relayed pair can work", l, r)
	}
	ts := turnStatus(t, c.b.rcv.data)
	var relayed int64
	for _, a := range ts.Active {
		if a.Room == "room-7" && a.Viewer == "coach-x" {
			relayed += a.BytesToPeers + a.BytesFromPeers
		}
	}
	if relayed == 0 {
		t.Fatalf("the TURN relay carried nothing for coach-x: %+v", ts)
	}

	// The teacher revokes: through the relay too, no packet after 1 s.
	run(t, "uploadbox", "consent", "revoke", "coach-x", "--socket", c.lb.socket)
	revoked := time.Now()
	time.Sleep(1500 * time.Millisecond)
	for _, k := range []string{"video", "audio"} {
		if last := v.Last(k); last.After(revoked.Add(time.Second)) {
			t.Errorf("%s reached the coach %s after the revoke", k, last.Sub(revoked))
		}
	}

	// A request the teacher declines: the held offer says so.
	if r := c.askAndDecide(t, "coach-y", "deny"); r.Status != http.StatusForbidden {
		t.Fatalf("declined: HTTP %d %s, want 403", r.Status, r.Body)
	} else if reason, _ := refusal(t, r); reason != "declined" {
		t.Fatalf("declined: HTTP %d %s, want reason declined", r.Status, r.Body)
	}

	// The box's daemon dies: the receiver says the box is offline; once
	// it is back (reconnected from its own network) the coach watches again.
	c.p.cmd.Process.Kill()
	<-c.p.done
	waitDevice(t, c.b.rcv.data, "room-7", "disconnected", func(d deviceControl) bool { return !d.Control.Connected })
	off, err := c.offer(t, t.Context(), login(t, c.coach, c.b, "coach-x"))
	if err != nil {
		t.Fatal(err)
	}
	if off.Status != http.StatusServiceUnavailable || !strings.Contains(string(off.Body), "offline") {
		t.Fatalf("box down: HTTP %d %s, want 503 offline", off.Status, off.Body)
	}
	c.p = startDaemonIn(t, c.net.Box, c.lb.boxDirs)
	waitDevice(t, c.b.rcv.data, "room-7", "connected again", func(d deviceControl) bool { return d.Control.Connected })
	var st sessionStatus
	ctl(t, c.lb.boxDirs, &st, "session", "start", "--for", "30m")
	c.watch(t, "coach-z")
}

// TestLiveViewDirectPath (issue 12): the same as TestLiveViewAcrossNetworks
// with everything on 127.0.0.1: with the relay there and offered to the
// box, the media take the direct path (no relay candidate in the selected
// pair).
func TestLiveViewDirectPath(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a receiver and the daemon; skipped under -short")
	}
	c := startViewing(t, nil, "--turn-listen", "127.0.0.1:0")
	v := c.watch(t, "coach-x")
	if !strings.Contains(v.Answer, " typ relay ") {
		t.Fatalf("the box's answer has no relay candidate: the test would not show the direct path chosen over it\n%s", v.Answer)
	}
	if l, r := v.CandidateTypes(); l == "relay" || r == "relay" || l == "" {
		t.Fatalf("selected candidate pair %s/%s on one machine, want the direct path", l, r)
	}
}
