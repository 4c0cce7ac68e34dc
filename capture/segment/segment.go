// Package segment cuts the encoded frames of a recording into fragmented
// MP4 (CMAF) segments: H.264 video and, when enabled, Opus audio, in
// fragments of about half a second, segments of a configured length cut at
// keyframes. Every segment is a standalone playable file (its own init,
// then moof+mdat fragments, each optionally padded with a free box), and
// the fragments of consecutive segments share one timeline, so appending
// them gives continuous timestamps.
//
// The package does no I/O of its own: the caller opens an Output per
// segment (in the recorder, a sealing writer on a spool file) and decides
// what a fragment boundary means (flush and fsync).
package segment

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/opus"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4/seekablebuffer"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mp4"

	"github.com/uploadbox/uploadbox/capture"
	"github.com/uploadbox/uploadbox/capture/internal/annexb"
)

// Track IDs and timescales of every segment.
const (
	VideoTrackID   = 1
	AudioTrackID   = 2
	VideoTimescale = 90000
	AudioTimescale = 48000
)

// Defaults for the zero Config fields.
const (
	DefaultSegmentLength = 10 * time.Second
	// DefaultFragmentLength bounds what a power cut loses: the fragment
	// being built is not on disk yet.
	DefaultFragmentLength = 500 * time.Millisecond
)

// freeHeader is the size of a free box with no payload, the least padding
// that can be added.
const freeHeader = 8

// maxAlign keeps a padding box far below the 32-bit box size limit.
const maxAlign = 1 << 20

// audioResync is how far the audio sample count may drift from the
// capture clock (lost packets, a microphone clock that runs fast or slow)
// before a packet's duration is stretched or shortened to re-align it.
const audioResync = 40 * time.Millisecond

// ErrClosed is returned by Write and Close after Close.
var ErrClosed = errors.New("segmenter is closed")

// ErrFrame marks a frame that was rejected and skipped. Unlike output
// errors it is not sticky: the segmenter stays usable.
var ErrFrame = errors.New("invalid frame")

// Config sets the shape of the segments.
type Config struct {
	// SegmentLength is the minimum length of a segment: a segment is cut at
	// the first IDR at or after it. Default 10 s.
	SegmentLength time.Duration
	// FragmentLength is the target length of a fragment, the unit that is
	// flushed (and fsynced by the recorder). Default 500 ms.
	FragmentLength time.Duration
	// Align, if set, pads every fragment with a free box so that the
	// segment's length at every Flush is a multiple of Align. The recorder
	// sets the sealing writer's chunk size: a flush then hands the whole
	// fragment to the file in complete chunks, none of it waits in memory.
	// Each fragment grows by 8 to Align+7 bytes. 0 (none) or 8 to 1 MiB.
	Align int
	// Audio adds an Opus track. When false, audio frames are ignored.
	Audio bool
	// AudioChannels is the Opus channel count, 1 or 2. Default 1.
	AudioChannels int
}

