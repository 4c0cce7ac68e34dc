package e2e

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/agent/live/livetest"
	"github.com/uploadbox/uploadbox/internal/viewtoken"
)

// startLiveSession starts a live box (see startLiveBox) and a ten-minute
// recording session. It skips under -short, like the other daemon tests.
func startLiveSession(t *testing.T, liveKeys ...string) (enrolled, liveBox, *daemonProc) {
	t.Helper()
	if testing.Short() {
		t.Skip("runs the daemon and a receiver; skipped under -short")
	}
	b, lb, p := startLiveBox(t, t.TempDir(), liveKeys...)
	var st sessionStatus
	ctl(t, lb.boxDirs, &st, "session", "start", "--for", "10m")
	return b, lb, p
}

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
	b, lb, p := startLiveSession(t)
	token := strings.TrimSpace(run(t, "uploadbox", "viewer", "token", "--name", "coach-w", "--ttl", "1h", "--state", b.state))

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

// auditEntry is one entry of the box's audit log.
type auditEntry struct {
	Seq                                                        uint64
	Event, Identity, By, Outcome, Detail, Receiver, Prev, Hash string
}

// readAudit reads the daemon's audit log file.
func readAudit(t *testing.T, path string) []auditEntry {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []auditEntry
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var e auditEntry
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("audit line %q: %v", l, err)
		}
		out = append(out, e)
	}
	return out
}

// TestConsentDecisionsAttributed: every consent decision and every session
// start and stop is audited with who decided (the control socket caller's
// uid and user name, or "daemon"), the viewer in its own field, and
// `uploadbox consent audit` shows it (issue 10, item 4). Requests and
// joins name the viewer; a declined or revoked viewer asking again is
// refused with that reason and makes no request (issue 13).
func TestConsentDecisionsAttributed(t *testing.T) {
	me, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	caller := "uid:" + me.Uid + "(" + me.Username + ")"
	b, lb, _ := startLiveSession(t) // the session is started by this process: by caller
	tokenA := strings.TrimSpace(run(t, "uploadbox", "viewer", "token", "--name", "coach-a", "--ttl", "1h", "--state", b.state))
	tokenB := strings.TrimSpace(run(t, "uploadbox", "viewer", "token", "--name", "coach-b", "--ttl", "1h", "--state", b.state))
	tokenC := strings.TrimSpace(run(t, "uploadbox", "viewer", "token", "--name", "coach-c", "--ttl", "1h", "--state", b.state))

	lb.offer(t, tokenA, false)
	reqA := pendingRequest(t, lb, "coach-a")
	run(t, "uploadbox", "consent", "accept", reqA, "--socket", lb.socket)
	run(t, "uploadbox", "consent", "revoke", "coach-a", "--socket", lb.socket)
	lb.offer(t, tokenB, false)
	reqB := pendingRequest(t, lb, "coach-b")
	run(t, "uploadbox", "consent", "deny", reqB, "--socket", lb.socket)
	// A no sticks (issue 13): asking again is answered declined (revoked)
	// and makes no new request.
	for _, tt := range []struct{ token, reason, request string }{{tokenB, "declined", reqB}, {tokenA, "revoked", reqA}} {
		r := lb.offer(t, tt.token, false)
		if reason, req := refusal(t, r); r.Status != http.StatusForbidden || reason != tt.reason || req != tt.request {
			t.Fatalf("asking again: HTTP %d %s, want 403 %s naming request %s", r.Status, r.Body, tt.reason, tt.request)
		}
	}
	// A grant the daemon ends itself: it expires.
	lb.offer(t, tokenC, false)
	run(t, "uploadbox", "consent", "accept", pendingRequest(t, lb, "coach-c"), "--for", "1s", "--socket", lb.socket)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if slices.ContainsFunc(readAudit(t, lb.audit), func(e auditEntry) bool { return e.Event == "consent.expire" }) {
			break
		}
	}
	// The teacher lets coach-a in after all (accepting the revoked
	// request again); the session's stop ends that grant.
	run(t, "uploadbox", "consent", "accept", reqA, "--socket", lb.socket)
	if r := lb.offer(t, tokenA, false); r.Status != http.StatusCreated {
		t.Fatalf("coach-a accepted again: HTTP %d %s", r.Status, r.Body)
	}
	ctl(t, lb.boxDirs, nil, "session", "stop")

	// The daemon closed coach-a's peer connection (the consent.end entry
	// names who ended the session); it may be audited just after the stop.
	var entries []auditEntry
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		entries = readAudit(t, lb.audit)
		if slices.ContainsFunc(entries, func(e auditEntry) bool { return e.Event == "live.leave" }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no live.leave audited after the session stopped")
		}
	}
	for _, e := range entries {
		if e.Event == "live.leave" && (e.Identity != "coach-a" || e.By != "daemon") {
			t.Errorf("live.leave of %s by %q, want coach-a by daemon (%s)", e.Identity, e.By, e.Detail)
		}
	}
	var got []string
	for _, e := range entries {
		switch {
		case strings.HasPrefix(e.Event, "consent."), strings.HasPrefix(e.Event, "session."), e.Event == "live.join":
			got = append(got, e.Event+" "+e.Identity+" by "+e.By)
		}
	}
	want := []string{
		"session.start  by " + caller,
		"consent.request coach-a by viewer:coach-a",
		"consent.accept coach-a by " + caller,
		"consent.revoke coach-a by " + caller,
		"consent.request coach-b by viewer:coach-b",
		"consent.deny coach-b by " + caller,
		"consent.request coach-c by viewer:coach-c",
		"consent.accept coach-c by " + caller,
		"consent.expire coach-c by daemon",
		"consent.accept coach-a by " + caller,
		"live.join coach-a by viewer:coach-a",
		"consent.end coach-a by " + caller,
		"session.stop  by " + caller,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("audited decisions:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// `consent audit` shows the same entries; the table names who, what,
	// which viewer and when; --last cuts it.
	var shown []auditEntry
	ctl(t, lb.boxDirs, &shown, "consent", "audit", "--last", "0")
	if !slices.Equal(shown, entries) {
		t.Errorf("consent audit --json shows %d entries, the file has %d (or they differ)", len(shown), len(entries))
	}
	out := run(t, "uploadbox", "consent", "audit", "--last", "2", "--socket", lb.socket)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "BY") || !strings.Contains(lines[0], "VIEWER") ||
		!strings.Contains(out, "session.stop") || !strings.Contains(out, caller) {
		t.Errorf("consent audit --last 2:\n%s", out)
	}
	// The chain still verifies with the new field.
	if out := run(t, "uploadbox", "consent", "audit", "--verify", "--socket", lb.socket); !strings.Contains(out, "audit log OK") {
		t.Errorf("consent audit --verify: %s", out)
	}
}

