package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/agent/live/livetest"
)

type liveBox struct {
	boxDirs
	live      string // host:port of the WHEP endpoint
	indicator string
	client    *http.Client
}

// startLiveBox enrolls a box, turns live view on and starts its daemon;
// liveKeys are more "key: value" lines of the live section.
func startLiveBox(t *testing.T, dir string, liveKeys ...string) (enrolled, liveBox, *daemonProc) {
	t.Helper()
	b := setupBox(t, dir, nil)
	lb := liveBox{live: freePort(t), indicator: filepath.Join(dir, "indicator")}
	os.WriteFile(lb.indicator, nil, 0o600)
	extra := ""
	for _, k := range liveKeys {
		extra += "  " + k + "\n"
	}
	lb.boxDirs = writeBoxConfig(t, dir, b.state, "live:\n  enabled: true\n  listen: "+lb.live+"\n"+extra+"indicator:\n  path: "+lb.indicator+"\n")
	p := startDaemon(t, lb.boxDirs)
	// Trust the box's own live-view certificate, made at its first start.
	var pem []byte
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if pem, _ = os.ReadFile(filepath.Join(b.state, "live.crt")); len(pem) > 0 {
			break
		}
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("the daemon made no live view certificate")
	}
	lb.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	return b, lb, p
}

func (lb liveBox) offer(t *testing.T, token string, audio bool) *livetest.Response {
	t.Helper()
	r, err := livetest.Offer(t.Context(), lb.client, "https://"+lb.live+"/whep", token, livetest.Options{Audio: audio, Loopback: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Viewer.Close() })
	return r
}

func refusal(t *testing.T, r *livetest.Response) (reason, request string) {
	t.Helper()
	var body struct{ Reason, Request string }
	json.Unmarshal(r.Body, &body)
	return body.Reason, body.Request
}

// receiverLogin adds a viewer account on the receiver and logs in over TLS
// (POST /v1/login), returning the viewer token it issues.
func receiverLogin(t *testing.T, b enrolled, name string) string {
	t.Helper()
	token, _ := receiverLoginRole(t, b, name, "viewer")
	return token
}

