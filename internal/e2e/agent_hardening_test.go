package e2e

import (
	"context"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/agent/live/livetest"
)

// pendingRequest waits until viewer has a pending consent request and
// returns its id.
func pendingRequest(t *testing.T, lb liveBox, viewer string) string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		var reqs []struct{ ID, Viewer, State string }
		ctl(t, lb.boxDirs, &reqs, "consent", "list")
		for _, q := range reqs {
			if q.Viewer == viewer && q.State == "pending" {
				return q.ID
			}
		}
	}
	t.Fatalf("no pending consent request of %s", viewer)
	return ""
}

// TestLivePreferWaitThroughDaemon: an offer sent with Prefer: wait=10
// before the teacher accepts is held by the daemon and answered 201 within
// 200 ms of the accept (issue 10, item 11), and says it held the offer.
func TestLivePreferWaitThroughDaemon(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon and a receiver; skipped under -short")
	}
	dir := t.TempDir()
	b, lb, p := startLiveBox(t, dir)
	token := strings.TrimSpace(run(t, "uploadbox", "viewer", "token", "--name", "coach-w", "--ttl", "1h", "--state", b.state))
	var st sessionStatus
	ctl(t, lb.boxDirs, &st, "session", "start", "--for", "10m")

	type answer struct {
		r   *livetest.Response
		at  time.Time
		err error
	}
	got := make(chan answer, 1)
	go func() {
		r, err := livetest.Offer(t.Context(), lb.client, "https://"+lb.live+"/whep", token, livetest.Options{Loopback: true, Wait: 10 * time.Second})
		got <- answer{r, time.Now(), err}
	}()
	req := pendingRequest(t, lb, "coach-w")
	time.Sleep(time.Second)
	select {
	case a := <-got:
		t.Fatalf("the offer was answered before the teacher decided: %v HTTP %d %s", a.err, a.r.Status, a.r.Body)
	default:
	}
	run(t, "uploadbox", "consent", "accept", req, "--socket", lb.socket)
	accepted := time.Now()
	var a answer
	select {
	case a = <-got:
	case <-time.After(15 * time.Second):
		t.Fatal("no answer to the held offer 15 s after the accept")
	}
	if a.err != nil {
		t.Fatal(a.err)
	}
	t.Cleanup(func() { a.r.Viewer.Close() })
	if a.r.Status != http.StatusCreated {
		t.Fatalf("offer with Prefer: wait=10 answered HTTP %d %s, want 201 once the teacher accepts", a.r.Status, a.r.Body)
	}
	// The issue states this bound: 201 within 200 ms of the accept.
	if d := a.at.Sub(accepted); d > 200*time.Millisecond {
		t.Errorf("201 came %v after the accept returned, want at most 200 ms", d)
	}
	if pa := a.r.Header.Get("Preference-Applied"); pa != "wait=10" {
		t.Errorf("Preference-Applied %q, want wait=10 (the viewer page polls without it)", pa)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := a.r.Viewer.WaitPackets(ctx, "video"); err != nil {
		t.Fatalf("no video after the held offer was admitted: %v", err)
	}

	// The viewer page sends Prefer: wait=20; the daemon holds its offer, so
	// the page makes no new offer while the teacher decides (it used to
	// poll every 250 ms), and it plays once the teacher accepts.
	tokenP := strings.TrimSpace(run(t, "uploadbox", "viewer", "token", "--name", "coach-p", "--ttl", "1h", "--state", b.state))
	modules, _ := filepath.Abs("../../.cache/npm/node_modules")
	page, err := livetest.OpenPage(t.Context(), "https://"+lb.live+"/#token="+tokenP, livetest.BrowserOptions{NodeModules: modules})
	if err != nil {
		t.Fatal(err)
	}
	defer page.Close()
	pctx, pcancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer pcancel()
	reqP := pendingRequest(t, lb, "coach-p")
	if _, err := page.Wait(pctx, func(s livetest.PageState) bool { return s.State == "waiting" }); err != nil {
		t.Fatalf("the page does not wait for the teacher: %v (last %+v)", err, page.Last())
	}
	time.Sleep(2 * time.Second)
	if n := refusedOffers(p.log(), "coach-p"); n != 0 {
		t.Errorf("the viewer page's offers were refused %d times in 2 s while the daemon held its offer: it polls", n)
	}
	run(t, "uploadbox", "consent", "accept", reqP, "--socket", lb.socket)
	if _, err := page.Wait(pctx, func(s livetest.PageState) bool { return s.State == "playing" && s.Frames > 0 }); err != nil {
		t.Fatalf("the page does not play after the accept: %v (last %+v)", err, page.Last())
	}
}

// refusedOffers counts the daemon's log lines of refused offers of viewer.
func refusedOffers(log, viewer string) int {
	n := 0
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, `msg="live view refused"`) && strings.Contains(l, "viewer="+viewer+" ") {
			n++
		}
	}
	return n
}
