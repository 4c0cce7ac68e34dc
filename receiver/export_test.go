package receiver

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"go.uber.org/goleak"

	"github.com/uploadbox/uploadbox/capture"
	"github.com/uploadbox/uploadbox/capture/segment"
	"github.com/uploadbox/uploadbox/capture/segment/segmenttest"
	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/receiver/internal/kvtest"
)

// tusd keeps a delayed-cancel goroutine per request for its graceful
// completion timeout; the receiver sets it short, but it may outlive a test.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(kvtest.Wrap(m), goleak.IgnoreTopFunction("github.com/tus/tusd/v2/pkg/handler.newDelayedContext.func1"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))
}

const recorded = 25 * time.Second

// media is 25 s of real openh264 video (15 fps, an IDR every 2 s) and
// libopus audio, made once: segments of 10 s are cut at 0, 10 and 20 s.
var media = sync.OnceValues(func() ([]capture.Frame, error) {
	return segmenttest.Frames(segmenttest.Options{Duration: recorded, Audio: true})
})

// keys are the organisation identity and the device key of a test.
type keys struct {
	org    *crypto.Identity
	device *crypto.DeviceKey
}

func newKeys(t *testing.T) keys {
	t.Helper()
	org, err := crypto.GenerateIdentity(crypto.SuiteX25519)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := crypto.GenerateDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	return keys{org, dev}
}

// sealedOutput is a recorder in miniature: the segmenter's output goes
// through the sealing writer into a file.
type sealedOutput struct {
	f *os.File
	w *crypto.Writer
	r *recording
}

func (o *sealedOutput) Write(p []byte) (int, error) { return o.w.Write(p) }
func (o *sealedOutput) Flush() error                { return o.w.Flush() }
func (o *sealedOutput) Close(last bool) error {
	if last {
		o.w.SetLast()
	}
	err := errors.Join(o.w.Close(), o.f.Close())
	o.r.prev = o.w.Commitment()
	return err
}

type recording struct {
	id    [16]byte
	dir   string
	name  string
	paths []string
	prev  [crypto.CommitmentSize]byte
}

// record seals the test media as a recording with the given id into dir,
// one file per segment named NAME-SEQ.ubx, its fragments padded to chunk
// boundaries with free boxes as the recorder pads them.
func record(t *testing.T, k keys, id [16]byte, dir, name string) *recording {
	t.Helper()
	frames, err := media()
	if errors.Is(err, segmenttest.ErrNoEncoder) {
		t.Fatalf("these tests need the cgo encoders (build with CGO_ENABLED=1 and gcc): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	r := &recording{id: id, dir: dir, name: name}
	seg := segment.New(segment.Config{Audio: true, Align: crypto.ChunkSize}, func(seq uint64, start time.Duration) (segment.Output, error) {
		path := filepath.Join(dir, fmt.Sprintf("%s-%d.ubx", name, seq))
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, err
		}
		w, err := crypto.NewWriter(f, []*crypto.Recipient{k.org.Recipient()}, k.device, crypto.Params{
			RecordingID: id, Sequence: seq, Prev: r.prev, Codec: "video/mp4",
			Start: time.Unix(1_700_000_000, 0).Add(start),
		})
		if err != nil {
			f.Close()
			return nil, err
		}
		r.paths = append(r.paths, path)
		return &sealedOutput{f: f, w: w, r: r}, nil
	})
	for _, f := range frames {
		if err := seg.Write(f); err != nil {
			t.Fatal(err)
		}
	}
	if err := seg.Close(); err != nil {
		t.Fatal(err)
	}
	if len(r.paths) != 3 {
		t.Fatalf("%d segments, want 3", len(r.paths))
	}
	return r
}

func newID(t *testing.T) [16]byte {
	var id [16]byte
	rand.Read(id[:])
	return id
}

// fixture is one recording, sealed once per test.
func fixture(t *testing.T) (keys, *recording) {
	t.Helper()
	k := newKeys(t)
	return k, record(t, k, newID(t), t.TempDir(), "rec")
}

func export(t *testing.T, k keys, segs ...string) (string, *ExportReport, error) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "rec.mp4")
	rep, err := Export(t.Context(), out, []*crypto.Identity{k.org}, segs, ExportOptions{})
	return out, rep, err
}