// receiverLoginRole is receiverLogin for an account of role; it returns
// the role the login answer names too.
func receiverLoginRole(t *testing.T, b enrolled, name, role string) (token, answered string) {
	t.Helper()
	const password = "Correct-Horse-Battery-9"
	cmd := exec.Command(filepath.Join(binDir, "uploadbox-receiver"), "viewers", "add", name, "--role", role, "--password-stdin", "--data", b.rcv.data)
	cmd.Stdin = strings.NewReader(password + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("viewers add: %v\n%s", err, out)
	}
	pem, err := os.ReadFile(filepath.Join(b.state, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	body, _ := json.Marshal(map[string]string{"name": name, "password": password})
	resp, err := c.Post("https://"+b.rcv.addr+"/v1/login", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var lr struct{ Token, Role string }
	if err := json.NewDecoder(resp.Body).Decode(&lr); err != nil || resp.StatusCode != http.StatusOK || lr.Token == "" {
		t.Fatalf("login: HTTP %d, %v", resp.StatusCode, err)
	}
	return lr.Token, lr.Role
}

func indicatorState(t *testing.T, lb liveBox) string {
	b, _ := os.ReadFile(lb.indicator)
	return strings.TrimSpace(string(b))
}

func waitIndicator(t *testing.T, lb liveBox, want string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if indicatorState(t, lb) == want {
			return
		}
	}
	t.Errorf("privacy indicator shows %q, want %q", indicatorState(t, lb), want)
}

// TestLiveViewWithConsent drives the daemon's live view with a pion viewer
// and Chromium: nobody sees anything without the teacher's grant, a revoke
// stops media within 1 s, grants are per viewer, a restart never revives
// an expired grant, and the audit chain records it all.
func TestLiveViewWithConsent(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon, a receiver and Chromium; skipped under -short")
	}
	dir := t.TempDir()
	b, lb, p := startLiveBox(t, dir)
	tokenA := strings.TrimSpace(run(t, "uploadbox", "viewer", "token", "--name", "coach-a", "--ttl", "1h", "--state", b.state))
	tokenB := strings.TrimSpace(run(t, "uploadbox", "viewer", "token", "--name", "coach-b", "--ttl", "1h", "--state", b.state))
	tokenC := receiverLogin(t, b, "coach-c")

	// TLS 1.2 at least: an older client does not even get a handshake.
	old := lb.client.Transport.(*http.Transport).TLSClientConfig.Clone()
	old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	if c, err := tls.Dial("tcp", lb.live, old); err == nil {
		c.Close()
		t.Fatal("the live view accepted a TLS 1.1 handshake")
	}
	if r := lb.offer(t, "", false); r.Status != http.StatusUnauthorized {
		t.Fatalf("no token: HTTP %d, want 401", r.Status)
	}
	if r := lb.offer(t, tokenA+"x", false); r.Status != http.StatusUnauthorized {
		t.Fatalf("bad token: HTTP %d, want 401", r.Status)
	}
	if r := lb.offer(t, tokenA, true); r.Status != http.StatusForbidden {
		t.Fatalf("no session: HTTP %d, want 403", r.Status)
	} else if reason, _ := refusal(t, r); reason != "no session" {
		t.Fatalf("no session: reason %q", reason)
	}

	var st sessionStatus
	ctl(t, lb.boxDirs, &st, "session", "start", "--for", "10m")
	waitIndicator(t, lb, "recording")
	// A token from the receiver's password login is accepted by the box
	// (token key from enrollment): the viewer is known, only not granted.
	if r := lb.offer(t, tokenC, false); r.Status != http.StatusForbidden {
		t.Fatalf("receiver-issued token: HTTP %d %s, want 403 pending", r.Status, r.Body)
	}
	r := lb.offer(t, tokenA, true)
	reason, reqA := refusal(t, r)
	if r.Status != http.StatusForbidden || reason != "pending" || reqA == "" {
		t.Fatalf("token without a grant: HTTP %d %s", r.Status, r.Body)
	}
	waitIndicator(t, lb, "pending")
	time.Sleep(2 * time.Second)
	if n := r.Viewer.Packets("video") + r.Viewer.Packets("audio"); n != 0 {
		t.Fatalf("a viewer without a grant received %d RTP packets", n)
	}
	var reqs []struct{ ID, Viewer, State string }
	ctl(t, lb.boxDirs, &reqs, "consent", "list")
	if len(reqs) != 2 || reqs[0].ID != reqA || reqs[0].Viewer != "coach-a" || reqs[0].State != "pending" || reqs[1].Viewer != "coach-c" {
		t.Fatalf("consent list: %+v", reqs)
	}

	// The teacher accepts, video only.
	run(t, "uploadbox", "consent", "accept", reqA, "--no-audio", "--for", "30m", "--socket", lb.socket)
	a := lb.offer(t, tokenA, true)
	if a.Status != http.StatusCreated {
		t.Fatalf("with a grant: HTTP %d %s", a.Status, a.Body)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := a.Viewer.WaitPackets(ctx, "video"); err != nil {
		t.Fatalf("no video after the grant: %v", err)
	}
	waitIndicator(t, lb, "watching")
	time.Sleep(time.Second)
	if n := a.Viewer.Packets("audio"); n != 0 {
		t.Errorf("a video-only grant carried %d audio packets", n)
	}

	// Viewer B cannot use A's grant.
	if rb := lb.offer(t, tokenB, false); rb.Status != http.StatusForbidden {
		t.Fatalf("viewer B with A's grant: HTTP %d", rb.Status)
	}

	// Chromium, on the box's own viewer page, decodes frames.
	modules, _ := filepath.Abs("../../.cache/npm/node_modules")
	page, err := livetest.OpenPage(t.Context(), "https://"+lb.live+"/#token="+tokenA, livetest.BrowserOptions{NodeModules: modules})
	if err != nil {
		t.Fatal(err)
	}
	defer page.Close()
	wctx, wcancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer wcancel()
	if _, err := page.Wait(wctx, func(s livetest.PageState) bool { return s.State == "playing" && s.Frames >= 10 }); err != nil {
		t.Fatalf("Chromium did not play: %v (last %+v)", err, page.Last())
	}

	// The teacher revokes: within 1 s no packet reaches the pion viewer and
	// Chromium decodes no new frame; the page says so; a new offer is refused.
	run(t, "uploadbox", "consent", "revoke", "coach-a", "--socket", lb.socket)
	revoked := time.Now()
	time.Sleep(1500 * time.Millisecond)
	if last := a.Viewer.Last("video"); last.After(revoked.Add(time.Second)) {
		t.Errorf("pion viewer got video %s after the revoke", last.Sub(revoked))
	}
	frames := page.Last().Frames
	time.Sleep(time.Second)
	if f := page.Last().Frames; f != frames {
		t.Errorf("Chromium decoded %d frames more than 1.5 s after the revoke", f-frames)
	}
	if _, err := page.Wait(wctx, func(s livetest.PageState) bool { return s.State == "ended" }); err != nil {
		t.Errorf("the viewer page does not say the teacher ended it: %+v", page.Last())
	}
	if r := lb.offer(t, tokenA, false); r.Status != http.StatusForbidden {
		t.Errorf("after the revoke: HTTP %d, want 403", r.Status)
	} else if reason, _ := refusal(t, r); reason != "revoked" {
		t.Errorf("after the revoke: reason %q, want revoked (not a new pending request)", reason)
	}

	// B gets a short grant; it expires while the daemon is down, and a
	// restart does not revive it.
	ctl(t, lb.boxDirs, &reqs, "consent", "list")
	reqB := ""
	for _, q := range reqs {
		if q.Viewer == "coach-b" && q.State == "pending" {
			reqB = q.ID
		}
	}
	run(t, "uploadbox", "consent", "accept", reqB, "--for", "3s", "--socket", lb.socket)
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	time.Sleep(3 * time.Second)
	startDaemon(t, lb.boxDirs)
	ctl(t, lb.boxDirs, &st, "session", "start", "--for", "10m")
	if r := lb.offer(t, tokenB, false); r.Status != http.StatusForbidden {
		t.Fatalf("an expired grant was revived by a restart: HTTP %d", r.Status)
	}

	// A privacy indicator that stops working ends the live view of whoever
	// watches, and refuses every new viewer.
	ctl(t, lb.boxDirs, &reqs, "consent", "list")
	for _, q := range reqs {
		if q.Viewer == "coach-b" && q.State == "pending" {
			reqB = q.ID
		}
	}
	run(t, "uploadbox", "consent", "accept", reqB, "--socket", lb.socket)
	w := lb.offer(t, tokenB, false)
	if w.Status != http.StatusCreated {
		t.Fatalf("B after a new grant: HTTP %d", w.Status)
	}
	bctx, bcancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer bcancel()
	if _, err := w.Viewer.WaitPackets(bctx, "video"); err != nil {
		t.Fatalf("B gets no video: %v", err)
	}
	os.Remove(lb.indicator)
	os.Mkdir(lb.indicator, 0o700)
	broke := time.Now()
	time.Sleep(3 * time.Second)
	if last := w.Viewer.Last("video"); last.After(broke.Add(2 * time.Second)) {
		t.Errorf("video still reached B %v after the indicator broke", last.Sub(broke))
	}
	if r := lb.offer(t, tokenA, false); r.Status != http.StatusForbidden {
		t.Errorf("with a broken indicator: HTTP %d, want 403", r.Status)
	} else if reason, _ := refusal(t, r); reason != "indicator" {
		t.Errorf("with a broken indicator: reason %q, want indicator", reason)
	}

	// The audit chain verifies, and an edited entry is named.
	out := run(t, "uploadbox", "consent", "audit", "--verify", "--socket", lb.socket)
	if !strings.Contains(out, "audit log OK") {
		t.Fatalf("consent audit: %s", out)
	}
	log, _ := os.ReadFile(lb.audit)
	for _, ev := range []string{"consent.request", "consent.accept", "consent.revoke", "consent.expire", "live.join", "live.leave"} {
		if !strings.Contains(string(log), `"`+ev+`"`) {
			t.Errorf("audit log lacks %s", ev)
		}
	}
	edited := filepath.Join(dir, "edited.jsonl")
	os.WriteFile(edited, []byte(strings.Replace(string(log), `"identity":"coach-a"`, `"identity":"coach-x"`, 1)), 0o600)
	msg := runFails(t, "uploadbox", "consent", "audit", "--verify", "--file", edited)
	if !strings.Contains(msg, "line ") {
		t.Errorf("an edited audit log: %q does not name the entry", msg)
	}
}