// grantViewer has viewer ask (an offer refused as pending) and the teacher
// accept, and returns viewer's token.
func grantViewer(t *testing.T, b enrolled, lb liveBox, viewer string) string {
	t.Helper()
	token := strings.TrimSpace(run(t, "uploadbox", "viewer", "token", "--name", viewer, "--ttl", "1h", "--state", b.state))
	lb.offer(t, token, false)
	run(t, "uploadbox", "consent", "accept", pendingRequest(t, lb, viewer), "--socket", lb.socket)
	return token
}

// TestLiveOneSessionPerViewer: five offers from one viewer that never
// start ICE leave one session (each replaces the last, which then answers
// 410), and another viewer still gets a slot (issue 10, item 9).
func TestLiveOneSessionPerViewer(t *testing.T) {
	b, lb, _ := startLiveSession(t)
	tokenA := grantViewer(t, b, lb, "coach-a")
	tokenB := grantViewer(t, b, lb, "coach-b")

	var locations []string
	for i := range 5 {
		r, err := livetest.Offer(t.Context(), lb.client, "https://"+lb.live+"/whep", tokenA, livetest.Options{Loopback: true, NoAnswer: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Viewer.Close() })
		if r.Status != http.StatusCreated {
			t.Fatalf("offer %d of coach-a: HTTP %d %s, want 201", i+1, r.Status, r.Body)
		}
		locations = append(locations, r.Viewer.Location)
	}
	if n := metricValue(t, lb.metrics, "uploadbox_live_viewers"); n != 1 {
		t.Errorf("uploadbox_live_viewers = %v after 5 offers of one viewer, want 1", n)
	}
	for _, loc := range locations[:4] {
		for _, method := range []string{http.MethodGet, http.MethodDelete} {
			req, _ := http.NewRequestWithContext(t.Context(), method, loc, nil)
			req.Header.Set("Authorization", "Bearer "+tokenA)
			resp, err := lb.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusGone {
				t.Errorf("%s of a replaced session: HTTP %d, want 410", method, resp.StatusCode)
			}
		}
	}
	r := lb.offer(t, tokenB, false)
	if r.Status != http.StatusCreated {
		t.Fatalf("a second viewer after 5 offers of the first: HTTP %d %s, want 201", r.Status, r.Body)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := r.Viewer.WaitPackets(ctx, "video"); err != nil {
		t.Fatalf("the second viewer gets no video: %v", err)
	}
	if n := metricValue(t, lb.metrics, "uploadbox_live_viewers"); n != 2 {
		t.Errorf("uploadbox_live_viewers = %v with two viewers, want 2", n)
	}
	replaced := 0
	for _, e := range readAudit(t, lb.audit) {
		if e.Event == "live.leave" && e.Identity == "coach-a" && strings.HasSuffix(e.Detail, " reason=replaced") {
			replaced++
		}
	}
	if replaced != 4 {
		t.Errorf("%d live.leave entries of coach-a say reason=replaced, want 4", replaced)
	}
}

// serverClosed reports whether the peer closed c (EOF or reset) before
// within passed; bytes the server sent first are read and dropped.
func serverClosed(c net.Conn, within time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(within))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// TestLiveConnectionLimits: the live view closes idle connections after
// live.idle_timeout, cuts a request body sent too slowly after
// live.read_timeout, and closes connections from one address beyond
// live.max_conns_per_address, while offers held for the teacher are not
// cut by the read timeout (issue 10, item 5, live view half).
func TestLiveConnectionLimits(t *testing.T) {
	b, lb, _ := startLiveSession(t, "idle_timeout: 1s", "read_timeout: 2s", "max_conns_per_address: 3")
	tlsConf := lb.client.Transport.(*http.Transport).TLSClientConfig

	// Idle: a keep-alive connection after its request is closed by the box.
	c, err := tls.Dial("tcp", lb.live, tlsConf)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", lb.live)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /: HTTP %d", resp.StatusCode)
	}
	if !serverClosed(c, 15*time.Second) {
		t.Error("an idle keep-alive connection was still open 15 s after its request (live.idle_timeout: 1s)")
	}

	// Slow body: one byte every 200 ms of an offer; the box cuts it.
	token := strings.TrimSpace(run(t, "uploadbox", "viewer", "token", "--name", "coach-slow", "--ttl", "1h", "--state", b.state))
	slow, err := tls.Dial("tcp", lb.live, tlsConf)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	fmt.Fprintf(slow, "POST /whep HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: application/sdp\r\nContent-Length: 4000\r\n\r\n", lb.live, token)
	stop := make(chan struct{})
	go func() {
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := slow.Write([]byte("v")); err != nil {
					return
				}
			}
		}
	}()
	ok := serverClosed(slow, 15*time.Second)
	close(stop)
	if !ok {
		t.Error("a request body sent at 5 bytes/s was still being read after 15 s (live.read_timeout: 2s)")
	}

	// Three offers held for the teacher (Prefer: wait) fill the cap of
	// three connections from 127.0.0.1: a fourth connection is closed at
	// once. The held offers outlive the 2 s read timeout.
	type held struct {
		r   *livetest.Response
		err error
	}
	answers := map[string]chan held{}
	for _, v := range []string{"coach-h1", "coach-h2", "coach-h3"} {
		tok := strings.TrimSpace(run(t, "uploadbox", "viewer", "token", "--name", v, "--ttl", "1h", "--state", b.state))
		ch := make(chan held, 1)
		answers[v] = ch
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConf}}
		go func() {
			r, err := livetest.Offer(t.Context(), client, "https://"+lb.live+"/whep", tok, livetest.Options{Loopback: true, Wait: 20 * time.Second})
			ch <- held{r, err}
		}()
	}
	reqs := map[string]string{}
	for _, v := range []string{"coach-h1", "coach-h2", "coach-h3"} {
		reqs[v] = pendingRequest(t, lb, v)
	}
	if over, err := tls.Dial("tcp", lb.live, tlsConf); err == nil {
		over.Close()
		t.Error("a fourth connection from one address got a TLS handshake (live.max_conns_per_address: 3)")
	}
	time.Sleep(3 * time.Second) // past live.read_timeout
	run(t, "uploadbox", "consent", "accept", reqs["coach-h1"], "--socket", lb.socket)
	a := <-answers["coach-h1"]
	if a.err != nil {
		t.Fatalf("held offer: %v", a.err)
	}
	defer a.r.Viewer.Close()
	if a.r.Status != http.StatusCreated {
		t.Errorf("an offer held 3 s for the teacher: HTTP %d %s, want 201 (the read timeout must not cut it)", a.r.Status, a.r.Body)
	}
	// Its connection goes idle and is closed: a slot is free again.
	var again net.Conn
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if again, err = tls.Dial("tcp", lb.live, tlsConf); err == nil {
			break
		}
	}
	if again == nil {
		t.Fatalf("no connection possible after a held offer's connection went idle: %v", err)
	}
	again.Close()
}

