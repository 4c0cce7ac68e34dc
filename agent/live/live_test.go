package live

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"go.uber.org/goleak"

	"github.com/uploadbox/uploadbox/agent/live/livetest"
	"github.com/uploadbox/uploadbox/capture"
	"github.com/uploadbox/uploadbox/internal/syncbuf"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Tokens the fake authenticator knows.
var tokens = fakeAuth{"tok-alice": "alice", "tok-bob": "bob", "tok-carol": "carol"}

type fakeAuth map[string]string

func (a fakeAuth) Viewer(token string) (string, error) {
	if n, ok := a[token]; ok {
		return n, nil
	}
	return "", errors.New("unknown token")
}

// Owner also accepts the expired tokens "old-tok-NAME".
func (a fakeAuth) Owner(token string) (string, error) {
	return a.Viewer(strings.TrimPrefix(token, "old-"))
}

// fakeGate grants per viewer and ends grants on demand, like the consent
// ledger.
type fakeGate struct {
	mu       sync.Mutex
	grants   map[string]bool // viewer → audio allowed
	talk     map[string]bool // viewer → may speak
	watchers map[string][]chan string
	asked    []string
	askedAt  []time.Time
	joinedAt time.Time // of the latest Joined
	joined   []string
	left     []string
	decided  chan struct{} // closed and replaced by grant
	expires  time.Time     // of every grant
}

func newFakeGate() *fakeGate {
	return &fakeGate{grants: map[string]bool{}, talk: map[string]bool{}, watchers: map[string][]chan string{}, decided: make(chan struct{})}
}

// AwaitDecision makes fakeGate a Waiter: it returns once the viewer of
// request ("req-VIEWER") has a grant.
func (g *fakeGate) AwaitDecision(ctx context.Context, request string) error {
	viewer := strings.TrimPrefix(request, "req-")
	for {
		g.mu.Lock()
		_, ok := g.grants[viewer]
		ch := g.decided
		g.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		}
	}
}

func (g *fakeGate) Admit(viewer string, wantAudio bool) (Admission, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.asked = append(g.asked, viewer)
	g.askedAt = append(g.askedAt, time.Now())
	audio, ok := g.grants[viewer]
	if !ok {
		return Admission{}, &Refusal{Reason: "pending", Request: "req-" + viewer}
	}
	ch := make(chan string, 1)
	g.watchers[viewer] = append(g.watchers[viewer], ch)
	return Admission{Audio: audio && wantAudio, Talk: g.talk[viewer], Ended: ch, Cancel: func() { g.cancel(viewer, ch) }, Expires: g.expires}, nil
}

func (g *fakeGate) cancel(viewer string, ch chan string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.watchers[viewer] = slices.DeleteFunc(g.watchers[viewer], func(c chan string) bool { return c == ch })
}

func (g *fakeGate) Joined(viewer, session string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.joined = append(g.joined, viewer+" "+session)
	g.joinedAt = time.Now()
}

func (g *fakeGate) Left(viewer, session, _ string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.left = append(g.left, viewer+" "+session)
}

func (g *fakeGate) grant(viewer string, audio bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.grants[viewer] = audio
	close(g.decided)
	g.decided = make(chan struct{})
}

// revoke ends viewer's grant: every watcher gets reason, then a close.
func (g *fakeGate) revoke(viewer, reason string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.grants, viewer)
	for _, ch := range g.watchers[viewer] {
		ch <- reason
		close(ch)
	}
	delete(g.watchers, viewer)
}

func (g *fakeGate) watching() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, w := range g.watchers {
		n += len(w)
	}
	return n
}