// noOutput checks that a failed export left nothing behind.
func noOutput(t *testing.T, out string) {
	t.Helper()
	ents, err := os.ReadDir(filepath.Dir(out))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("failed export left %s behind", e.Name())
	}
}

// checkMP4 parses the exported file and checks its fragments: numbered
// from 1, each track continuous from time zero. It returns each track's
// end in seconds.
func checkMP4(t *testing.T, path string) map[int]float64 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var init fmp4.Init
	if err := init.Unmarshal(bytes.NewReader(b)); err != nil {
		t.Fatalf("init: %v", err)
	}
	var parts fmp4.Parts
	if err := parts.Unmarshal(b); err != nil {
		t.Fatalf("fragments: %v", err)
	}
	scale := map[int]uint32{}
	for _, tr := range init.Tracks {
		scale[tr.ID] = tr.TimeScale
	}
	next := map[int]uint64{}
	for i, p := range parts {
		if p.SequenceNumber != uint32(i+1) {
			t.Fatalf("fragment %d has sequence number %d", i, p.SequenceNumber)
		}
		for _, tr := range p.Tracks {
			if tr.BaseTime != next[tr.ID] {
				t.Fatalf("fragment %d: track %d starts at %d, want %d", i, tr.ID, tr.BaseTime, next[tr.ID])
			}
			for _, s := range tr.Samples {
				next[tr.ID] += uint64(s.Duration)
			}
		}
	}
	ends := map[int]float64{}
	for id, n := range next {
		ends[id] = float64(n) / float64(scale[id])
	}
	return ends
}

