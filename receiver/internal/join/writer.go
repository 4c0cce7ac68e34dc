package join

import (
	"bytes"
	"fmt"
	"io"
	"time"

	amp4 "github.com/abema/go-mp4"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4/seekablebuffer"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mp4"
)

// Discontinuity is a jump in a track's timeline between two fragments:
// positive for a gap (media missing), negative for an overlap.
type Discontinuity struct {
	TrackID int
	Kind    string // "video" or "audio"
	Delta   time.Duration
}

type trackState struct {
	kind    string
	scale   uint32
	offset  uint64 // subtracted from every decode time
	started bool
	next    uint64 // decode time after the last written sample, unrebased
}

// Writer writes one fragmented MP4: the first segment's init, then every
// fragment given to it, renumbered from 1 and rebased so the file starts
// at time zero.
type Writer struct {
	w        io.Writer
	init     fmp4.Init
	initRaw  []byte
	initSize int
	tracks   map[int]*trackState
	seq      uint32
	start    time.Duration // earliest decode time of the first fragment
	started  bool
	buf      seekablebuffer.Buffer
	n        int64
}

// NewWriter parses init (ftyp+moov) and writes it to w with room for the
// durations that Init fills in at the end.
func NewWriter(w io.Writer, init []byte) (*Writer, error) {
	jw := &Writer{w: w, initRaw: bytes.Clone(init), tracks: map[int]*trackState{}}
	if err := jw.init.Unmarshal(bytes.NewReader(init)); err != nil {
		return nil, fmt.Errorf("%w: init: %v", ErrFormat, err)
	}
	for _, t := range jw.init.Tracks {
		kind := "audio"
		if t.Codec.IsVideo() {
			kind = "video"
		}
		jw.tracks[t.ID] = &trackState{kind: kind, scale: t.TimeScale}
	}
	raw, err := jw.Init()
	if err != nil {
		return nil, err
	}
	jw.initSize = len(raw)
	if err := jw.write(raw); err != nil {
		return nil, err
	}
	return jw, nil
}

func (jw *Writer) write(p []byte) error {
	n, err := jw.w.Write(p)
	jw.n += int64(n)
	return err
}

// Size returns the bytes written so far.
func (jw *Writer) Size() int64 { return jw.n }

// Fragments returns the number of fragments written.
func (jw *Writer) Fragments() int { return int(jw.seq) }

// CheckInit checks that the init of a later segment describes the same
// tracks, so that its fragments can follow. A change of picture size is
// returned as a warning: the in-band parameter sets carry it, but not
// every player follows.
func (jw *Writer) CheckInit(init []byte) (warning string, err error) {
	var other fmp4.Init
	if err := other.Unmarshal(bytes.NewReader(init)); err != nil {
		return "", fmt.Errorf("%w: init: %v", ErrFormat, err)
	}
	if len(other.Tracks) != len(jw.init.Tracks) {
		return "", fmt.Errorf("%w: %d tracks, the first segment has %d", ErrFormat, len(other.Tracks), len(jw.init.Tracks))
	}
	for i, t := range other.Tracks {
		f := jw.init.Tracks[i]
		if t.ID != f.ID || t.TimeScale != f.TimeScale || fmt.Sprintf("%T", t.Codec) != fmt.Sprintf("%T", f.Codec) {
			return "", fmt.Errorf("%w: track %d is %T at %d Hz, the first segment has track %d %T at %d Hz",
				ErrFormat, t.ID, t.Codec, t.TimeScale, f.ID, f.Codec, f.TimeScale)
		}
		switch c := t.Codec.(type) {
		case *mp4.CodecOpus:
			if fc := f.Codec.(*mp4.CodecOpus); c.ChannelCount != fc.ChannelCount {
				return "", fmt.Errorf("%w: %d audio channels, the first segment has %d", ErrFormat, c.ChannelCount, fc.ChannelCount)
			}
		case *mp4.CodecH264:
			w, h := picture(c)
			fw, fh := picture(f.Codec.(*mp4.CodecH264))
			if w != fw || h != fh {
				warning = fmt.Sprintf("picture size changes from %dx%d to %dx%d; some players may not follow", fw, fh, w, h)
			}
		}
	}
	return warning, nil
}

func picture(c *mp4.CodecH264) (int, int) {
	var sps h264.SPS
	if err := sps.Unmarshal(c.SPS); err != nil {
		return 0, 0
	}
	return sps.Width(), sps.Height()
}

