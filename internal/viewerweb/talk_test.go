package viewerweb_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/uploadbox/uploadbox/agent/live/livetest"
	"github.com/uploadbox/uploadbox/internal/viewerweb"
)

// talkBox is a stand-in for the box's WHEP endpoint as docs/daemon.md
// ("Talk-back") describes it to pages: a real pion peer that takes the
// page's offer, answers with the Talk header set by the test, tells the
// session's talk and floor on GET, and counts the audio packets the
// browser sends it.
type talkBox struct {
	t       *testing.T
	mu      sync.Mutex
	header  string // the next answer's Talk header ("" none)
	talk    bool   // GET's "talk"
	floor   string // GET's "floor"
	pcs     []*webrtc.PeerConnection
	packets atomic.Int64 // audio packets from the browser, this session
}

func (b *talkBox) set(header string, talk bool, floor string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.header, b.talk, b.floor = header, talk, floor
}

func (b *talkBox) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/whep":
		b.offer(w, r)
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/whep/"):
		b.mu.Lock()
		st := map[string]any{"state": "live", "audio": true, "talk": b.talk, "floor": b.floor, "expires": time.Now().Add(time.Hour).UTC()}
		b.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(st)
	case r.Method == http.MethodDelete && strings.HasPrefix(r.URL.Path, "/whep/"):
		w.WriteHeader(http.StatusOK)
	default:
		viewerweb.Handler(viewerweb.Box).ServeHTTP(w, r)
	}
}

func (b *talkBox) offer(w http.ResponseWriter, r *http.Request) {
	sdp, _ := io.ReadAll(r.Body)
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		b.t.Error(err)
		return
	}
	pc, err := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithSettingEngine(se)).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		b.t.Error(err)
		return
	}
	b.packets.Store(0)
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		for {
			if _, _, err := tr.ReadRTP(); err != nil {
				return
			}
			if tr.Kind() == webrtc.RTPCodecTypeAudio {
				b.packets.Add(1)
			}
		}
	})
	b.mu.Lock()
	b.pcs = append(b.pcs, pc)
	n, header := len(b.pcs), b.header
	b.mu.Unlock()
	// With no track of its own the answer's audio is recvonly: the box
	// takes the page's audio and sends none.
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: string(sdp)}); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(answer); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	<-gathered
	w.Header().Set("Content-Type", "application/sdp")
	w.Header().Set("Location", fmt.Sprintf("/whep/%d", n))
	if header != "" {
		w.Header().Set("Talk", header)
	}
	w.WriteHeader(http.StatusCreated)
	io.WriteString(w, pc.LocalDescription().SDP)
}

func (b *talkBox) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, pc := range b.pcs {
		pc.Close()
	}
}

// talkPage is the box's page open in Chromium on a talkBox.
type talkPage struct {
	*livetest.Page
	t   *testing.T
	ctx context.Context
}

func openTalkPage(t *testing.T, ctx context.Context, url string, args ...string) talkPage {
	t.Helper()
	modules, err := filepath.Abs("../../.cache/npm/node_modules")
	if err != nil {
		t.Fatal(err)
	}
	pg, err := livetest.OpenPage(ctx, url, livetest.BrowserOptions{NodeModules: modules, Width: 390, Height: 844, Args: args})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Close() })
	return talkPage{pg, t, ctx}
}

// button waits up to 20 s for the talk button to be in state (and the
// page playing).
func (p talkPage) button(state string) livetest.TalkButton {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 20*time.Second)
	defer cancel()
	s, err := p.Wait(ctx, func(s livetest.PageState) bool {
		return s.State == "playing" && s.Talk != nil && s.Talk.State == state
	})
	if err != nil {
		p.t.Fatalf("the talk button never showed %s: %v", state, err)
	}
	if s.ScrollWidth > 390 {
		p.t.Errorf("the page is %d px wide at 390 px with the talk button %s", s.ScrollWidth, state)
	}
	return *s.Talk
}

func (p talkPage) do(what string, err error) {
	p.t.Helper()
	if err != nil {
		p.t.Fatalf("%s: %v", what, err)
	}
}

// waitPackets waits up to 15 s for the box to count more than n audio
// packets.
func waitPackets(t *testing.T, b *talkBox, n int64, what string) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); b.packets.Load() <= n; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: the box got %d audio packets in 15 s, want more than %d", what, b.packets.Load(), n)
		}
	}
}

// quiet checks that no audio packet reaches the box for a second, once
// the half second a released button's last packets take has passed.
func quiet(t *testing.T, b *talkBox, what string) {
	t.Helper()
	time.Sleep(500 * time.Millisecond)
	n := b.packets.Load()
	time.Sleep(time.Second)
	if m := b.packets.Load(); m != n {
		t.Errorf("%s: the box got %d audio packets in the second after", what, m-n)
	}
}