func TestExport(t *testing.T) {
	k, rec := fixture(t)
	var calls [][2]int64
	out := filepath.Join(t.TempDir(), "rec.mp4")
	rep, err := Export(t.Context(), out, []*crypto.Identity{k.org}, rec.paths, ExportOptions{
		Progress: func(done, total int64) { calls = append(calls, [2]int64{done, total}) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Warnings) != 0 {
		t.Errorf("warnings: %q", rep.Warnings)
	}
	if len(rep.Segments) != 3 || rep.RecordingID != rec.id {
		t.Fatalf("report %+v", rep)
	}
	for i, s := range rep.Segments {
		if s.Sequence != uint64(i) || s.Path != rec.paths[i] || s.Outcome != crypto.OK || s.Last != (i == 2) || s.Fragments == 0 || s.Bytes == 0 || len(s.Warnings) != 0 {
			t.Errorf("segment %d: %+v", i, s)
		}
	}
	if d := rep.Duration - recorded; d < -time.Millisecond || d > 10*time.Millisecond {
		t.Errorf("duration %v, recorded %v", rep.Duration, recorded)
	}
	st, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 || st.Size() != rep.Bytes {
		t.Errorf("output mode %v size %d, report says %d bytes", st.Mode(), st.Size(), rep.Bytes)
	}
	ends := checkMP4(t, out)
	if math.Abs(ends[segment.VideoTrackID]-25) > 0.001 || math.Abs(ends[segment.AudioTrackID]-25) > 0.001 {
		t.Errorf("track ends %v", ends)
	}
	var total int64
	for _, p := range rec.paths {
		st, _ := os.Stat(p)
		total += st.Size()
	}
	if len(calls) < 4 || calls[0][0] != 0 || calls[len(calls)-1] != [2]int64{total, total} {
		t.Errorf("progress calls %v, total %d", calls, total)
	}
	for i := 1; i < len(calls); i++ {
		if calls[i][0] < calls[i-1][0] || calls[i][1] != total {
			t.Errorf("progress goes from %v to %v", calls[i-1], calls[i])
		}
	}
	probe(t, out, recorded)
}

func TestExportTruncated(t *testing.T) {
	k, rec := fixture(t)
	// A power cut: the last segment loses its end (and its trailer).
	last := rec.paths[2]
	b, err := os.ReadFile(last)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(last, b[:len(b)*2/3], 0o600); err != nil {
		t.Fatal(err)
	}
	out, rep, err := export(t, k, rec.paths...)
	if err != nil {
		t.Fatal(err)
	}
	s := rep.Segments[2]
	if s.Outcome != crypto.Truncated || s.Last || s.Fragments == 0 || len(s.Warnings) != 1 || !strings.Contains(s.Warnings[0], "TRUNCATED") {
		t.Fatalf("truncated segment: %+v", s)
	}
	if len(rep.Warnings) != 1 || !hasWarning(rep, "segment 2, the final one given, is not marked as the last") {
		t.Errorf("warnings: %q", rep.Warnings)
	}
	// Segments 0 and 1 and whole fragments of segment 2: 20 s and more.
	if rep.Duration < 20*time.Second || rep.Duration >= 24*time.Second {
		t.Errorf("duration %v", rep.Duration)
	}
	ends := checkMP4(t, out)
	if d := ends[segment.VideoTrackID] - rep.Duration.Seconds(); d > 0.001 || d < -0.1 {
		t.Errorf("video ends at %v, report says %v", ends[segment.VideoTrackID], rep.Duration)
	}
	probe(t, out, rep.Duration)
}

// A truncated segment in the middle leaves a hole: the next segment
// reports the gap, and the timeline keeps the hole rather than closing it,
// so audio and video stay in sync with the recording's clock.
func TestExportTruncatedMiddle(t *testing.T) {
	k, rec := fixture(t)
	b, err := os.ReadFile(rec.paths[1])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(rec.paths[1], b[:len(b)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	out, rep, err := export(t, k, rec.paths...)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Warnings) != 0 || rep.Segments[1].Outcome != crypto.Truncated || !rep.Segments[2].Last {
		t.Fatalf("report %+v", rep)
	}
	gaps := rep.Segments[2].Warnings
	if len(gaps) != 2 || !strings.HasPrefix(gaps[0], "video: a gap of ") || !strings.HasPrefix(gaps[1], "audio: a gap of ") {
		t.Fatalf("segment 2 warnings %q", gaps)
	}
	if rep.Duration != recorded {
		t.Errorf("duration %v", rep.Duration)
	}
	ends := checkMP4Gaps(t, out)
	if ends != 2 {
		t.Errorf("%d tracks jump, want 2", ends)
	}
}

// checkMP4Gaps counts the tracks whose timeline jumps in the file.
func checkMP4Gaps(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var parts fmp4.Parts
	if err := parts.Unmarshal(b); err != nil {
		t.Fatal(err)
	}
	next := map[int]uint64{}
	jumped := map[int]bool{}
	for _, p := range parts {
		for _, tr := range p.Tracks {
			if n, ok := next[tr.ID]; ok && n != tr.BaseTime {
				jumped[tr.ID] = true
			}
			next[tr.ID] = tr.BaseTime
			for _, s := range tr.Samples {
				next[tr.ID] += uint64(s.Duration)
			}
		}
	}
	return len(jumped)
}

// A segment cut inside its header holds no media and no chain link: it is
// skipped with a warning.
func TestExportCutInHeader(t *testing.T) {
	k, rec := fixture(t)
	b, err := os.ReadFile(rec.paths[2])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(rec.paths[2], b[:40], 0o600); err != nil {
		t.Fatal(err)
	}
	_, rep, err := export(t, k, rec.paths...)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Segments) != 2 || !hasWarning(rep, rec.paths[2]+": skipped") || !hasWarning(rep, "segment 1, the final one given, is not marked") {
		t.Fatalf("segments %d, warnings %q", len(rep.Segments), rep.Warnings)
	}
}

func hasWarning(rep *ExportReport, prefix string) bool {
	return slices.ContainsFunc(rep.Warnings, func(w string) bool { return strings.HasPrefix(w, prefix) })
}

func TestExportOrder(t *testing.T) {
	k, rec := fixture(t)
	p := rec.paths
	ref, _, err := export(t, k, p...)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(ref)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		args     []string
		warnings []string
	}{
		{"reordered", []string{p[2], p[0], p[1]}, []string{"segments were given out of order (as 2, 0, 1); exporting them in sequence order 0-2"}},
		{"duplicate", []string{p[0], p[1], p[1], p[2]}, []string{fmt.Sprintf("segment 1 was given twice (%s and %s, the same segment)", p[1], p[1])}},
		{"duplicate copy", []string{p[0], p[1], copyFile(t, p[1]), p[2]}, []string{"segment 1 was given twice"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, rep, err := export(t, k, tt.args...)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Warnings) != len(tt.warnings) {
				t.Fatalf("warnings %q, want %q", rep.Warnings, tt.warnings)
			}
			for i, w := range tt.warnings {
				if !strings.HasPrefix(rep.Warnings[i], w) {
					t.Errorf("warning %q, want %q", rep.Warnings[i], w)
				}
			}
			got, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("export differs from the one in order")
			}
		})
	}
}

func copyFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cp := filepath.Join(t.TempDir(), "copy.ubx")
	if err := os.WriteFile(cp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return cp
}

func TestExportRefuses(t *testing.T) {
	k, rec := fixture(t)
	p := rec.paths
	// A fork: the same device and recording id, another chain.
	fork := record(t, k, rec.id, t.TempDir(), "fork")
	// Another recording of the same device.
	other := record(t, k, newID(t), t.TempDir(), "other")
	stranger := newKeys(t)

	corrupt := copyFile(t, p[1])
	b, err := os.ReadFile(corrupt)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 1
	if err := os.WriteFile(corrupt, b, 0o600); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		keys keys
		args []string
		is   error
		msg  []string
	}{
		{"missing middle", k, []string{p[0], p[2]}, ErrMissingSegments, []string{"segment 1 of recording", "(have 0, 2)"}},
		{"missing first", k, []string{p[1], p[2]}, ErrMissingSegments, []string{"segment 0 of recording", "(have 1-2)"}},
		{"conflict", k, []string{p[0], p[1], fork.paths[1], p[2]}, ErrConflictingSegments, []string{p[1], fork.paths[1], "both segment 1"}},
		{"broken chain", k, []string{p[0], p[1], fork.paths[2]}, ErrBrokenChain, []string{"segment 2 (" + fork.paths[2] + ") does not link to segment 1 (" + p[1] + ")"}},
		{"other recording", k, []string{p[0], p[1], other.paths[2]}, ErrMixedRecordings, []string{other.paths[2], "export one recording at a time"}},
		{"corrupt", k, []string{p[0], corrupt, p[2]}, crypto.ErrCorrupt, []string{"segment 1 (" + corrupt + ")"}},
		{"not for this key", stranger, p, crypto.ErrNoIdentity, []string{p[0]}},
		{"missing file", k, []string{p[0], p[1] + ".nope"}, os.ErrNotExist, []string{p[1] + ".nope"}},
		{"last flag then more", k, []string{p[0], p[1], p[2], lastThenMore(t, k, rec)}, ErrBrokenChain, []string{"segment 2 (" + p[2] + ") is marked as the last"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, rep, err := export(t, tt.keys, tt.args...)
			if !errors.Is(err, tt.is) || rep != nil {
				t.Fatalf("export: %v, want %v", err, tt.is)
			}
			for _, m := range tt.msg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not mention %q", err, m)
				}
			}
			noOutput(t, out)
		})
	}
}

// lastThenMore seals a segment 3 that links to the recording's last
// segment, as a forger with the device key could.
func lastThenMore(t *testing.T, k keys, rec *recording) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "rec-3.ubx")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := crypto.NewWriter(f, []*crypto.Recipient{k.org.Recipient()}, k.device, crypto.Params{RecordingID: rec.id, Sequence: 3, Prev: rec.prev, Codec: "video/mp4"})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestExportCancelled(t *testing.T) {
	k, rec := fixture(t)
	out := filepath.Join(t.TempDir(), "rec.mp4")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	n := 0
	_, err := Export(ctx, out, []*crypto.Identity{k.org}, rec.paths, ExportOptions{Progress: func(done, total int64) {
		if n++; n == 5 {
			cancel()
		}
	}})
	if err == nil {
		t.Fatal("export went on after cancel")
	}
	noOutput(t, out)
}