// runCapture runs the test pattern and tone until the test ends; the
// returned func stops it early.
func runCapture(t *testing.T) (*capture.Capture, func()) {
	t.Helper()
	c, err := capture.Open(capture.Config{Source: capture.SourceTest, Width: 640, Height: 360, FPS: 30, Audio: true, KeyInterval: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("capture: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return c, stop
}

// CaptureSource is the Source over a running Capture, as the daemon
// wires it.
type captureSource struct{ c *capture.Capture }

func (s captureSource) Subscribe() (*capture.Subscription, error) {
	return s.c.Subscribe(capture.SubscribeOptions{Mode: capture.Live}), nil
}

type sourceFunc func() (*capture.Subscription, error)

func (f sourceFunc) Subscribe() (*capture.Subscription, error) { return f() }

// rig is a live-view server over real TLS with a running capture.
type rig struct {
	srv     *Server
	ts      *httptest.Server
	gate    *fakeGate
	client  *http.Client
	capture *capture.Capture
	stopCap func()

	mu        sync.Mutex
	indicated []int
}

func newRig(t *testing.T, adjust func(*Config)) *rig {
	t.Helper()
	c, stop := runCapture(t)
	r := &rig{gate: newFakeGate(), capture: c, stopCap: stop}
	logs := &syncbuf.Buffer{}
	cfg := Config{
		Auth:     tokens,
		Gate:     r.gate,
		Source:   captureSource{c},
		Loopback: true,
		Logger:   slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Indicator: func(n int) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.indicated = append(r.indicated, n)
		},
	}
	if adjust != nil {
		adjust(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.srv = srv
	r.ts = httptest.NewUnstartedServer(srv.Handler())
	r.ts.Config.ErrorLog = log.New(t.Output(), "https server: ", 0) // Chromium's first refusal of the test CA
	r.ts.StartTLS()
	r.client = r.ts.Client()
	t.Cleanup(func() {
		r.ts.Close()
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if srv.Viewers() != 0 {
			t.Errorf("Viewers() = %d after Close", srv.Viewers())
		}
		for tok := range tokens {
			if strings.Contains(logs.String(), tok) {
				t.Errorf("the log contains the token %q", tok)
			}
		}
	})
	return r
}

// offer POSTs an offer as the holder of token.
func (r *rig) offer(t *testing.T, token string, audio bool) *livetest.Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	resp, err := livetest.Offer(ctx, r.client, r.ts.URL+"/whep", token, livetest.Options{Audio: audio, Loopback: true})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Viewer != nil {
		t.Cleanup(func() { resp.Viewer.Close() })
	}
	return resp
}

// watch POSTs an offer that must be accepted and waits for video.
func (r *rig) watch(t *testing.T, token string, audio bool) *livetest.Viewer {
	t.Helper()
	resp := r.offer(t, token, audio)
	if resp.Status != http.StatusCreated {
		t.Fatalf("offer with %s: status %d, body %s; want 201", token, resp.Status, resp.Body)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	first, err := resp.Viewer.WaitPackets(ctx, "video")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: first video RTP packet %v after the offer", token, first.Sub(resp.Viewer.Started).Round(time.Millisecond))
	return resp.Viewer
}

// get sends method to url with token (none when empty).
func (r *rig) do(t *testing.T, method, url, token string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var m map[string]any
	json.Unmarshal(body, &m)
	return resp.StatusCode, m
}

func decode(t *testing.T, b []byte) problem {
	t.Helper()
	var p problem
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatalf("error body %q is not JSON: %v", b, err)
	}
	if p.Error == "" || p.Reason == "" {
		t.Errorf("error body %q lacks error or reason", b)
	}
	return p
}

// eventually polls cond until it holds or d passed.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

func TestOfferRefused(t *testing.T) {
	r := newRig(t, nil)
	r.gate.grant("bob", true)
	r.watch(t, "tok-bob", true) // media flows on the shared tracks meanwhile

	for _, tc := range []struct {
		name, token string
		status      int
		reason      string
	}{
		{"no token", "", http.StatusUnauthorized, "token"},
		{"bad token", "tok-mallory", http.StatusUnauthorized, "token"},
		{"no grant", "tok-alice", http.StatusForbidden, "pending"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := r.offer(t, tc.token, true)
			if resp.Status != tc.status {
				t.Fatalf("status %d, body %s; want %d", resp.Status, resp.Body, tc.status)
			}
			p := decode(t, resp.Body)
			if p.Reason != tc.reason {
				t.Errorf("reason %q, want %q", p.Reason, tc.reason)
			}
			if tc.status == http.StatusUnauthorized && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("WWW-Authenticate %q, want Bearer", resp.Header.Get("WWW-Authenticate"))
			}
			if tc.status == http.StatusForbidden && p.Request != "req-alice" {
				t.Errorf("request %q, want req-alice", p.Request)
			}
			if n := r.srv.Viewers(); n != 1 {
				t.Errorf("Viewers() = %d, want 1 (bob only)", n)
			}
		})
	}

	// A refused viewer's own peer connection, kept open, receives nothing
	// while bob is being sent media.
	t.Run("no media without grant", func(t *testing.T) {
		resp := r.offer(t, "tok-alice", true)
		if resp.Status != http.StatusForbidden {
			t.Fatalf("status %d, want 403", resp.Status)
		}
		time.Sleep(2 * time.Second) // count packets over a fixed window
		for _, kind := range []string{"video", "audio"} {
			if n := resp.Viewer.Packets(kind); n != 0 {
				t.Errorf("refused viewer received %d %s RTP packets", n, kind)
			}
		}
		if n := r.srv.Viewers(); n != 1 {
			t.Errorf("Viewers() = %d, want 1 (bob only)", n)
		}
		r.gate.mu.Lock()
		defer r.gate.mu.Unlock()
		if n := len(r.gate.watchers["alice"]); n != 0 {
			t.Errorf("alice holds %d admissions", n)
		}
	})

	t.Run("content type", func(t *testing.T) {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, r.ts.URL+"/whep", strings.NewReader("v=0"))
		req.Header.Set("Authorization", "Bearer tok-bob")
		req.Header.Set("Content-Type", "text/plain")
		resp, err := r.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnsupportedMediaType {
			t.Errorf("status %d, want 415", resp.StatusCode)
		}
	})

	t.Run("garbage offer", func(t *testing.T) {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, r.ts.URL+"/whep", strings.NewReader("not sdp"))
		req.Header.Set("Authorization", "Bearer tok-bob")
		req.Header.Set("Content-Type", "application/sdp")
		resp, err := r.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || decode(t, b).Reason != "offer" {
			t.Errorf("status %d body %s, want 400 reason offer", resp.StatusCode, b)
		}
	})
}