// WriteFragment appends one fragment (moof+mdat). It reports where a
// track's timeline jumps relative to the previous fragment.
func (jw *Writer) WriteFragment(frag []byte) ([]Discontinuity, error) {
	var parts fmp4.Parts
	if err := parts.Unmarshal(frag); err != nil {
		return nil, fmt.Errorf("%w: fragment: %v", ErrFormat, err)
	}
	if len(parts) != 1 {
		return nil, fmt.Errorf("%w: %d fragments in one unit", ErrFormat, len(parts))
	}
	part := parts[0]
	for _, t := range part.Tracks {
		if jw.tracks[t.ID] == nil {
			return nil, fmt.Errorf("%w: fragment has track %d, which the init does not declare", ErrFormat, t.ID)
		}
	}
	if !jw.started {
		// The first fragment fixes time zero: its earliest track start.
		jw.started = true
		for i, t := range part.Tracks {
			at := toDuration(t.BaseTime, jw.tracks[t.ID].scale)
			if i == 0 || at < jw.start {
				jw.start = at
			}
		}
	}
	var jumps []Discontinuity
	for _, t := range part.Tracks {
		st := jw.tracks[t.ID]
		if !st.started {
			st.started = true
			st.offset = min(toTicks(jw.start, st.scale), t.BaseTime)
		} else if t.BaseTime != st.next {
			jumps = append(jumps, Discontinuity{
				TrackID: t.ID, Kind: st.kind,
				Delta: toDuration(t.BaseTime, st.scale) - toDuration(st.next, st.scale),
			})
		}
		if t.BaseTime < st.offset {
			return jumps, fmt.Errorf("%w: %s track goes back before the start of the recording", ErrFormat, st.kind)
		}
		end := t.BaseTime
		for _, s := range t.Samples {
			end += uint64(s.Duration)
		}
		st.next = end
		t.BaseTime -= st.offset
	}
	jw.seq++
	part.SequenceNumber = jw.seq
	jw.buf.Reset()
	if err := part.Marshal(&jw.buf); err != nil {
		return jumps, fmt.Errorf("marshal fragment: %w", err)
	}
	return jumps, jw.write(jw.buf.Bytes())
}

// Duration is the length of the joined file: the end of its longest track.
func (jw *Writer) Duration() time.Duration {
	var d time.Duration
	for _, st := range jw.tracks {
		if st.started {
			d = max(d, toDuration(st.next-st.offset, st.scale))
		}
	}
	return d
}

// Init returns the init to put at the start of the file: the first
// segment's, with the movie duration (mvhd) and the fragmented movie's
// duration (mvex/mehd) set to Duration. Its size never changes, so it can
// overwrite the placeholder NewWriter wrote.
func (jw *Writer) Init() ([]byte, error) {
	var out seekablebuffer.Buffer
	w := amp4.NewWriter(&out)
	r := bytes.NewReader(jw.initRaw)
	dur := jw.Duration()
	_, err := amp4.ReadBoxStructure(r, func(h *amp4.ReadHandle) (any, error) {
		switch h.BoxInfo.Type {
		case amp4.BoxTypeMoov(), amp4.BoxTypeMvex():
			if _, err := w.StartBox(&amp4.BoxInfo{Type: h.BoxInfo.Type}); err != nil {
				return nil, err
			}
			if h.BoxInfo.Type == amp4.BoxTypeMvex() {
				if err := writeBox(w, &amp4.Mehd{FullBox: amp4.FullBox{Version: 1}, FragmentDurationV1: toTicks(dur, 1000)}); err != nil {
					return nil, err
				}
			}
			if _, err := h.Expand(); err != nil {
				return nil, err
			}
			_, err := w.EndBox()
			return nil, err
		case amp4.BoxTypeMvhd():
			box, _, err := h.ReadPayload()
			if err != nil {
				return nil, err
			}
			mvhd := box.(*amp4.Mvhd)
			if mvhd.Timescale == 0 {
				return nil, fmt.Errorf("%w: movie timescale is zero", ErrFormat)
			}
			*mvhd = amp4.Mvhd{
				FullBox:     amp4.FullBox{Version: 1},
				Timescale:   mvhd.Timescale,
				DurationV1:  toTicks(dur, mvhd.Timescale),
				Rate:        mvhd.Rate,
				Volume:      mvhd.Volume,
				Matrix:      mvhd.Matrix,
				NextTrackID: mvhd.NextTrackID,
			}
			return nil, writeBox(w, mvhd)
		case amp4.BoxTypeMehd():
			return nil, nil // replaced by ours
		default:
			return nil, w.CopyBox(r, &h.BoxInfo)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("rewrite init: %w", err)
	}
	if jw.initSize != 0 && out.Len() != jw.initSize {
		return nil, fmt.Errorf("rewrite init: size changed from %d to %d bytes", jw.initSize, out.Len())
	}
	return out.Bytes(), nil
}

func writeBox(w *amp4.Writer, box amp4.IBox) error {
	if _, err := w.StartBox(&amp4.BoxInfo{Type: box.GetType()}); err != nil {
		return err
	}
	if _, err := amp4.Marshal(w, box, amp4.Context{}); err != nil {
		return err
	}
	_, err := w.EndBox()
	return err
}

func toDuration(t uint64, scale uint32) time.Duration {
	s := uint64(scale)
	return time.Duration(t/s)*time.Second + time.Duration(t%s)*time.Second/time.Duration(s)
}

func toTicks(d time.Duration, scale uint32) uint64 {
	s := uint64(scale)
	return uint64(d/time.Second)*s + (uint64(d%time.Second)*s+uint64(time.Second)/2)/uint64(time.Second)
}
