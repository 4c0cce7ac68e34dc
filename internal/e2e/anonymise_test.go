package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/crypto"
)

// lumaFrames decodes every video frame of mp4 with ffmpeg into w x h luma
// planes.
func lumaFrames(t *testing.T, mp4 string, w, h int) [][]byte {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(mediaTool(t, "ffmpeg"), "-v", "error", "-i", mp4, "-f", "rawvideo", "-pix_fmt", "gray", "-")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ffmpeg decode %s: %v\n%s", mp4, err, stderr.String())
	}
	if len(out)%(w*h) != 0 || len(out) == 0 {
		t.Fatalf("ffmpeg gave %d bytes, not whole %dx%d frames", len(out), w, h)
	}
	var frames [][]byte
	for off := 0; off < len(out); off += w * h {
		frames = append(frames, out[off:off+w*h])
	}
	return frames
}

// lumaRange is the darkest and brightest luma in the rectangle [x0,x1) x
// [y0,y1) of a w-wide frame.
func lumaRange(f []byte, w, x0, y0, x1, y1 int) (lo, hi byte) {
	lo, hi = 255, 0
	for y := y0; y < y1; y++ {
		for _, v := range f[y*w+x0 : y*w+x1] {
			lo, hi = min(lo, v), max(hi, v)
		}
	}
	return lo, hi
}

// uniformBlocks is the share of the b x b blocks of a frame whose inside
// (a margin of b/8 left out for the codec's deblocking across block
// edges) spans at most 16 luma levels.
func uniformBlocks(f []byte, w, h, b int) float64 {
	m := b / 8
	n, flat := 0, 0
	for by := 0; by+b <= h; by += b {
		for bx := 0; bx+b <= w; bx += b {
			lo, hi := lumaRange(f, w, bx+m, by+m, bx+b-m, by+b-m)
			n++
			if hi-lo <= 16 {
				flat++
			}
		}
	}
	return float64(flat) / float64(n)
}

// recordAnon records 4 s of the 1280x720 test pattern at 25 fps with
// `uploadbox record --anonymise mode`, checks that every segment header
// names the mode, and exports the recording.
func recordAnon(t *testing.T, dir string, k keys, mode string, extra ...string) string {
	t.Helper()
	return recordFrom(t, dir, k, anonRecording{source: "test", fps: 25, secs: 4}, mode, extra...)
}

// anonRecording is what recordFrom records: --source, --fps and the
// length in seconds (segments of half of it).
type anonRecording struct {
	source    string
	fps, secs int
}