func TestRanges(t *testing.T) {
	tests := []struct {
		in   []uint64
		want string
	}{
		{nil, ""},
		{[]uint64{0}, "0"},
		{[]uint64{0, 1, 2}, "0-2"},
		{[]uint64{1, 3, 4, 5, 9}, "1, 3-5, 9"},
	}
	for _, tt := range tests {
		if got := ranges(tt.in); got != tt.want {
			t.Errorf("ranges(%v) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// probe checks the file with ffprobe, a real peer: H.264 and Opus, the
// format duration within 2% of want, the two streams within 100 ms of
// each other, and no timestamp gap anywhere (segment boundaries included).
func probe(t *testing.T, path string, want time.Duration) {
	t.Helper()
	ffprobe, err := exec.LookPath("ffprobe")
	if err != nil {
		t.Fatal("ffprobe is required (make test installs it through scripts/setup.sh; or apt-get install ffmpeg)")
	}
	out, err := exec.Command(ffprobe, "-v", "error", "-show_format", "-show_streams", "-show_packets", "-of", "json", path).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", path, err)
	}
	var p struct {
		Streams []struct {
			CodecName string `json:"codec_name"`
			Duration  string `json:"duration"`
		} `json:"streams"`
		Format struct {
			Duration string `json:"duration"`
		} `json:"format"`
		Packets []struct {
			Stream int   `json:"stream_index"`
			PTS    int64 `json:"pts"`
		} `json:"packets"`
	}
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatal(err)
	}
	if len(p.Streams) != 2 || p.Streams[0].CodecName != "h264" || p.Streams[1].CodecName != "opus" {
		t.Fatalf("streams %+v", p.Streams)
	}
	format, _ := strconv.ParseFloat(p.Format.Duration, 64)
	if math.Abs(format-want.Seconds()) > 0.02*want.Seconds() {
		t.Errorf("ffprobe format duration %v, want %v ± 2%%", format, want.Seconds())
	}
	video, _ := strconv.ParseFloat(p.Streams[0].Duration, 64)
	audio, _ := strconv.ParseFloat(p.Streams[1].Duration, 64)
	if math.Abs(video-audio) > 0.1 {
		t.Errorf("ffprobe stream durations: video %v, audio %v", video, audio)
	}
	// ffprobe gives no packet durations for fragments; a gap shows as a
	// step between packets longer than the stream's usual one.
	pts := map[int][]int64{}
	for _, pk := range p.Packets {
		pts[pk.Stream] = append(pts[pk.Stream], pk.PTS)
	}
	count := map[int]int{}
	for stream, ts := range pts {
		count[stream] = len(ts)
		var steps []int64
		for i := 1; i < len(ts); i++ {
			steps = append(steps, ts[i]-ts[i-1])
		}
		if len(steps) == 0 {
			t.Fatalf("stream %d has %d packets", stream, len(ts))
		}
		usual := slices.Clone(steps)
		slices.Sort(usual)
		median := usual[len(usual)/2]
		for i, s := range steps {
			if s <= 0 || s > median*3/2 {
				t.Errorf("stream %d: packet %d at pts %d follows pts %d: a gap or a step back (usual step %d)", stream, i+1, ts[i+1], ts[i], median)
			}
		}
	}
	// ffmpeg decodes every frame and packet without a complaint.
	if ffmpeg, err := exec.LookPath("ffmpeg"); err == nil {
		cmd := exec.Command(ffmpeg, "-v", "error", "-xerror", "-i", path, "-f", "null", "-")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil || stderr.Len() > 0 {
			t.Errorf("ffmpeg decode: %v: %s", err, stderr.Bytes())
		}
	} else {
		t.Log("ffmpeg not found: the decode check was not run")
	}
	t.Logf("ffprobe: format duration %.3f s; video %.3f s in %d packets, audio %.3f s in %d packets", format, video, count[0], audio, count[1])
}

// TestExportDevice: with ExportOptions.Device, segments of another device
// are refused (crypto.ErrWrongDevice) and nothing is written; the right
// device exports.
func TestExportDevice(t *testing.T) {
	k, rec := fixture(t)
	other := newKeys(t)
	out := filepath.Join(t.TempDir(), "rec.mp4")
	rep, err := Export(t.Context(), out, []*crypto.Identity{k.org}, rec.paths, ExportOptions{Device: other.device.Public()})
	if !errors.Is(err, crypto.ErrWrongDevice) || rep != nil {
		t.Fatalf("export with another device: %v, want crypto.ErrWrongDevice", err)
	}
	if !strings.Contains(err.Error(), rec.paths[0]) || !strings.Contains(err.Error(), "signed by another device than "+other.device.Public().String()) {
		t.Errorf("the error does not name the segment and the device: %v", err)
	}
	noOutput(t, out)
	if _, err := Export(t.Context(), out, []*crypto.Identity{k.org}, rec.paths, ExportOptions{Device: k.device.Public()}); err != nil {
		t.Fatalf("export with the right device: %v", err)
	}
}