// Validate reports every problem of c at once.
func (c Config) Validate() error {
	var errs []error
	if c.SegmentLength < 0 {
		errs = append(errs, fmt.Errorf("segment length %v is negative", c.SegmentLength))
	}
	if c.FragmentLength < 0 {
		errs = append(errs, fmt.Errorf("fragment length %v is negative", c.FragmentLength))
	}
	if c.SegmentLength > 0 && c.FragmentLength > c.SegmentLength {
		errs = append(errs, fmt.Errorf("fragment length %v is longer than the segment length %v", c.FragmentLength, c.SegmentLength))
	}
	if c.Align < 0 || (c.Align > 0 && c.Align < freeHeader) || c.Align > maxAlign {
		errs = append(errs, fmt.Errorf("alignment %d: want 0 (none) or %d (an empty free box) to %d", c.Align, freeHeader, maxAlign))
	}
	if c.Audio && (c.AudioChannels < 0 || c.AudioChannels > 2) {
		errs = append(errs, fmt.Errorf("audio channels %d: Opus in MP4 takes 1 or 2", c.AudioChannels))
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	if c.SegmentLength == 0 {
		c.SegmentLength = DefaultSegmentLength
	}
	if c.FragmentLength == 0 {
		c.FragmentLength = DefaultFragmentLength
	}
	if c.AudioChannels == 0 {
		c.AudioChannels = 1
	}
	return c
}

// Output receives the bytes of one segment. The recorder implements it
// with a sealing writer.
type Output interface {
	// Write takes the segment's bytes in order. It must not keep p.
	Write(p []byte) (int, error)
	// Flush is called at every fragment boundary, after the fragment's
	// bytes: everything written so far is a playable prefix.
	Flush() error
	// Close ends the segment; last is true for the final segment of the
	// recording.
	Close(last bool) error
}

// OpenFunc opens the Output of segment seq (0, 1, …), whose first frame
// was captured at start on the recording's clock.
type OpenFunc func(seq uint64, start time.Duration) (Output, error)

// track is the fragment being built for one track, and the sample held
// back until the next one tells its duration.
type track struct {
	samples []*fmp4.Sample
	base    int64 // decode time of samples[0]
	end     int64 // decode time after the last buffered sample

	held      *fmp4.Sample
	heldStart int64 // decode time of held; equals end
	heldNom   int64 // nominal duration of held, in ticks
	last      int64 // duration of the last pushed sample
	started   bool  // video only: the first frame is at decode time 0
}

func (t *track) push(s *fmp4.Sample, dur int64) {
	if dur < 1 {
		dur = 1
	}
	s.Duration = uint32(dur)
	if len(t.samples) == 0 {
		t.base = t.heldStart
	}
	t.samples = append(t.samples, s)
	t.end = t.heldStart + dur
	t.last = dur
}

// span is the duration of the buffered samples.
func (t *track) span() int64 {
	if len(t.samples) == 0 {
		return 0
	}
	return t.end - t.base
}

// Segmenter turns frames into segments. It is not safe for concurrent use:
// one goroutine (the recorder's) calls Write and Close.
type Segmenter struct {
	cfg  Config
	open OpenFunc
	err  error // sticky
	done bool

	started bool
	origin  time.Duration // capture time of the first IDR: decode time 0
	sps     []byte        // latest parameter sets seen in the stream
	pps     []byte

	out      Output
	seq      uint64 // sequence of the next segment
	segStart int64  // video decode time of the current segment's first frame
	fragSeq  uint32 // mfhd sequence number of the last fragment
	written  int64  // bytes of the current segment written to out

	video track
	audio track
	buf   seekablebuffer.Buffer
	nalus [][]byte // scratch: the NAL units of the frame being written
}

// New returns a Segmenter that opens each segment with open. An invalid
// cfg makes the first Write fail.
func New(cfg Config, open OpenFunc) *Segmenter {
	s := &Segmenter{cfg: cfg.withDefaults(), open: open}
	if err := cfg.Validate(); err != nil {
		s.err = fmt.Errorf("segment config: %w", err)
	}
	return s
}

// ticks converts a non-negative duration to the nearest tick of a
// timescale, without overflow for any recording length.
func ticks(d time.Duration, scale int64) int64 {
	return int64(d/time.Second)*scale + (int64(d%time.Second)*scale+int64(time.Second)/2)/int64(time.Second)
}

// Write adds one frame. Frames of each kind come in capture order. Video
// frames before the first IDR, and audio captured before it, are dropped.
// An ErrFrame error rejects only this frame; any other error is sticky.
func (s *Segmenter) Write(f capture.Frame) error {
	if s.done {
		return ErrClosed
	}
	if s.err != nil {
		return s.err
	}
	var err error
	switch f.Kind {
	case capture.Video:
		err = s.writeVideo(f)
	case capture.Audio:
		err = s.writeAudio(f)
	default:
		return fmt.Errorf("%w: unknown kind %d", ErrFrame, f.Kind)
	}
	if err != nil && !errors.Is(err, ErrFrame) {
		s.err = err
	}
	return err
}

func (s *Segmenter) writeVideo(f capture.Frame) error {
	if !annexb.HasStartCode(f.Data) {
		return fmt.Errorf("%w: video at %v is not an Annex-B access unit", ErrFrame, f.Time)
	}
	nalus := s.nalus[:0]
	var sps, pps []byte
	for n := range annexb.Units(f.Data) {
		switch h264.NALUType(n[0] & 0x1f) {
		case h264.NALUTypeSPS:
			sps = n
		case h264.NALUTypePPS:
			pps = n
		case h264.NALUTypeAccessUnitDelimiter:
			continue // AVCC samples carry no delimiters
		}
		nalus = append(nalus, n)
	}
	if len(nalus) == 0 {
		return fmt.Errorf("%w: video at %v has no NAL units", ErrFrame, f.Time)
	}
	if sps != nil {
		s.sps = bytes.Clone(sps)
	}
	if pps != nil {
		s.pps = bytes.Clone(pps)
	}
	key := h264.IsRandomAccess(nalus)
	if !s.started {
		if !key || s.sps == nil || s.pps == nil {
			return nil // wait for a decodable start
		}
		s.started = true
		s.origin = f.Time
		if err := s.openSegment(f.Time, 0); err != nil {
			return err
		}
	}
	// SPS and PPS stay in-band: openh264 gives every IDR new parameter
	// set ids, so the copy in a segment's init describes only its first
	// IDR, and the samples must carry the rest.
	payload, err := h264.AVCC(nalus).Marshal()
	clear(nalus) // they alias f.Data
	s.nalus = nalus[:0]
	if err != nil {
		return fmt.Errorf("%w: video at %v: %v", ErrFrame, f.Time, err)
	}
	now := ticks(f.Time-s.origin, VideoTimescale)
	v := &s.video
	if v.held != nil {
		v.push(v.held, now-v.heldStart)
		v.held = nil
	}
	start := v.end
	if !v.started {
		start, v.started = 0, true
	}
	if key && start-s.segStart >= ticks(s.cfg.SegmentLength, VideoTimescale) {
		if err := s.cut(f.Time, start); err != nil {
			return err
		}
	} else if err := s.maybeFlush(); err != nil {
		return err
	}
	v.held = &fmp4.Sample{IsNonSyncSample: !key, Payload: payload}
	v.heldStart = start
	v.heldNom = ticks(f.Duration, VideoTimescale)
	if v.heldNom <= 0 {
		v.heldNom = max(v.last, VideoTimescale/30)
	}
	return nil
}

func (s *Segmenter) writeAudio(f capture.Frame) error {
	if !s.cfg.Audio || !s.started || f.Time < s.origin {
		return nil
	}
	nom := opus.PacketDuration2(f.Data)
	if nom <= 0 {
		return fmt.Errorf("%w: audio at %v is not an Opus packet", ErrFrame, f.Time)
	}
	now := ticks(f.Time-s.origin, AudioTimescale)
	a := &s.audio
	start := now
	if a.held != nil {
		dur := a.heldNom
		drift := now - (a.heldStart + dur)
		if tol := ticks(audioResync, AudioTimescale); drift > tol || drift < -tol {
			dur = max(now-a.heldStart, a.heldNom/2)
		}
		a.push(a.held, dur)
		a.held = nil
		start = a.end
	}
	if err := s.maybeFlush(); err != nil {
		return err
	}
	a.held = &fmp4.Sample{Payload: bytes.Clone(f.Data)}
	a.heldStart = start
	a.heldNom = nom
	return nil
}

// maybeFlush ends the fragment once a track holds FragmentLength of media.
func (s *Segmenter) maybeFlush() error {
	if ticks(s.cfg.FragmentLength, VideoTimescale) <= s.video.span() ||
		ticks(s.cfg.FragmentLength, AudioTimescale) <= s.audio.span() {
		return s.flush()
	}
	return nil
}

// cut ends the current segment before the IDR captured at at, whose
// decode time is start, and opens the next one.
func (s *Segmenter) cut(at time.Duration, start int64) error {
	if err := s.flush(); err != nil {
		return err
	}
	out := s.out
	s.out = nil
	if err := out.Close(false); err != nil {
		return fmt.Errorf("close segment %d: %w", s.seq-1, err)
	}
	return s.openSegment(at, start)
}

func (s *Segmenter) openSegment(at time.Duration, start int64) error {
	out, err := s.open(s.seq, at)
	if err != nil {
		return fmt.Errorf("open segment %d: %w", s.seq, err)
	}
	s.out = out
	s.seq++
	s.segStart = start
	init := fmp4.Init{Tracks: []*fmp4.InitTrack{{
		ID:        VideoTrackID,
		TimeScale: VideoTimescale,
		Codec:     &mp4.CodecH264{SPS: s.sps, PPS: s.pps},
	}}}
	if s.cfg.Audio {
		init.Tracks = append(init.Tracks, &fmp4.InitTrack{
			ID:        AudioTrackID,
			TimeScale: AudioTimescale,
			Codec:     &mp4.CodecOpus{ChannelCount: s.cfg.AudioChannels},
		})
	}
	s.buf.Reset()
	if err := init.Marshal(&s.buf); err != nil {
		return fmt.Errorf("segment %d: marshal init: %w", s.seq-1, err)
	}
	if _, err := out.Write(s.buf.Bytes()); err != nil {
		return fmt.Errorf("segment %d: write init: %w", s.seq-1, err)
	}
	s.written = int64(s.buf.Len())
	return nil
}

// flush writes the buffered samples as one fragment, padded if asked,
// and flushes.
func (s *Segmenter) flush() error {
	if len(s.video.samples) == 0 && len(s.audio.samples) == 0 {
		return nil
	}
	s.fragSeq++
	part := fmp4.Part{SequenceNumber: s.fragSeq}
	for _, t := range []struct {
		id int
		tr *track
	}{{VideoTrackID, &s.video}, {AudioTrackID, &s.audio}} {
		if len(t.tr.samples) > 0 {
			part.Tracks = append(part.Tracks, &fmp4.PartTrack{ID: t.id, BaseTime: uint64(t.tr.base), Samples: t.tr.samples})
		}
	}
	s.buf.Reset()
	if err := part.Marshal(&s.buf); err != nil {
		return fmt.Errorf("segment %d: marshal fragment %d: %w", s.seq-1, s.fragSeq, err)
	}
	s.video.samples, s.audio.samples = nil, nil
	if s.cfg.Align > 0 {
		s.pad(int64(s.buf.Len()))
	}
	s.written += int64(s.buf.Len())
	if _, err := s.out.Write(s.buf.Bytes()); err != nil {
		return fmt.Errorf("segment %d: write fragment %d: %w", s.seq-1, s.fragSeq, err)
	}
	if err := s.out.Flush(); err != nil {
		return fmt.Errorf("segment %d: flush fragment %d: %w", s.seq-1, s.fragSeq, err)
	}
	return nil
}

// pad appends to s.buf a free box that brings the segment, once the n
// bytes in s.buf are written, to a multiple of Align.
func (s *Segmenter) pad(n int64) {
	align := int64(s.cfg.Align)
	size := (align - (s.written+n)%align) % align
	if size < freeHeader {
		size += align
	}
	box := make([]byte, size)
	binary.BigEndian.PutUint32(box, uint32(size))
	copy(box[4:], "free")
	s.buf.Write(box)
}

// Close ends the last fragment and closes the last segment with last set.
// After an earlier error it closes the open segment without the last flag
// (the recording did not end cleanly) and returns that error. A recording
// that never saw an IDR produces no segment and no error.
func (s *Segmenter) Close() error {
	if s.done {
		return ErrClosed
	}
	s.done = true
	if s.err != nil {
		if s.out != nil {
			s.out.Close(false)
			s.out = nil
		}
		return s.err
	}
	if s.out == nil {
		return nil
	}
	for _, t := range []*track{&s.video, &s.audio} {
		if t.held != nil {
			t.push(t.held, t.heldNom)
			t.held = nil
		}
	}
	err := s.flush()
	out := s.out
	s.out = nil
	if err != nil {
		out.Close(false)
		s.err = err
		return err
	}
	if err := out.Close(true); err != nil {
		s.err = fmt.Errorf("close segment %d: %w", s.seq-1, err)
		return s.err
	}
	return nil
}