var locationRE = regexp.MustCompile(`^/whep/[A-Z2-7]{26}$`)

func TestGrantedViewerAndRevoke(t *testing.T) {
	r := newRig(t, nil)
	r.gate.grant("alice", true)
	resp := r.offer(t, "tok-alice", true)
	if resp.Status != http.StatusCreated {
		t.Fatalf("status %d, body %s; want 201", resp.Status, resp.Body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/sdp" {
		t.Errorf("Content-Type %q, want application/sdp", ct)
	}
	if loc := resp.Header.Get("Location"); !locationRE.MatchString(loc) {
		t.Errorf("Location %q, want /whep/<26 base32 characters>", loc)
	}
	v := resp.Viewer
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for _, kind := range []string{"video", "audio"} {
		first, err := v.WaitPackets(ctx, kind)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("first %s RTP packet %v after the offer", kind, first.Sub(v.Started).Round(time.Millisecond))
	}
	if code, body := r.do(t, http.MethodGet, v.Location, "tok-alice"); code != http.StatusOK || body["state"] != "live" || body["audio"] != true {
		t.Errorf("status of a live session: %d %v", code, body)
	}
	if r.srv.Viewers() != 1 {
		t.Errorf("Viewers() = %d, want 1", r.srv.Viewers())
	}

	revoked := time.Now()
	r.gate.revoke("alice", "revoked")
	took := eventually(t, time.Second, "the session ends after the revoke", func() bool { return r.srv.Viewers() == 0 })
	t.Logf("session closed %v after the revoke", took.Round(time.Millisecond))
	// The server's close reaches the viewer too (DTLS close_notify).
	eventually(t, time.Second, "the viewer's peer connection closes", func() bool {
		st := v.PC.ConnectionState()
		return st == webrtc.PeerConnectionStateClosed || st == webrtc.PeerConnectionStateFailed || st == webrtc.PeerConnectionStateDisconnected
	})
	t.Logf("viewer saw %s %v after the revoke", v.PC.ConnectionState(), time.Since(revoked).Round(time.Millisecond))
	if code, body := r.do(t, http.MethodGet, v.Location, "tok-alice"); code != http.StatusGone || body["reason"] != "revoked" {
		t.Errorf("status after revoke: %d %v, want 410 reason revoked", code, body)
	}
	// Watch for another 1.5 s: nothing may arrive later than 1 s after the
	// revoke, and nothing at all once the server closed the connection.
	counts := map[string]int64{"video": v.Packets("video"), "audio": v.Packets("audio")}
	time.Sleep(1500 * time.Millisecond)
	for kind, n := range counts {
		if got := v.Packets(kind); got != n {
			t.Errorf("%s: %d RTP packets arrived after the session was closed", kind, got-n)
		}
		if last := v.Last(kind); last.Sub(revoked) > time.Second {
			t.Errorf("%s: last RTP packet %v after the revoke, want < 1 s", kind, last.Sub(revoked))
		}
	}
	r.gate.mu.Lock()
	joined, left := slices.Clone(r.gate.joined), slices.Clone(r.gate.left)
	r.gate.mu.Unlock()
	id := strings.TrimPrefix(resp.Header.Get("Location"), "/whep/")
	if !slices.Equal(joined, []string{"alice " + id}) || !slices.Equal(left, []string{"alice " + id}) {
		t.Errorf("audit hooks: joined %v left %v, want alice %s once each", joined, left, id)
	}
	r.mu.Lock()
	indicated := slices.Clone(r.indicated)
	r.mu.Unlock()
	if !slices.Equal(indicated, []int{1, 0}) {
		t.Errorf("Indicator calls %v, want [1 0]", indicated)
	}
	// Asking again after the revoke is refused.
	if again := r.offer(t, "tok-alice", true); again.Status != http.StatusForbidden {
		t.Errorf("offer after revoke: status %d, want 403", again.Status)
	}
}

func TestAudioOnlyWhenGranted(t *testing.T) {
	r := newRig(t, nil)
	r.gate.grant("alice", false) // video only
	r.gate.grant("bob", true)
	bob := r.watch(t, "tok-bob", true)
	resp := r.offer(t, "tok-alice", true)
	if resp.Status != http.StatusCreated {
		t.Fatalf("status %d, body %s; want 201", resp.Status, resp.Body)
	}
	alice := resp.Viewer
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if _, err := alice.WaitPackets(ctx, "video"); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.WaitPackets(ctx, "audio"); err != nil {
		t.Fatal(err)
	}
	before := bob.Packets("audio")
	time.Sleep(time.Second) // audio flows to bob meanwhile
	if bob.Packets("audio") == before {
		t.Fatal("bob's audio stopped; the check below would prove nothing")
	}
	if n := alice.Packets("audio"); n != 0 {
		t.Errorf("alice, granted video only, received %d audio RTP packets", n)
	}
	if audioSends(resp.Viewer.Answer) {
		t.Errorf("the answer to alice offers an audio track:\n%s", resp.Viewer.Answer)
	}
	if code, body := r.do(t, http.MethodGet, alice.Location, "tok-alice"); code != http.StatusOK || body["audio"] != false {
		t.Errorf("status: %d %v, want audio false", code, body)
	}
}

// audioSends reports whether an SDP answer sends audio (an audio section
// that is sendonly or sendrecv).
func audioSends(sdp string) bool {
	inAudio := false
	for _, line := range strings.Split(sdp, "\r\n") {
		switch {
		case strings.HasPrefix(line, "m="):
			inAudio = strings.HasPrefix(line, "m=audio") && !strings.HasPrefix(line, "m=audio 0 ")
		case inAudio && (line == "a=sendonly" || line == "a=sendrecv"):
			return true
		}
	}
	return false
}

func TestGrantIsPerViewer(t *testing.T) {
	r := newRig(t, nil)
	r.gate.grant("alice", true)
	r.watch(t, "tok-alice", true)
	resp := r.offer(t, "tok-bob", true)
	if resp.Status != http.StatusForbidden {
		t.Fatalf("bob with alice's grant: status %d, want 403", resp.Status)
	}
	if p := decode(t, resp.Body); p.Reason != "pending" || p.Request != "req-bob" {
		t.Errorf("refusal %+v, want pending req-bob", p)
	}
	r.gate.mu.Lock()
	asked := slices.Clone(r.gate.asked)
	r.gate.mu.Unlock()
	if !slices.Equal(asked, []string{"alice", "bob"}) {
		t.Errorf("the gate was asked for %v, want [alice bob]", asked)
	}
}

// An offer sent with Prefer: wait is held until the teacher decides and
// answered at once; without a decision it is refused when the wait ends.
func TestOfferWaitsForDecision(t *testing.T) {
	r := newRig(t, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	start := time.Now()
	resp, err := livetest.Offer(ctx, r.client, r.ts.URL+"/whep", "tok-bob", livetest.Options{Loopback: true, Wait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	resp.Viewer.Close()
	if resp.Status != http.StatusForbidden || time.Since(start) < time.Second {
		t.Fatalf("undecided: status %d after %v, want 403 after the 1 s wait", resp.Status, time.Since(start))
	}
	if pa := resp.Header.Get("Preference-Applied"); pa != "wait=1" {
		t.Errorf("undecided: Preference-Applied %q, want wait=1", pa)
	}
	grantedAt := make(chan time.Time, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		grantedAt <- time.Now()
		r.gate.grant("bob", false)
	}()
	resp, err = livetest.Offer(ctx, r.client, r.ts.URL+"/whep", "tok-bob", livetest.Options{Loopback: true, Wait: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Viewer.Close()
	answered := time.Now()
	granted := <-grantedAt
	if resp.Status != http.StatusCreated {
		t.Fatalf("after the grant: status %d %s, want 201", resp.Status, resp.Body)
	}
	if d := answered.Sub(granted); d > time.Second {
		t.Errorf("answered %v after the grant, want at once", d)
	}
	if _, err := resp.Viewer.WaitPackets(ctx, "video"); err != nil {
		t.Fatalf("no video: %v", err)
	}
	t.Logf("grant -> answer %v", answered.Sub(granted))
}

func TestMaxViewers(t *testing.T) {
	r := newRig(t, func(c *Config) { c.MaxViewers = 2 })
	for _, v := range []string{"alice", "bob", "carol"} {
		r.gate.grant(v, true)
	}
	alice := r.watch(t, "tok-alice", false)
	r.watch(t, "tok-bob", false)
	resp := r.offer(t, "tok-carol", false)
	if resp.Status != http.StatusServiceUnavailable {
		t.Fatalf("third viewer: status %d, want 503", resp.Status)
	}
	if p := decode(t, resp.Body); p.Reason != "too many viewers" {
		t.Errorf("reason %q, want too many viewers", p.Reason)
	}
	if code, err := alice.Delete(t.Context(), r.client, "tok-alice"); err != nil || code != http.StatusOK {
		t.Fatalf("DELETE: %d %v", code, err)
	}
	r.watch(t, "tok-carol", false)
	if n := r.srv.Viewers(); n != 2 {
		t.Errorf("Viewers() = %d, want 2", n)
	}
}

// A viewer has one session: a new offer replaces the last (which then
// answers 410 "replaced"), so one viewer cannot take every slot.
func TestOneSessionPerViewer(t *testing.T) {
	r := newRig(t, func(c *Config) { c.MaxViewers = 2 })
	r.gate.grant("alice", false)
	r.gate.grant("bob", false)
	var first []*livetest.Response
	for range 5 {
		resp, err := livetest.Offer(t.Context(), r.client, r.ts.URL+"/whep", "tok-alice", livetest.Options{Loopback: true, NoAnswer: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Viewer.Close() })
		if resp.Status != http.StatusCreated {
			t.Fatalf("offer %d of alice: status %d %s, want 201", len(first)+1, resp.Status, resp.Body)
		}
		first = append(first, resp)
	}
	if n := r.srv.Viewers(); n != 1 {
		t.Fatalf("Viewers() = %d after 5 offers of one viewer, want 1", n)
	}
	for _, old := range first[:4] {
		if code, body := r.do(t, http.MethodGet, old.Viewer.Location, "tok-alice"); code != http.StatusGone || body["reason"] != "replaced" {
			t.Errorf("GET of a replaced session: %d %v, want 410 replaced", code, body)
		}
		if code, _ := r.do(t, http.MethodDelete, old.Viewer.Location, "tok-alice"); code != http.StatusGone {
			t.Errorf("DELETE of a replaced session: %d, want 410", code)
		}
	}
	if code, _ := r.do(t, http.MethodGet, first[4].Viewer.Location, "tok-alice"); code != http.StatusOK {
		t.Errorf("GET of the newest session: %d, want 200", code)
	}
	r.watch(t, "tok-bob", false)
	if n := r.srv.Viewers(); n != 2 {
		t.Errorf("Viewers() = %d with alice and bob, want 2", n)
	}
	// Full: alice may still replace her own session; carol gets 503.
	if resp := r.offer(t, "tok-alice", false); resp.Status != http.StatusCreated {
		t.Errorf("alice replacing her session at the limit: %d %s, want 201", resp.Status, resp.Body)
	}
	r.gate.grant("carol", false)
	if resp := r.offer(t, "tok-carol", false); resp.Status != http.StatusServiceUnavailable {
		t.Errorf("a third viewer: %d, want 503", resp.Status)
	}
}

func TestDelete(t *testing.T) {
	r := newRig(t, nil)
	r.gate.grant("alice", true)
	alice := r.watch(t, "tok-alice", true)

	if code, _ := r.do(t, http.MethodDelete, alice.Location, ""); code != http.StatusUnauthorized {
		t.Errorf("DELETE without token: %d, want 401", code)
	}
	if code, body := r.do(t, http.MethodDelete, alice.Location, "tok-bob"); code != http.StatusForbidden {
		t.Errorf("DELETE by bob: %d %v, want 403", code, body)
	}
	if code, _ := r.do(t, http.MethodGet, alice.Location, "tok-bob"); code != http.StatusForbidden {
		t.Errorf("GET by bob: %d, want 403", code)
	}
	if r.srv.Viewers() != 1 {
		t.Fatal("bob's DELETE ended alice's session")
	}
	if code, _ := r.do(t, http.MethodDelete, r.ts.URL+"/whep/NOSUCHSESSION", "tok-alice"); code != http.StatusNotFound {
		t.Errorf("DELETE of an unknown session: %d, want 404", code)
	}
	if code, _ := r.do(t, http.MethodPatch, alice.Location, "tok-alice"); code != http.StatusMethodNotAllowed {
		t.Errorf("PATCH: %d, want 405", code)
	}
	if code, err := alice.Delete(t.Context(), r.client, "tok-alice"); err != nil || code != http.StatusOK {
		t.Fatalf("DELETE by alice: %d %v", code, err)
	}
	if r.srv.Viewers() != 0 {
		t.Errorf("Viewers() = %d after DELETE", r.srv.Viewers())
	}
	if code, body := r.do(t, http.MethodGet, alice.Location, "tok-alice"); code != http.StatusGone || body["reason"] != "viewer left" {
		t.Errorf("GET after DELETE: %d %v, want 410 viewer left", code, body)
	}
	if n := r.gate.watching(); n != 0 {
		t.Errorf("%d admissions not cancelled", n)
	}
}

func TestRecordingEnds(t *testing.T) {
	r := newRig(t, nil)
	r.gate.grant("alice", true)
	alice := r.watch(t, "tok-alice", true)
	r.stopCap()
	eventually(t, 2*time.Second, "the session ends with the recording", func() bool { return r.srv.Viewers() == 0 })
	if code, body := r.do(t, http.MethodGet, alice.Location, "tok-alice"); code != http.StatusGone || body["reason"] != "recording ended" {
		t.Errorf("GET after the recording ended: %d %v", code, body)
	}
}

func TestNotRecording(t *testing.T) {
	r := newRig(t, func(c *Config) {
		c.Source = sourceFunc(func() (*capture.Subscription, error) { return nil, errors.New("no session") })
	})
	r.gate.grant("alice", true)
	resp := r.offer(t, "tok-alice", true)
	if resp.Status != http.StatusCreated {
		t.Fatalf("status %d, want 201 (the feed starts once connected)", resp.Status)
	}
	eventually(t, 5*time.Second, "the session ends", func() bool { return r.srv.Viewers() == 0 })
	if code, body := r.do(t, http.MethodGet, resp.Viewer.Location, "tok-alice"); code != http.StatusGone || body["reason"] != "not recording" {
		t.Errorf("GET: %d %v, want 410 not recording", code, body)
	}
	if n := resp.Viewer.Packets("video"); n != 0 {
		t.Errorf("%d video packets without a recording", n)
	}
	if n := r.gate.watching(); n != 0 {
		t.Errorf("%d admissions not cancelled", n)
	}
}

func TestCloseEndsSessions(t *testing.T) {
	r := newRig(t, nil)
	r.gate.grant("alice", true)
	alice := r.watch(t, "tok-alice", false)
	if err := r.srv.Close(); err != nil {
		t.Fatal(err)
	}
	n := alice.Packets("video")
	time.Sleep(300 * time.Millisecond)
	if got := alice.Packets("video"); got != n {
		t.Errorf("%d packets after Close", got-n)
	}
	if resp := r.offer(t, "tok-alice", false); resp.Status != http.StatusServiceUnavailable {
		t.Errorf("offer after Close: %d, want 503", resp.Status)
	}
}

func TestPage(t *testing.T) {
	r := newRig(t, nil)
	for _, tc := range []struct{ path, ctype, contains string }{
		{"/", "text/html", `id="status"`},
		{"/viewer.js", "text/javascript", "Waiting for the teacher to accept"},
		{"/viewer.css", "text/css", "video"},
	} {
		resp, err := r.client.Get(r.ts.URL + tc.path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), tc.ctype) || !bytes.Contains(b, []byte(tc.contains)) {
			t.Errorf("GET %s: %d %s, want %s containing %q", tc.path, resp.StatusCode, resp.Header.Get("Content-Type"), tc.ctype, tc.contains)
		}
		if !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'self'") {
			t.Errorf("GET %s: no CSP", tc.path)
		}
	}
	if resp, err := r.client.Get(r.ts.URL + "/nothing"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /nothing: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
}

func TestNewValidates(t *testing.T) {
	_, err := New(Config{MaxViewers: -1, ICEServers: []webrtc.ICEServer{{URLs: []string{"http://stun.example"}}}})
	if err == nil {
		t.Fatal("New accepted an empty config")
	}
	for _, want := range []string{"Auth", "Gate", "Source", "MaxViewers", "ICEServers"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}

func TestNewAcceptsICEServers(t *testing.T) {
	srv, err := New(Config{
		Auth: tokens, Gate: newFakeGate(), Source: sourceFunc(func() (*capture.Subscription, error) { return nil, errors.New("none") }),
		ICEServers: []webrtc.ICEServer{
			{URLs: []string{"stun:stun.example.org:3478"}},
			{URLs: []string{"turn:turn.example.org:3478?transport=udp"}, Username: "box", Credential: "secret"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestNewViewerAsksForKeyframe(t *testing.T) {
	r := newRig(t, nil)
	r.gate.grant("alice", false)
	r.gate.grant("bob", false)
	r.watch(t, "tok-alice", false)
	before := r.capture.Stats().KeyframeRequests
	r.watch(t, "tok-bob", false)
	eventually(t, 2*time.Second, "a keyframe request for the second viewer", func() bool {
		return r.capture.Stats().KeyframeRequests > before
	})
}

func TestConcurrentOffersRespectLimit(t *testing.T) {
	r := newRig(t, func(c *Config) { c.MaxViewers = 2 })
	viewers := []string{"alice", "bob", "carol"}
	for _, v := range viewers {
		r.gate.grant(v, false)
	}
	statuses := make([]int, len(viewers))
	var wg sync.WaitGroup
	for i, v := range viewers {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			resp, err := livetest.Offer(ctx, r.client, r.ts.URL+"/whep", "tok-"+v, livetest.Options{Loopback: true})
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Viewer.Close()
			statuses[i] = resp.Status
		})
	}
	wg.Wait()
	slices.Sort(statuses)
	if want := []int{http.StatusCreated, http.StatusCreated, http.StatusServiceUnavailable}; !slices.Equal(statuses, want) {
		t.Errorf("statuses %v, want %v", statuses, want)
	}
}

func TestConnectTimeout(t *testing.T) {
	r := newRig(t, func(c *Config) { c.ConnectTimeout = 300 * time.Millisecond })
	r.gate.grant("alice", true)
	resp, err := livetest.Offer(t.Context(), r.client, r.ts.URL+"/whep", "tok-alice", livetest.Options{Loopback: true, NoAnswer: true})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Viewer.Close()
	if resp.Status != http.StatusCreated {
		t.Fatalf("status %d", resp.Status)
	}
	eventually(t, 3*time.Second, "the unconnected session ends", func() bool { return r.srv.Viewers() == 0 })
	if code, body := r.do(t, http.MethodGet, resp.Viewer.Location, "tok-alice"); code != http.StatusGone || body["reason"] != "connect timeout" {
		t.Errorf("GET: %d %v, want 410 connect timeout", code, body)
	}
	if n := r.gate.watching(); n != 0 {
		t.Errorf("%d admissions not cancelled", n)
	}
}

// Every missing or refused token is reported to AuthFailed with the
// remote address, never with the token.
func TestAuthFailedReported(t *testing.T) {
	var mu sync.Mutex
	var got []string
	r := newRig(t, func(c *Config) {
		c.AuthFailed = func(remote string, err error) {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, remote+" "+err.Error())
		}
	})
	r.offer(t, "", false)
	r.offer(t, "tok-forged", false)
	r.gate.grant("alice", false)
	r.watch(t, "tok-alice", false)
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 {
		t.Fatalf("AuthFailed called %d times, want 2 (no token, bad token): %q", len(got), got)
	}
	for _, g := range got {
		if !strings.HasPrefix(g, "127.0.0.1:") || strings.Contains(g, "tok-forged") {
			t.Errorf("AuthFailed(%q): want the remote address and no token", g)
		}
	}
}

// A running session is bound to its grant, not to the token that opened
// it: with her token expired alice still gets the session's status (with
// the grant's end) and can end it; bob's expired token is still another
// viewer's (403); an expired token opens nothing (401).
func TestSessionOutlivesToken(t *testing.T) {
	r := newRig(t, nil)
	r.gate.expires = time.Date(2031, 5, 6, 7, 8, 9, 0, time.UTC)
	r.gate.grant("alice", false)
	alice := r.watch(t, "tok-alice", false)

	code, body := r.do(t, http.MethodGet, alice.Location, "old-tok-alice")
	if code != http.StatusOK || body["state"] != "live" || body["expires"] != "2031-05-06T07:08:09Z" {
		t.Fatalf("GET with alice's expired token: %d %v, want 200 live with the grant's end", code, body)
	}
	if code, _ := r.do(t, http.MethodGet, alice.Location, "old-tok-bob"); code != http.StatusForbidden {
		t.Errorf("GET with bob's expired token: %d, want 403", code)
	}
	if resp := r.offer(t, "old-tok-alice", false); resp.Status != http.StatusUnauthorized {
		t.Errorf("offer with an expired token: %d, want 401", resp.Status)
	}
	if code, _ := r.do(t, http.MethodDelete, alice.Location, "old-tok-alice"); code != http.StatusOK {
		t.Fatalf("DELETE with alice's expired token: %d, want 200", code)
	}
	if code, body := r.do(t, http.MethodGet, alice.Location, "old-tok-alice"); code != http.StatusGone || body["reason"] != "viewer left" {
		t.Errorf("GET after DELETE: %d %v", code, body)
	}
}
