package e2e

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/agent/live/livetest"
	"github.com/uploadbox/uploadbox/agent/talkback"
	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/wire"
)

// chunk is how much of the box's file levels measures at a time: 100 ms,
// so that a tone a little off 440 Hz still counts and the box's 880 Hz
// open/close tone does not.
const chunk = second / 10

// levels is the amplitude (of a full-scale 32767) of hz in each 100 ms of
// x.
func levels(x []int16, hz float64) []float64 {
	var out []float64
	for i := 0; i+chunk <= len(x); i += chunk {
		out = append(out, 2*math.Sqrt(talkback.Power(x[i:i+chunk], hz)))
	}
	return out
}

// TestTalkBackChromium (issue 16, "Proof with Chromium"): the coach's
// page in Chromium with a fake microphone playing 440 Hz, through the
// real receiver, to the real daemon whose talk-back device is a WAV file;
// the teacher's page in another Chromium, both 390 px wide. The teacher
// ticks "Coach may speak" and accepts: the coach's page shows "Hold to
// talk", the teacher's page shows the coach may speak; held, the page
// says "Talking…", the teacher's page says the coach is speaking, and
// the box's file holds 440 Hz ± 5 Hz (FFT). The teacher ends all viewing
// while the coach holds the button: from 1 s after the click on, the file
// holds no 440 Hz. A second coach accepted without the box ticked gets
// a disabled "Talk not allowed", and holding it (pointer and Space)
// puts nothing in the file and sends nothing. The box's own LAN page,
// its viewer accepted on the box with --talk, plays 440 Hz the same way.
func TestTalkBackChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon, a receiver and three Chromiums; skipped under -short")
	}
	dir := t.TempDir()
	wav := talkFile(filepath.Join(dir, "talkback.wav"))
	b, lb, _ := startRelayBoxLive(t, dir, nil, nil, "  talkback_device: file:"+string(wav)+"\n")
	const password = "Correct-Horse-Battery-9"
	addViewer(t, b.rcv.data, "coach-c", password)
	addViewer(t, b.rcv.data, "coach-d", password)
	addViewer(t, b.rcv.data, "tess", password, "--role", "teacher")
	for _, name := range []string{"coach-c", "coach-d", "tess"} {
		run(t, "uploadbox-receiver", "viewers", "allow", name, "room-7", "--data", b.rcv.data)
	}
	tone := filepath.Join(dir, "tone.wav")
	if err := livetest.WriteToneWAV(tone, 440, 48000, 10); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	teacher := teacherPage{openReceiverPage(t, ctx, b)}
	mic := []string{"--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream", "--use-file-for-fake-audio-capture=" + tone}
	coach := openReceiverPage(t, ctx, b, mic...)
	talkOn := func(p coachPage, what string, ok func(b *livetest.TalkButton) bool) livetest.TalkButton {
		t.Helper()
		s := p.wait(what, func(s livetest.PageState) bool { return s.State == "playing" && s.Talk != nil && ok(s.Talk) })
		return *s.Talk
	}
	talk := func(what string, ok func(b *livetest.TalkButton) bool) livetest.TalkButton {
		t.Helper()
		return talkOn(coach, what, ok)
	}
	watcher := func(viewer string) func(r *livetest.TeacherRoom) *livetest.TeacherWatcher {
		return func(r *livetest.TeacherRoom) *livetest.TeacherWatcher {
			for i := range r.Watching {
				if r.Watching[i].Viewer == viewer {
					return &r.Watching[i]
				}
			}
			return nil
		}
	}
	hold := func() {
		t.Helper()
		if err := coach.Press(ctx, "#talk"); err != nil {
			t.Fatal(err)
		}
	}
	lift := func() {
		t.Helper()
		if err := coach.Lift(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// The receiver's own answer (GET /v1/teacher/rooms), beside the page:
	// coach-d as the box last pushed it.
	api := receiverClient(t, b)
	apiToken := login(t, api, b, "tess")
	onReceiver := func(what string, ok func(w wire.ConsentWatching) bool) {
		t.Helper()
		code, raw := teacherGet(t, api, b, "/v1/teacher/rooms", apiToken)
		var rooms receiver.TeacherRooms
		if err := json.Unmarshal(raw, &rooms); err != nil || code != http.StatusOK || len(rooms.Rooms) != 1 || rooms.Rooms[0].State == nil {
			t.Fatalf("GET /v1/teacher/rooms: HTTP %d %s", code, raw)
		}
		for _, w := range rooms.Rooms[0].State.Watching {
			if w.Viewer == "coach-d" && ok(w) {
				return
			}
		}
		t.Errorf("GET /v1/teacher/rooms while %s: %s", what, raw)
	}

	teacher.signIn("tess", password)
	teacher.room("room-7 recording", func(r *livetest.TeacherRoom) bool { return r.Online && r.Recording })

	// The teacher ticks "Coach may speak" and accepts coach-d.
	coach.signIn("coach-d", password)
	coach.wait("the rooms", func(s livetest.PageState) bool { return s.State == "rooms" && len(s.Rooms) == 1 })
	coach.click(`button.ask[data-room="room-7"]`)
	req, _, _ := teacher.pending("coach-d")
	teacher.click(`li[data-t-request="` + req + `"] input[data-t-talk]`)
	teacher.room("Coach may speak ticked", func(r *livetest.TeacherRoom) bool {
		return len(r.Pending) == 1 && r.Pending[0].Talk != nil && *r.Pending[0].Talk
	})
	teacher.fits("talk-request")
	teacher.click(`li[data-t-request="` + req + `"] button[data-t-action="accept"][data-for="15m"]`)
	if b := talk("Hold to talk", func(b *livetest.TalkButton) bool { return b.State == "idle" }); !b.Shown || !b.Enabled || b.Text != "Hold to talk" {
		t.Errorf("talk granted: the button %+v", b)
	}
	s := teacher.room("coach-d may speak", func(r *livetest.TeacherRoom) bool { w := watcher("coach-d")(r); return w != nil && w.Talk })
	if w := watcher("coach-d")(s.Teacher.Room("room-7")); !strings.Contains(w.Text, "may speak") || w.Speaking {
		t.Errorf("the teacher's page shows %+v, want coach-d who may speak and is not speaking", *w)
	}
	onReceiver("coach-d may speak", func(w wire.ConsentWatching) bool { return w.Talk && !w.Speaking })
	coach.fits("talk-idle")

	// Held: the coach's voice (440 Hz) is in the box's file.
	n, read := len(wav.samples(t)), time.Now()
	hold()
	pressed := time.Since(read)
	talk("Talking…", func(b *livetest.TalkButton) bool { return b.State == "talking" && b.Text == "Talking…" })
	teacher.room("coach-d speaking", func(r *livetest.TeacherRoom) bool {
		w := watcher("coach-d")(r)
		return w != nil && w.Speaking && strings.Contains(w.Text, "speaking now")
	})
	onReceiver("coach-d speaks", func(w wire.ConsentWatching) bool { return w.Talk && w.Speaking })
	coach.fits("talk-talking")
	played := wav.playedFrom(t, n, 4*time.Second)
	lift()
	talk("Hold to talk again", func(b *livetest.TalkButton) bool { return b.State == "idle" })
	// The last two seconds held: the strongest frequency, and the level
	// of 440 Hz (the median of its 100 ms).
	steady := played[2*second:]
	hz := talkback.Peak(steady, 100, 4000)
	lv := levels(steady, 440)
	slices.Sort(lv)
	talkAmp := lv[len(lv)/2]
	t.Logf("held 4 s: the box played %.2f Hz, 440 Hz at amplitude %.0f (of 32767)", hz, talkAmp)
	if math.Abs(hz-440) > 5 || talkAmp < 300 {
		t.Fatalf("the box played %.2f Hz (440 Hz at amplitude %.0f) while the coach held the button, want 440 Hz ± 5 Hz", hz, talkAmp)
	}
	// When the voice started (logged, not asserted): the end of the first
	// 20 ms of the file (in steps of 10 ms) holding the tone at half its
	// level, the file growing in real time from when it was read before
	// the press.
	for i := 0; i+second/50 <= len(played); i += second / 100 {
		if 2*math.Sqrt(talkback.Power(played[i:i+second/50], 440)) > talkAmp/2 {
			t.Logf("press → the voice in the box's file: about %s", (time.Duration(i+second/50)*time.Second/second - pressed).Round(time.Millisecond))
			break
		}
	}
	teacher.room("coach-d no longer speaking", func(r *livetest.TeacherRoom) bool {
		w := watcher("coach-d")(r)
		return w != nil && w.Talk && !w.Speaking && strings.Contains(w.Text, "may speak")
	})
	onReceiver("coach-d released the button", func(w wire.ConsentWatching) bool { return w.Talk && !w.Speaking })

	// The teacher ends all viewing while the coach holds the button: from
	// 1 s after the click on, nothing of the voice is played.
	hold()
	teacher.room("coach-d speaking again", func(r *livetest.TeacherRoom) bool { w := watcher("coach-d")(r); return w != nil && w.Speaking })
	n = len(wav.samples(t))
	teacher.click(`li[data-t-room="room-7"] button[data-t-action="end_all"]`)
	after := wav.playedFrom(t, n, 4*time.Second)
	lift()
	coach.state("ended")
	teacher.result("end_all")
	lv = levels(after, 440)
	t.Logf("End all viewing → the voice gone from the box's file: about %d ms", 100*slices.IndexFunc(lv, func(a float64) bool { return a < talkAmp/50 }))
	for i := 10; i < len(lv); i++ {
		if lv[i] > talkAmp/50 {
			t.Errorf("%d ms after End all viewing the box played 440 Hz at amplitude %.0f (the voice was %.0f)", i*100, lv[i], talkAmp)
		}
	}

	// coach-c, accepted without "Coach may speak": "Talk not allowed",
	// disabled; holding it (pointer and Space) plays and sends nothing.
	coach.click("#signout")
	coach.signIn("coach-c", password)
	coach.wait("the rooms", func(s livetest.PageState) bool { return s.State == "rooms" && len(s.Rooms) == 1 })
	coach.click(`button.ask[data-room="room-7"]`)
	req, _, _ = teacher.pending("coach-c")
	teacher.click(`li[data-t-request="` + req + `"] button[data-t-action="accept"][data-for="15m"]`)
	if b := talk("Talk not allowed", func(b *livetest.TalkButton) bool { return b.State == "not-allowed" }); b.Enabled || b.Text != "Talk not allowed" {
		t.Errorf("a grant without talk: the button %+v, want disabled", b)
	}
	s = teacher.room("coach-c watching", func(r *livetest.TeacherRoom) bool { return watcher("coach-c")(r) != nil })
	if w := watcher("coach-c")(s.Teacher.Room("room-7")); w.Talk || strings.Contains(w.Text, "speak") {
		t.Errorf("the teacher's page shows %+v, want coach-c who may not speak", *w)
	}
	n = len(wav.samples(t))
	hold()
	if err := coach.KeyDown(ctx, "Space"); err != nil {
		t.Fatal(err)
	}
	quiet := wav.playedFrom(t, n, 3*time.Second)
	lift()
	if err := coach.KeyUp(ctx, "Space"); err != nil {
		t.Fatal(err)
	}
	if a := slices.Max(levels(quiet, 440)); a > talkAmp/50 {
		t.Errorf("held without talk: the box played 440 Hz at amplitude %.0f", a)
	}
	if s := coach.Last(); s.Talk == nil || s.Talk.Sent != 0 {
		t.Errorf("held without talk: the browser sent audio: %+v", s.Talk)
	}

	// The box's own page on its LAN (a local viewer token; the box's
	// console accepts with --talk): the same button, and held, the voice
	// plays.
	token := strings.TrimSpace(run(t, "uploadbox", "viewer", "token", "--name", "coach-l", "--ttl", "1h", "--state", b.state))
	modules, _ := filepath.Abs("../../.cache/npm/node_modules")
	pg, err := livetest.OpenPage(ctx, "https://"+lb.live+"/#token="+token, livetest.BrowserOptions{NodeModules: modules, Width: 390, Height: 844, Args: mic})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pg.Close() })
	lan := coachPage{pg, t}
	lan.state("waiting")
	run(t, "uploadbox", "consent", "accept", pendingRequest(t, lb, "coach-l"), "--talk", "--socket", lb.socket)
	talkOn(lan, "Hold to talk on the box's page", func(b *livetest.TalkButton) bool { return b.State == "idle" && b.Shown && b.Enabled })
	lan.fits("lan-talk")
	n = len(wav.samples(t))
	if err := lan.Press(ctx, "#talk"); err != nil {
		t.Fatal(err)
	}
	talkOn(lan, "Talking… on the box's page", func(b *livetest.TalkButton) bool { return b.State == "talking" })
	played = wav.playedFrom(t, n, 4*time.Second)
	if err := lan.Lift(ctx); err != nil {
		t.Fatal(err)
	}
	if hz := talkback.Peak(played[2*second:], 100, 4000); math.Abs(hz-440) > 5 {
		t.Errorf("held on the box's page: the box played %.2f Hz, want 440 Hz ± 5 Hz", hz)
	}
}