// TestPushToTalkPage (issue 16): the viewer page's push-to-talk in
// Chromium with a fake microphone (a 440 Hz WAV), 390 px wide, against a
// pion peer in the box's place. The offer carries a sendrecv audio
// section with no track; with "Talk: allowed" the button says "Hold to
// talk"; held with the mouse, with Space and with a finger it says "Talking…" and
// audio reaches the box, released nothing more; the box's floor taken →
// "Another coach is speaking"; the session's talk withdrawn → "Talk not
// allowed". A grant without talk ("Talk: not-granted") shows the button
// disabled and nothing is sent when it is pressed; a box that says
// nothing of talk shows none. A refused microphone is said in words and
// nothing is sent.
func TestPushToTalkPage(t *testing.T) {
	if testing.Short() {
		t.Skip("Chromium push-to-talk test skipped with -short")
	}
	box := &talkBox{t: t}
	srv := httptest.NewServer(box)
	defer srv.Close()
	defer box.close()
	tone := filepath.Join(t.TempDir(), "tone.wav")
	if err := livetest.WriteToneWAV(tone, 440, 48000, 5); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()

	box.set("allowed", true, "free")
	p := openTalkPage(t, ctx, srv.URL+"/#token=tok-coach",
		"--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream", "--use-file-for-fake-audio-capture="+tone)
	if b := p.button("idle"); !b.Shown || !b.Enabled || b.Text != "Hold to talk" {
		t.Errorf("talk allowed: %+v, want an enabled Hold to talk", b)
	}
	if n := box.packets.Load(); n != 0 {
		t.Errorf("the box got %d audio packets before the button was held", n)
	}

	// Held with the mouse: talking, audio flows; released: none.
	p.do("press", p.Press(ctx, "#talk"))
	if b := p.button("talking"); b.Text != "Talking…" {
		t.Errorf("held: %+v", b)
	}
	waitPackets(t, box, 20, "held with the mouse")
	p.do("lift", p.Lift(ctx))
	p.button("idle")
	quiet(t, box, "released")

	// Held with Space.
	n := box.packets.Load()
	p.do("space down", p.KeyDown(ctx, "Space"))
	p.button("talking")
	waitPackets(t, box, n+20, "held with Space")
	p.do("space up", p.KeyUp(ctx, "Space"))
	p.button("idle")
	quiet(t, box, "Space released")

	// Held with a finger.
	n = box.packets.Load()
	p.do("touch", p.TouchStart(ctx, "#talk"))
	p.button("talking")
	waitPackets(t, box, n+20, "held with a finger")
	p.do("lift the finger", p.TouchEnd(ctx))
	p.button("idle")
	quiet(t, box, "finger lifted")

	// Another viewer holds the box's floor; then the talk is withdrawn.
	box.set("allowed", true, "taken")
	if b := p.button("taken"); b.Text != "Another coach is speaking" {
		t.Errorf("floor taken: %+v", b)
	}
	box.set("allowed", false, "free")
	if b := p.button("not-allowed"); !b.Shown || b.Enabled || b.Text != "Talk not allowed" {
		t.Errorf("talk withdrawn: %+v, want a disabled Talk not allowed", b)
	}

	// A grant without talk: the button is disabled, pressing sends nothing.
	p.do("stop", p.Click(ctx, "#stop"))
	box.set("not-granted", false, "free")
	p.do("watch", p.Click(ctx, "#watch"))
	if b := p.button("not-allowed"); b.Enabled || b.Text != "Talk not allowed" {
		t.Errorf("a grant without talk: %+v", b)
	}
	p.do("press", p.Press(ctx, "#talk"))
	p.do("space down", p.KeyDown(ctx, "Space"))
	quiet(t, box, "pressed without talk")
	p.do("lift", p.Lift(ctx))
	p.do("space up", p.KeyUp(ctx, "Space"))
	if s := p.Last(); s.Talk.Sent != 0 || box.packets.Load() != 0 {
		t.Errorf("without talk the browser sent %d audio packets, the box got %d", s.Talk.Sent, box.packets.Load())
	}

	// A box that says nothing of talk: no button.
	p.do("stop", p.Click(ctx, "#stop"))
	box.set("", false, "")
	p.do("watch", p.Click(ctx, "#watch"))
	if b := p.button("off"); b.Shown {
		t.Errorf("no Talk header: %+v, want no button", b)
	}

	// The microphone refused (prompts denied): the page says so; nothing
	// is sent.
	box.set("allowed", true, "free")
	q := openTalkPage(t, ctx, srv.URL+"/#token=tok-coach", "--use-fake-device-for-media-stream", "--deny-permission-prompts")
	q.button("idle")
	q.do("press", q.Press(ctx, "#talk"))
	s, err := q.Wait(ctx, func(s livetest.PageState) bool { return s.Talk != nil && s.Talk.NoteReason != "" })
	if err != nil {
		t.Fatal(err)
	}
	q.do("lift", q.Lift(ctx))
	if s.Talk.NoteReason != "refused" || !strings.Contains(s.Talk.Note, "microphone was refused") {
		t.Errorf("microphone refused: %+v", *s.Talk)
	}
	quiet(t, box, "microphone refused")
	if n := box.packets.Load(); n != 0 {
		t.Errorf("with the microphone refused the box got %d audio packets", n)
	}
}