// TestLiveBadTokensAudited: a viewer token whose issuer is not the one
// its signing key issues for (a box:local token signed by the receiver's
// key) is refused (issue 10, item 13), and every refused WHEP token —
// wrong issuer, forged, expired — is audited as live.auth, coalesced per
// source so that a flood writes one entry at once and one counted summary
// (item 8).
func TestLiveBadTokensAudited(t *testing.T) {
	b, lb, p := startLiveSession(t)
	good := strings.TrimSpace(run(t, "uploadbox", "viewer", "token", "--name", "coach-ok", "--ttl", "1h", "--state", b.state))

	receiverKey, err := viewtoken.ReadKeyFile(filepath.Join(b.rcv.data, "token.key"))
	if err != nil {
		t.Fatal(err)
	}
	wrongIssuer, err := viewtoken.Mint(receiverKey, viewtoken.IssuerLocal, "coach-x", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if r := lb.offer(t, wrongIssuer, false); r.Status != http.StatusUnauthorized {
		t.Fatalf("a box:local token signed by the receiver's key: HTTP %d %s, want 401", r.Status, r.Body)
	}
	auth := func() []auditEntry {
		var out []auditEntry
		for _, e := range readAudit(t, lb.audit) {
			if e.Event == "live.auth" {
				out = append(out, e)
			}
		}
		return out
	}
	first := auth()
	if len(first) != 1 || first[0].Outcome != "denied" || !strings.Contains(first[0].Detail, "issuer") {
		t.Fatalf("live.auth entries after a wrong-issuer token: %+v, want one naming the issuer", first)
	}

	// A flood of forged and expired tokens: still one entry until the
	// window closes.
	localKey, err := viewtoken.ReadKeyFile(filepath.Join(b.state, viewtoken.LocalKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	_, forgeKey, _ := ed25519.GenerateKey(rand.Reader)
	forged, _ := viewtoken.Mint(forgeKey, viewtoken.IssuerLocal, "coach-ok", time.Hour, time.Now())
	expired, _ := viewtoken.Mint(localKey, viewtoken.IssuerLocal, "coach-ok", time.Minute, time.Now().Add(-time.Hour))
	const flood = 20
	for i := range flood {
		tok := forged
		if i%2 == 1 {
			tok = expired
		}
		if r := lb.offer(t, tok, false); r.Status != http.StatusUnauthorized {
			t.Fatalf("bad token %d: HTTP %d, want 401", i, r.Status)
		}
	}
	if r := lb.offer(t, good, false); r.Status != http.StatusForbidden {
		t.Fatalf("a good token during the flood: HTTP %d %s, want 403 pending", r.Status, r.Body)
	}
	if n := len(auth()); n != 1 {
		t.Errorf("%d live.auth entries after a flood of %d refused tokens from one address, want 1 until the window closes", n, flood+1)
	}
	// At shutdown the window's count is written.
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		t.Fatal("the daemon did not stop within 20 s of SIGTERM")
	}
	all := auth()
	if len(all) != 2 || !strings.Contains(all[1].Detail, fmt.Sprintf("%d more failures", flood)) {
		t.Fatalf("live.auth entries after shutdown: %+v, want the first and a summary of %d more", all, flood)
	}
	log, _ := os.ReadFile(lb.audit)
	for _, tok := range []string{wrongIssuer, forged, expired} {
		if strings.Contains(string(log), tok[len(tok)-40:]) {
			t.Error("a refused token is in the audit log")
		}
	}
}

// TestLiveKeyReadableByOthersRefused: a live.key that group or others can
// read is not used: the daemon refuses to start the live view and says
// which chmod to run (issue 10, item 7).
func TestLiveKeyReadableByOthersRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon and a receiver; skipped under -short")
	}
	b, lb, p := startLiveBox(t, t.TempDir()) // makes live.crt and live.key
	p.cmd.Process.Signal(syscall.SIGTERM)
	<-p.done
	key := filepath.Join(b.state, "live.key")
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(binDir, "uploadbox"), "run", "--config", lb.config).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("the daemon kept running with a world-readable live.key:\n%s", out)
	}
	if err == nil || !strings.Contains(string(out), "chmod 600 "+key) {
		t.Fatalf("daemon with a 0644 live.key: %v, output lacks %q:\n%s", err, "chmod 600 "+key, out)
	}
	if c, derr := tls.Dial("tcp", lb.live, lb.client.Transport.(*http.Transport).TLSClientConfig); derr == nil {
		c.Close()
		t.Error("the live view served TLS with a world-readable key")
	}
}