// recordFrom records r at 1280x720 with `uploadbox record --anonymise
// mode`, checks that every segment header names the mode, and exports
// the recording.
func recordFrom(t *testing.T, dir string, k keys, r anonRecording, mode string, extra ...string) string {
	t.Helper()
	out := filepath.Join(dir, "spool-"+mode)
	if err := os.Mkdir(out, 0o700); err != nil {
		t.Fatal(err)
	}
	run(t, "uploadbox", append([]string{"record", "--source", r.source, "--size", "1280x720", "--fps", strconv.Itoa(r.fps),
		"--bitrate", "2500k", "--no-audio", "--duration", strconv.Itoa(r.secs) + "s", "--segment", strconv.Itoa(r.secs*500) + "ms",
		"--anonymise", mode, "--recipients-file", k.pub, "--device-key", k.dev, "--out", out}, extra...)...)
	segs, _ := filepath.Glob(filepath.Join(out, "*.ubx"))
	if len(segs) < 2 {
		t.Fatalf("%s: %d segments sealed, want 2 for %d s at %d s each", mode, len(segs), r.secs, r.secs/2)
	}
	want := "video/mp4"
	if mode != "off" {
		want += "; anonymise=" + mode
	}
	for _, s := range segs {
		f, err := os.Open(s)
		if err != nil {
			t.Fatal(err)
		}
		h, err := crypto.ReadHeader(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if h.Codec != want {
			t.Errorf("%s: header codec %q, want %q", filepath.Base(s), h.Codec, want)
		}
	}
	mp4 := filepath.Join(dir, mode+".mp4")
	run(t, "uploadbox-receiver", append([]string{"export", "--identity", k.org, "-o", mp4}, segs...)...)
	return mp4
}

// TestAnonymisedRecordings (issue 16): the filter runs before the single
// encoder, so the decoded export of `--anonymise masks` is black inside
// the mask in every frame and that of `--anonymise whole` is made of flat
// blocks, while the unfiltered recording of the same pattern is neither.
// The mode is in every signed segment header.
func TestAnonymisedRecordings(t *testing.T) {
	if testing.Short() {
		t.Skip("records three times 4 s of 720p video; skipped under -short")
	}
	const w, h = 1280, 720
	dir := t.TempDir()
	k := makeKeys(t, dir)
	off := lumaFrames(t, recordAnon(t, dir, k, "off"), w, h)
	whole := lumaFrames(t, recordAnon(t, dir, k, "whole"), w, h)
	masks := lumaFrames(t, recordAnon(t, dir, k, "masks", "--mask", "0.5,0.5,0.5,0.5"), w, h)
	for name, fs := range map[string][][]byte{"off": off, "whole": whole, "masks": masks} {
		if len(fs) < 90 {
			t.Fatalf("%s: %d frames decoded, want about 100 for 4 s at 25 fps", name, len(fs))
		}
	}

	// masks: the bottom right quarter, less 8 px of codec bleed at its
	// edges, is near black (video black is 16) in every frame; the same
	// place in the unfiltered recording is not.
	x0, y0, x1, y1 := w/2+8, h/2+8, w-8, h-8
	for i, f := range masks {
		if lo, hi := lumaRange(f, w, x0, y0, x1, y1); hi > 28 || hi-lo > 10 {
			t.Errorf("masks: frame %d: the masked rectangle spans luma %d..%d, want uniform near black", i, lo, hi)
			break
		}
	}
	if lo, hi := lumaRange(off[len(off)/2], w, x0, y0, x1, y1); hi-lo < 100 {
		t.Errorf("off: the rectangle spans luma %d..%d in the unfiltered recording: the check cannot tell", lo, hi)
	}
	if lo, hi := lumaRange(masks[len(masks)/2], w, 8, 8, w/2-8, h/2-8); hi-lo < 100 {
		t.Errorf("masks: outside the mask the picture spans luma %d..%d: more than the mask was filled", lo, hi)
	}

	// whole: blocks of 1/40 of the width (32 px at 1280) are flat.
	b := w / 40
	for _, i := range []int{len(whole) / 4, len(whole) / 2, len(whole) - 1} {
		flatWhole, flatOff := uniformBlocks(whole[i], w, h, b), uniformBlocks(off[min(i, len(off)-1)], w, h, b)
		t.Logf("frame %d: %.0f%% of %d px blocks flat with whole, %.0f%% unfiltered", i, 100*flatWhole, b, 100*flatOff)
		if flatWhole < 0.8 {
			t.Errorf("whole: frame %d: %.0f%% of the %d px blocks are flat, want most (>= 80%%)", i, 100*flatWhole, b)
		}
		if flatOff > 0.3 {
			t.Errorf("off: frame %d: %.0f%% of the %d px blocks are flat unfiltered: the check cannot tell", i, 100*flatOff, b)
		}
	}
}

// TestAnonymisedSession (issue 16): the daemon takes recording.anonymise
// as the default of a session, `session start --anonymise` overrides it,
// and the mode is in the session's status, the audit chain and the
// receiver's `recordings list`.
func TestAnonymisedSession(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the daemon; skipped under -short")
	}
	dir := t.TempDir()
	b := setupBox(t, dir, nil)
	d := writeBoxConfig(t, dir, b.state, "")
	setAnonymiseDefault(t, d, "whole")
	startDaemon(t, d)

	var st struct {
		Active    bool   `json:"active"`
		Anonymise string `json:"anonymise"`
		Recording string `json:"recording"`
	}
	modes := map[string]string{} // recording id -> the mode it was started with
	for _, c := range []struct{ flag, want string }{{"", "whole"}, {"masks", "masks"}, {"off", "off"}} {
		args := []string{"session", "start", "--for", "1h"}
		if c.flag != "" {
			args = append(args, "--anonymise", c.flag)
		}
		ctl(t, d, &st, args...)
		if !st.Active || st.Anonymise != c.want {
			t.Errorf("session start %v: %+v, want anonymise %s", args, st, c.want)
		}
		modes[st.Recording] = c.want
		ctl(t, d, &st, "session", "status")
		if st.Anonymise != c.want {
			t.Errorf("session status after %v: anonymise %q, want %s", args, st.Anonymise, c.want)
		}
		ctl(t, d, nil, "session", "stop")
	}
	// The receiver lists each recording with the mode its signed segment
	// headers name.
	waitDrained(t, d, 60*time.Second)
	var rs []struct {
		ID        string `json:"id"`
		Anonymise string `json:"anonymise"`
	}
	out := run(t, "uploadbox-receiver", "recordings", "list", "--data", b.rcv.data, "--json")
	if err := json.Unmarshal([]byte(out), &rs); err != nil || len(rs) != len(modes) {
		t.Fatalf("recordings list --json: %v, want %d recordings:\n%s", err, len(modes), out)
	}
	human := run(t, "uploadbox-receiver", "recordings", "list", "--data", b.rcv.data)
	for _, r := range rs {
		if r.Anonymise != modes[r.ID] {
			t.Errorf("recordings list --json: %s anonymise %q, want %q", r.ID, r.Anonymise, modes[r.ID])
		}
		if !regexp.MustCompile(`(?m)^` + r.ID + `\s.*\s` + modes[r.ID] + `$`).MatchString(human) {
			t.Errorf("recordings list: no row for %s ending in ANONYMISE %s:\n%s", r.ID, modes[r.ID], human)
		}
	}
	if msg := runFails(t, "uploadbox", "session", "start", "--anonymise", "blur", "--socket", d.socket); !strings.Contains(msg, `anonymise "blur"`) {
		t.Errorf("a bad --anonymise: %s", msg)
	}

	var starts []string
	for _, e := range readAudit(t, d.audit) {
		if e.Event == "session.start" && e.Outcome == "ok" {
			starts = append(starts, e.Detail)
		}
	}
	if len(starts) != 3 {
		t.Fatalf("%d session.start entries, want 3: %q", len(starts), starts)
	}
	for i, want := range []string{"anonymise=whole", "anonymise=masks", "anonymise=off"} {
		if !strings.HasSuffix(starts[i], " "+want) {
			t.Errorf("session.start %d: detail %q, want it to end in %s", i, starts[i], want)
		}
	}
}
