package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/agent/live/livetest"
	"github.com/uploadbox/uploadbox/crypto"
)

// setAnonymiseDefault rewrites d's config (writeBoxConfig's) so that a
// session is anonymised by mode unless it chooses, with one rectangle in
// capture.masks (the left quarter of the bottom half).
func setAnonymiseDefault(t *testing.T, d boxDirs, mode string) {
	t.Helper()
	cfg, err := os.ReadFile(d.config)
	if err != nil {
		t.Fatal(err)
	}
	cfg = bytes.Replace(cfg, []byte("  bitrate: 1500k\n"), []byte("  bitrate: 1500k\n  masks:\n    - {x: 0, y: 0.5, w: 0.25, h: 0.5}\n"), 1)
	cfg = bytes.Replace(cfg, []byte("  segment: 2s\n"), []byte("  segment: 2s\n  anonymise: "+mode+"\n"), 1)
	if err := os.WriteFile(d.config, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestTeacherPageStartsAnonymised (issue 16): the teacher's page, in
// Chromium 390 px wide, offers off, whole and masks for Start recording,
// preset to the box's recording.anonymise (masks here); the teacher picks
// whole and starts: the box starts the session with whole (its status,
// the page's recording line, the audit chain's session.start by
// teacher:tess), every segment the receiver stores carries
// `anonymise=whole` in its signed header, `recordings list` says whole,
// and the receiver's audit names the mode in the decision.
func TestTeacherPageStartsAnonymised(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon, a receiver and Chromium; skipped under -short")
	}
	dir := t.TempDir()
	b := setupBox(t, dir, nil)
	d := writeBoxConfig(t, dir, b.state, fastLink)
	setAnonymiseDefault(t, d, "masks")
	startDaemon(t, d)
	waitControl(t, d, "connected", connected)
	const password = "Correct-Horse-Battery-9"
	addViewer(t, b.rcv.data, "tess", password, "--role", "teacher")
	run(t, "uploadbox-receiver", "viewers", "allow", "tess", "room-7", "--data", b.rcv.data)

	modules, _ := filepath.Abs("../../.cache/npm/node_modules")
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	pg, err := livetest.OpenPage(ctx, "https://"+b.rcv.addr+"/", livetest.BrowserOptions{NodeModules: modules, Width: 390, Height: 844})
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	teacher := teacherPage{coachPage{pg, t}}
	teacher.wait("the sign-in form", func(s livetest.PageState) bool { return s.State == "signed-out" && s.SignIn })
	teacher.signIn("tess", password)

	// Not recording: the choice is offered, preset to the box's default.
	s := teacher.room("Start recording with the box's default mode", func(r *livetest.TeacherRoom) bool {
		return r.Online && !r.Recording && r.StartMode != ""
	})
	if r := s.Teacher.Room("room-7"); r.StartMode != "masks" || !slices.Equal(r.StartModes, []string{"off", "whole", "masks"}) {
		t.Errorf("the page offers %v preset to %q, want off, whole, masks preset to the box's masks", r.StartModes, r.StartMode)
	}
	teacher.fits("teacher-anonymise")

	if err := pg.Select(t.Context(), `select[data-t-anonymise][data-room="room-7"]`, "whole"); err != nil {
		t.Fatal(err)
	}
	teacher.room("whole chosen", func(r *livetest.TeacherRoom) bool { return r.StartMode == "whole" })
	teacher.click(`li[data-t-room="room-7"] button[data-t-action="start_session"]`)
	teacher.result("start_session")
	s = teacher.room("recording, anonymised whole", func(r *livetest.TeacherRoom) bool {
		return r.Recording && r.Anonymise == "whole"
	})
	if txt := s.Teacher.Room("room-7").RecText; !strings.Contains(txt, "faces unrecognisable") {
		t.Errorf("the recording line says %q, want it to name the anonymisation", txt)
	}
	teacher.fits("teacher-recording-anonymised")

	var st struct {
		Active    bool   `json:"active"`
		Anonymise string `json:"anonymise"`
		Recording string `json:"recording"`
		Segments  int    `json:"segments"`
	}
	for deadline := time.Now().Add(30 * time.Second); st.Segments < 1 && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		ctl(t, d, &st, "session", "status")
	}
	if !st.Active || st.Anonymise != "whole" || st.Segments < 1 {
		t.Fatalf("session status after the teacher's Start with whole: %+v", st)
	}
	teacher.click(`li[data-t-room="room-7"] button[data-t-action="stop_session"]`)
	teacher.result("stop_session")
	waitDrained(t, d, 60*time.Second)

	// The receiver: every stored segment's signed header names whole, and
	// recordings list says so.
	var rs []struct {
		ID        string   `json:"id"`
		Anonymise string   `json:"anonymise"`
		Keys      []string `json:"keys"`
	}
	out := run(t, "uploadbox-receiver", "recordings", "list", "--data", b.rcv.data, "--json")
	if err := json.Unmarshal([]byte(out), &rs); err != nil || len(rs) != 1 || rs[0].ID != st.Recording {
		t.Fatalf("recordings list --json: %v, want recording %s:\n%s", err, st.Recording, out)
	}
	if rs[0].Anonymise != "whole" || len(rs[0].Keys) < 2 {
		t.Errorf("recordings list: %+v, want anonymise whole and at least 2 segments", rs[0])
	}
	for _, k := range rs[0].Keys {
		f, err := os.Open(filepath.Join(b.rcv.data, "store", filepath.FromSlash(k)))
		if err != nil {
			t.Fatal(err)
		}
		h, err := crypto.ReadHeader(f)
		f.Close()
		if err != nil || h.Codec != "video/mp4; anonymise=whole" {
			t.Errorf("stored segment %s: header codec %q (%v), want video/mp4; anonymise=whole", k, h.Codec, err)
		}
	}

	// The audit chains: the box's session.start by the teacher, with the
	// mode; the receiver's decision, with the mode.
	var starts []string
	for _, e := range readAudit(t, d.audit) {
		if e.Event == "session.start" {
			starts = append(starts, e.Outcome+" by "+e.By+": "+e.Detail)
		}
	}
	if len(starts) != 1 || !strings.HasPrefix(starts[0], "ok by teacher:tess: recording="+st.Recording) || !strings.HasSuffix(starts[0], " anonymise=whole") {
		t.Errorf("box audit session.start: %q, want one ok by teacher:tess for %s ending in anonymise=whole", starts, st.Recording)
	}
	var decisions []auditEntry
	out = run(t, "uploadbox-receiver", "audit", "list", "--data", b.rcv.data, "--type", "consent.decision", "--json")
	if err := json.Unmarshal([]byte(out), &decisions); err != nil {
		t.Fatalf("audit list --json: %v\n%s", err, out)
	}
	if !slices.ContainsFunc(decisions, func(e auditEntry) bool {
		return strings.HasPrefix(e.Detail, "decision=start_session ") && strings.HasSuffix(e.Detail, " anonymise=whole") && e.By == "teacher:tess"
	}) {
		t.Errorf("receiver audit: no consent.decision start_session by teacher:tess with anonymise=whole: %+v", decisions)
	}
}
