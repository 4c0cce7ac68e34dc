package segment

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mp4"
	"go.uber.org/goleak"

	"github.com/uploadbox/uploadbox/capture"
	"github.com/uploadbox/uploadbox/capture/segment/segmenttest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// media is 25 s of real openh264 video (15 fps, an IDR every 2 s) and
// libopus audio (20 ms packets), made once for all tests.
var media = sync.OnceValues(func() ([]capture.Frame, error) {
	return segmenttest.Frames(segmenttest.Options{Duration: 25 * time.Second, Audio: true})
})

func frames(t *testing.T, audio bool) []capture.Frame {
	t.Helper()
	all, err := media()
	if errors.Is(err, segmenttest.ErrNoEncoder) {
		t.Fatalf("these tests need the cgo encoders (build with CGO_ENABLED=1 and gcc): %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if audio {
		return all
	}
	var v []capture.Frame
	for _, f := range all {
		if f.Kind == capture.Video {
			v = append(v, f)
		}
	}
	return v
}

// memOutput records what the segmenter does with one segment.
type memOutput struct {
	seq      uint64
	start    time.Duration
	buf      bytes.Buffer
	flushes  int
	flushed  []int // buffer length at each flush
	closed   int
	last     bool
	writeErr error // returned by Write once set
}

func (m *memOutput) Write(p []byte) (int, error) {
	if m.closed > 0 {
		return 0, errors.New("write after close")
	}
	if m.writeErr != nil {
		return 0, m.writeErr
	}
	return m.buf.Write(p)
}

func (m *memOutput) Flush() error {
	m.flushes++
	m.flushed = append(m.flushed, m.buf.Len())
	return nil
}

func (m *memOutput) Close(last bool) error {
	m.closed++
	m.last = last
	return nil
}

// recorder collects the segments of one run.
type recorder struct{ outs []*memOutput }

func (r *recorder) open(seq uint64, start time.Duration) (Output, error) {
	m := &memOutput{seq: seq, start: start}
	r.outs = append(r.outs, m)
	return m, nil
}

func run(t *testing.T, cfg Config, in []capture.Frame) []*memOutput {
	t.Helper()
	var r recorder
	s := New(cfg, r.open)
	for _, f := range in {
		if err := s.Write(f); err != nil {
			t.Fatalf("write %s frame at %v: %v", f.Kind, f.Time, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return r.outs
}

type parsed struct {
	init  fmp4.Init
	parts fmp4.Parts
}

func parse(t *testing.T, b []byte) parsed {
	t.Helper()
	var p parsed
	if err := p.init.Unmarshal(bytes.NewReader(b)); err != nil {
		t.Fatalf("init: %v", err)
	}
	if err := p.parts.Unmarshal(b); err != nil {
		t.Fatalf("parts: %v", err)
	}
	return p
}

// freeBytes sums the sizes of the top-level free boxes in b.
func freeBytes(t *testing.T, b []byte) int {
	t.Helper()
	n := 0
	for len(b) > 0 {
		if len(b) < 8 {
			t.Fatalf("%d bytes after the last box", len(b))
		}
		size := int(binary.BigEndian.Uint32(b))
		if size < 8 || size > len(b) {
			t.Fatalf("box %q of %d bytes in %d", b[4:8], size, len(b))
		}
		if string(b[4:8]) == "free" {
			n += size
		}
		b = b[size:]
	}
	return n
}

// span is where a track's samples sit on the timeline of one segment.
type span struct {
	first, end uint64
	samples    int
}

func spans(t *testing.T, p parsed) map[int]span {
	t.Helper()
	out := map[int]span{}
	for _, part := range p.parts {
		for _, tr := range part.Tracks {
			sp, ok := out[tr.ID]
			if !ok {
				sp.first, sp.end = tr.BaseTime, tr.BaseTime
			}
			if tr.BaseTime != sp.end {
				t.Errorf("track %d: fragment %d starts at %d, previous ended at %d", tr.ID, part.SequenceNumber, tr.BaseTime, sp.end)
			}
			sp.end = tr.BaseTime + sum(tr.Samples)
			sp.samples += len(tr.Samples)
			out[tr.ID] = sp
		}
	}
	return out
}

func sum(s []*fmp4.Sample) uint64 {
	var n uint64
	for _, x := range s {
		n += uint64(x.Duration)
	}
	return n
}

func TestSegments(t *testing.T) {
	in := frames(t, true)
	var nVideo, nAudio int
	for _, f := range in {
		if f.Kind == capture.Video {
			nVideo++
		} else {
			nAudio++
		}
	}
	tests := []struct {
		name     string
		cfg      Config
		audio    bool
		starts   []time.Duration // expected segment starts (IDRs every 2 s)
		fragment time.Duration
	}{
		{"defaults with audio", Config{Audio: true}, true, []time.Duration{0, 10 * time.Second, 20 * time.Second}, DefaultFragmentLength},
		{"video only", Config{}, false, []time.Duration{0, 10 * time.Second, 20 * time.Second}, DefaultFragmentLength},
		{"aligned to sealing chunks", Config{Audio: true, Align: 16384}, true, []time.Duration{0, 10 * time.Second, 20 * time.Second}, DefaultFragmentLength},
		{"one-second fragments, odd alignment", Config{FragmentLength: time.Second, Align: 1000}, false, []time.Duration{0, 10 * time.Second, 20 * time.Second}, time.Second},
		{"short segments", Config{SegmentLength: 3 * time.Second, FragmentLength: 500 * time.Millisecond, Audio: true, AudioChannels: 1}, true,
			[]time.Duration{0, 4 * time.Second, 8 * time.Second, 12 * time.Second, 16 * time.Second, 20 * time.Second, 24 * time.Second}, 500 * time.Millisecond},
		{"one segment", Config{SegmentLength: time.Hour, Audio: true}, true, []time.Duration{0}, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			outs := run(t, tt.cfg, frames(t, tt.audio))
			if len(outs) != len(tt.starts) {
				t.Fatalf("%d segments, want %d", len(outs), len(tt.starts))
			}
			wantTracks := 1
			if tt.audio {
				wantTracks = 2
			}
			end := map[int]uint64{}
			samples := map[int]int{}
			var lastSeq uint32
			for i, o := range outs {
				if o.seq != uint64(i) || o.start != tt.starts[i] {
					t.Errorf("segment %d opened as %d at %v, want %v", i, o.seq, o.start, tt.starts[i])
				}
				if o.closed != 1 || o.last != (i == len(outs)-1) {
					t.Errorf("segment %d: closed %d times, last=%v", i, o.closed, o.last)
				}
				p := parse(t, o.buf.Bytes())
				if len(p.init.Tracks) != wantTracks {
					t.Fatalf("segment %d: %d tracks in init", i, len(p.init.Tracks))
				}
				if v := p.init.Tracks[0]; v.ID != VideoTrackID || v.TimeScale != VideoTimescale {
					t.Errorf("segment %d: video track %d at %d", i, v.ID, v.TimeScale)
				} else if c, ok := v.Codec.(*mp4.CodecH264); !ok || len(c.SPS) == 0 || len(c.PPS) == 0 {
					t.Errorf("segment %d: video codec %#v", i, v.Codec)
				}
				if tt.audio {
					a := p.init.Tracks[1]
					if c, ok := a.Codec.(*mp4.CodecOpus); !ok || c.ChannelCount != 1 || a.TimeScale != AudioTimescale {
						t.Errorf("segment %d: audio %#v at %d", i, a.Codec, a.TimeScale)
					}
				}
				// One flush per fragment, right after its bytes; nothing after the last.
				if o.flushes != len(p.parts) || o.flushed[len(o.flushed)-1] != o.buf.Len() {
					t.Errorf("segment %d: %d flushes for %d fragments", i, o.flushes, len(p.parts))
				}
				// Aligned: at every flush the segment is a multiple of
				// Align, its padding a free box.
				if a := tt.cfg.Align; a > 0 {
					for j, n := range o.flushed {
						if n%a != 0 {
							t.Errorf("segment %d: flush %d at %d bytes, not a multiple of %d", i, j, n, a)
						}
					}
					if free := freeBytes(t, o.buf.Bytes()); free < 8*o.flushes || free > (a+7)*o.flushes {
						t.Errorf("segment %d: %d bytes of free boxes for %d fragments", i, free, o.flushes)
					}
				} else if free := freeBytes(t, o.buf.Bytes()); free != 0 {
					t.Errorf("segment %d: %d bytes of padding, none asked for", i, free)
				}
				for j, part := range p.parts {
					if part.SequenceNumber != lastSeq+1 {
						t.Errorf("segment %d fragment %d: sequence %d after %d", i, j, part.SequenceNumber, lastSeq)
					}
					lastSeq = part.SequenceNumber
					for _, tr := range part.Tracks {
						d := time.Duration(sum(tr.Samples)) * time.Second / time.Duration(map[int]int{1: VideoTimescale, 2: AudioTimescale}[tr.ID])
						if j < len(p.parts)-1 && d > tt.fragment+70*time.Millisecond {
							t.Errorf("segment %d fragment %d: track %d holds %v", i, j, tr.ID, d)
						}
					}
				}
				v := p.parts[0].Tracks[0]
				if v.ID != VideoTrackID || v.Samples[0].IsNonSyncSample {
					t.Errorf("segment %d does not start with a video sync sample", i)
				}
				if got := v.BaseTime; got != uint64(ticks(tt.starts[i], VideoTimescale)) {
					t.Errorf("segment %d: video starts at %d", i, got)
				}
				// Continuous across segments: each track picks up where it ended.
				for id, sp := range spans(t, p) {
					if prev, ok := end[id]; ok && sp.first != prev {
						t.Errorf("track %d: segment %d starts at %d, segment %d ended at %d", id, i, sp.first, i-1, prev)
					}
					end[id] = sp.end
					samples[id] += sp.samples
				}
			}
			// Durations add up to what was recorded.
			if samples[VideoTrackID] != nVideo || end[VideoTrackID] != 25*VideoTimescale {
				t.Errorf("video: %d samples ending at %d, want %d ending at %d", samples[VideoTrackID], end[VideoTrackID], nVideo, 25*VideoTimescale)
			}
			if tt.audio && (samples[AudioTrackID] != nAudio || end[AudioTrackID] != uint64(nAudio*960)) {
				t.Errorf("audio: %d samples ending at %d, want %d ending at %d", samples[AudioTrackID], end[AudioTrackID], nAudio, nAudio*960)
			}
		})
	}
}

// The recording starts at the first IDR: earlier video and audio are
// dropped, and that IDR is time zero.
func TestStartsAtFirstIDR(t *testing.T) {
	in := frames(t, true)
	skip := 3*time.Second + 500*time.Millisecond // mid-GOP; next IDR at 4 s
	var late []capture.Frame
	for _, f := range in {
		if f.Time >= skip {
			late = append(late, f)
		}
	}
	outs := run(t, Config{Audio: true}, late)
	if len(outs) != 3 || outs[0].start != 4*time.Second || outs[1].start != 14*time.Second || outs[2].start != 24*time.Second {
		t.Fatalf("got %d segments", len(outs))
	}
	p := parse(t, outs[0].buf.Bytes())
	sp := spans(t, p)
	if sp[VideoTrackID].first != 0 || sp[AudioTrackID].first != 0 {
		t.Errorf("first segment starts at video %d, audio %d; want 0", sp[VideoTrackID].first, sp[AudioTrackID].first)
	}
	if sp[VideoTrackID].end != 10*VideoTimescale {
		t.Errorf("first segment ends at %d", sp[VideoTrackID].end)
	}
}

func TestNoIDRNoSegment(t *testing.T) {
	var r recorder
	s := New(Config{Audio: true}, r.open)
	for _, f := range frames(t, true) {
		if f.Kind == capture.Video && f.Key {
			continue
		}
		if err := s.Write(f); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil || len(r.outs) != 0 {
		t.Fatalf("close: %v, %d segments", err, len(r.outs))
	}
}

// Lost audio packets and a fast microphone clock stay in sync with the
// capture clock: the track follows capture time within audioResync.
func TestAudioFollowsCaptureClock(t *testing.T) {
	in := frames(t, true)
	var out []capture.Frame
	for _, f := range in {
		if f.Kind == capture.Audio {
			if f.Time >= 5*time.Second && f.Time < 5500*time.Millisecond {
				continue // a 500 ms hole
			}
			if f.Time >= 15*time.Second {
				// The microphone runs 0.5% slow: later packets are captured later.
				f.Time += (f.Time - 15*time.Second) / 200
			}
		}
		out = append(out, f)
	}
	outs := run(t, Config{Audio: true, SegmentLength: time.Hour}, out)
	p := parse(t, outs[0].buf.Bytes())
	// Walk the audio samples and compare each one's decode time with the
	// capture time of the packet it came from.
	var audioTimes []time.Duration
	for _, f := range out {
		if f.Kind == capture.Audio {
			audioTimes = append(audioTimes, f.Time)
		}
	}
	i := 0
	for _, part := range p.parts {
		for _, tr := range part.Tracks {
			if tr.ID != AudioTrackID {
				continue
			}
			pos := tr.BaseTime
			for _, s := range tr.Samples {
				at := time.Duration(pos) * time.Second / AudioTimescale
				if d := at - audioTimes[i]; d > audioResync+20*time.Millisecond || d < -audioResync-20*time.Millisecond {
					t.Fatalf("audio packet %d captured at %v plays at %v", i, audioTimes[i], at)
				}
				pos += uint64(s.Duration)
				i++
			}
		}
	}
	if i != len(audioTimes) {
		t.Fatalf("%d audio samples, want %d", i, len(audioTimes))
	}
}

// failingOutput fails Write after a number of successful writes.
type failingOutput struct {
	memOutput
	okWrites int
}

func (f *failingOutput) Write(p []byte) (int, error) {
	if f.okWrites == 0 {
		return 0, errDisk
	}
	f.okWrites--
	return f.memOutput.Write(p)
}

var errDisk = errors.New("no space left on device")

func TestErrorsAreSticky(t *testing.T) {
	in := frames(t, true)
	t.Run("write fails", func(t *testing.T) {
		var outs []*failingOutput
		s := New(Config{Audio: true}, func(seq uint64, start time.Duration) (Output, error) {
			o := &failingOutput{okWrites: 3}
			outs = append(outs, o)
			return o, nil
		})
		var first error
		n := 0
		for _, f := range in {
			if err := s.Write(f); err != nil {
				first = err
				break
			}
			n++
		}
		if !errors.Is(first, errDisk) {
			t.Fatalf("write error %v", first)
		}
		if err := s.Write(in[n+1]); err != first {
			t.Errorf("next write: %v, want the first error again", err)
		}
		if err := s.Close(); err != first {
			t.Errorf("close: %v", err)
		}
		if len(outs) != 1 || outs[0].closed != 1 || outs[0].last {
			t.Errorf("output closed %d times, last=%v", outs[0].closed, outs[0].last)
		}
		if err := s.Close(); !errors.Is(err, ErrClosed) {
			t.Errorf("second close: %v", err)
		}
	})
	t.Run("open fails", func(t *testing.T) {
		calls := 0
		s := New(Config{}, func(seq uint64, start time.Duration) (Output, error) {
			calls++
			return nil, errDisk
		})
		var err error
		for _, f := range in {
			if err = s.Write(f); err != nil {
				break
			}
		}
		if !errors.Is(err, errDisk) || s.Write(in[0]) != err || s.Close() != err || calls != 1 {
			t.Fatalf("error %v after %d opens", err, calls)
		}
	})
	t.Run("bad config", func(t *testing.T) {
		s := New(Config{SegmentLength: -1, FragmentLength: -1, Audio: true, AudioChannels: 6, Align: 7}, func(uint64, time.Duration) (Output, error) {
			t.Fatal("opened a segment")
			return nil, nil
		})
		err := s.Write(in[0])
		if err == nil || s.Close() != err {
			t.Fatalf("error %v", err)
		}
		for _, want := range []string{"segment length", "fragment length", "audio channels 6", "alignment 7"} {
			if !bytes.Contains([]byte(err.Error()), []byte(want)) {
				t.Errorf("error %q does not mention %q", err, want)
			}
		}
	})
	t.Run("write after close", func(t *testing.T) {
		var r recorder
		s := New(Config{}, r.open)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := s.Write(in[0]); !errors.Is(err, ErrClosed) {
			t.Fatalf("write after close: %v", err)
		}
	})
}

// A malformed frame is rejected without stopping the recording.
func TestBadFramesAreSkipped(t *testing.T) {
	in := frames(t, true)
	var r recorder
	s := New(Config{Audio: true}, r.open)
	bad := []capture.Frame{
		{Kind: capture.Video, Data: []byte("not annex-b"), Time: time.Second},
		{Kind: capture.Video, Data: nil, Time: time.Second},
		{Kind: capture.Audio, Data: nil, Time: time.Second},
		{Kind: 9, Data: []byte{1}},
	}
	for i, f := range in {
		if i == 40 {
			for _, b := range bad {
				if err := s.Write(b); !errors.Is(err, ErrFrame) {
					t.Errorf("bad %s frame: %v", b.Kind, err)
				}
			}
		}
		if err := s.Write(f); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil || len(r.outs) != 3 {
		t.Fatalf("close: %v with %d segments", err, len(r.outs))
	}
}

func TestTicks(t *testing.T) {
	tests := []struct {
		d     time.Duration
		scale int64
		want  int64
	}{
		{0, 90000, 0},
		{time.Second / 15, 90000, 6000}, // 66.666666 ms rounds to the frame
		{20 * time.Millisecond, 48000, 960},
		{72 * time.Hour, 90000, 72 * 3600 * 90000},
		{1500 * time.Microsecond, 1000, 2},
	}
	for _, tt := range tests {
		if got := ticks(tt.d, tt.scale); got != tt.want {
			t.Errorf("ticks(%v, %d) = %d, want %d", tt.d, tt.scale, got, tt.want)
		}
	}
}

// ffprobe, a real peer, reads a written segment.
func TestFFprobe(t *testing.T) {
	ffprobe := ffprobePath(t)
	outs := run(t, Config{Audio: true}, frames(t, true))
	dir := t.TempDir()
	for i, want := range []struct{ start, end float64 }{{0, 10}, {10, 20}} {
		path := filepath.Join(dir, fmt.Sprintf("seg%d.mp4", i))
		if err := os.WriteFile(path, outs[i].buf.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(ffprobe, "-v", "error", "-show_streams", "-show_format", "-of", "json", path).Output()
		if err != nil {
			t.Fatalf("ffprobe %s: %v", path, err)
		}
		var probe struct {
			Streams []struct {
				CodecName string `json:"codec_name"`
				StartTime string `json:"start_time"`
				Duration  string `json:"duration"`
				Channels  int    `json:"channels"`
				Width     int    `json:"width"`
			} `json:"streams"`
			Format struct {
				FormatName string `json:"format_name"`
			} `json:"format"`
		}
		if err := json.Unmarshal(out, &probe); err != nil {
			t.Fatal(err)
		}
		if len(probe.Streams) != 2 || probe.Streams[0].CodecName != "h264" || probe.Streams[1].CodecName != "opus" ||
			probe.Streams[0].Width != 160 || probe.Streams[1].Channels != 1 {
			t.Fatalf("segment %d: streams %+v", i, probe.Streams)
		}
		// ffmpeg reports a fragmented file's stream duration as its end
		// time on the recording's timeline.
		for _, s := range probe.Streams {
			start, _ := strconv.ParseFloat(s.StartTime, 64)
			end, _ := strconv.ParseFloat(s.Duration, 64)
			if start < want.start-0.05 || start > want.start+0.01 || end < want.end-0.05 || end > want.end+0.01 {
				t.Errorf("segment %d %s: start %s end %s, want %v to %v", i, s.CodecName, s.StartTime, s.Duration, want.start, want.end)
			}
		}
	}
}

func ffprobePath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("ffprobe")
	if err != nil {
		t.Fatal("ffprobe is required (make test installs it through scripts/setup.sh; or apt-get install ffmpeg)")
	}
	return p
}
