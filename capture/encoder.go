package capture

import (
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/pion/mediadevices/pkg/codec"
	"github.com/pion/mediadevices/pkg/codec/openh264"
	"github.com/pion/mediadevices/pkg/codec/opus"
	"github.com/pion/mediadevices/pkg/frame"
	"github.com/pion/mediadevices/pkg/io/audio"
	"github.com/pion/mediadevices/pkg/io/video"
	"github.com/pion/mediadevices/pkg/prop"

	"github.com/uploadbox/uploadbox/capture/anon"
	"github.com/uploadbox/uploadbox/capture/internal/annexb"
)

// h264Params are the openh264 settings for recording. The library's
// defaults (100 kbit/s, frame skipping on, an IDR every 30 frames) would
// starve or break a recording.
func h264Params(cfg Config) (openh264.Params, error) {
	p, err := openh264.NewParams()
	if err != nil {
		return p, err
	}
	p.BitRate = cfg.Bitrate
	p.KeyFrameInterval = cfg.keyFrames()
	p.IntraPeriod = uint(cfg.keyFrames())
	p.EnableFrameSkip = false // every captured frame is encoded
	p.RCMode = openh264.RCBitrateMode
	p.UsageType = openh264.CameraVideoRealTime
	return p, nil
}

func newH264Encoder(cfg Config, r video.Reader) (codec.ReadCloser, error) {
	p, err := h264Params(cfg)
	if err != nil {
		return nil, fmt.Errorf("h264 encoder: %w", err)
	}
	enc, err := p.BuildVideoEncoder(r, prop.Media{Video: prop.Video{
		Width: cfg.Width, Height: cfg.Height, FrameRate: float32(cfg.FPS), FrameFormat: frame.FormatI420,
	}})
	if err != nil {
		return nil, fmt.Errorf("h264 encoder %dx%d at %d bit/s: %w", cfg.Width, cfg.Height, cfg.Bitrate, err)
	}
	return enc, nil
}

func newOpusEncoder(cfg Config, r audio.Reader) (codec.ReadCloser, error) {
	p, err := opus.NewParams()
	if err != nil {
		return nil, fmt.Errorf("opus encoder: %w", err)
	}
	p.BitRate = cfg.AudioBitrate
	p.Latency = opus.Latency20ms
	enc, err := p.BuildAudioEncoder(r, prop.Media{Audio: prop.Audio{
		ChannelCount: cfg.Channels, SampleRate: SampleRate, Latency: AudioPacket,
		IsInterleaved: true, SampleSize: 2,
	}})
	if err != nil {
		return nil, fmt.Errorf("opus encoder %d ch at %d bit/s: %w", cfg.Channels, cfg.AudioBitrate, err)
	}
	return enc, nil
}

// stream is one source and its single encoder.
type stream struct {
	kind     Kind
	src      io.Closer
	tap      *videoTap // video only
	lost     func() uint64
	captured *atomic.Uint64
	enc      codec.ReadCloser
	stamps   *stamps
	units    int // stamp units per packet: 1 frame, or 960 samples
	duration time.Duration
	keys     *keyframeLimiter // video only

	encoded   atomic.Uint64
	skipped   atomic.Uint64 // source frames the encoder emitted nothing for
	bytes     atomic.Uint64
	keyframes atomic.Uint64
}

// newVideoStream puts the H.264 encoder behind src. keys may be nil.
func newVideoStream(cfg Config, src videoSource, clk *clock, keys *keyframeLimiter) (*stream, error) {
	tap := &videoTap{src: src, stamps: &stamps{}}
	if cfg.Anonymise != anon.Off && cfg.Anonymise != "" {
		f, err := anon.New(cfg.Anonymise, cfg.Masks)
		if err != nil {
			return nil, err
		}
		tap.filter = f
	}
	enc, err := newH264Encoder(cfg, tap)
	if err != nil {
		return nil, err
	}
	s := &stream{kind: Video, src: src, tap: tap, lost: src.lost, captured: &tap.captured,
		enc: enc, stamps: tap.stamps, units: 1, duration: cfg.frameInterval(), keys: keys}
	if kf, ok := enc.Controller().(codec.KeyFrameController); ok && keys != nil {
		// Called on the encoder's goroutine between reading a frame and
		// encoding it, so the flag openh264 reads is never written
		// concurrently.
		tap.beforeEncode = func() {
			if keys.take(clk.now()) {
				_ = kf.ForceKeyFrame()
			}
		}
	}
	return s, nil
}

// newAudioStream puts the Opus encoder behind src.
func newAudioStream(cfg Config, src audioSource) (*stream, error) {
	tap := &audioTap{src: src, stamps: &stamps{rate: SampleRate}}
	enc, err := newOpusEncoder(cfg, tap)
	if err != nil {
		return nil, err
	}
	return &stream{kind: Audio, src: src, lost: src.lost, captured: &tap.captured,
		enc: enc, stamps: tap.stamps, units: chunkFrames, duration: AudioPacket}, nil
}

// run reads the encoder until it fails and hands every frame to publish,
// which must not block. When stopping is closed, an error from the
// (closed) source ends the loop cleanly.
func (s *stream) run(stopping <-chan struct{}, publish func(Frame)) error {
	var last time.Duration
	first := true
	for {
		data, release, err := s.enc.Read()
		if err != nil {
			select {
			case <-stopping:
				return nil
			default:
			}
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("%s source ended", s.kind)
			}
			return fmt.Errorf("%s: %w", s.kind, err)
		}
		t, ok := s.stamps.pop(s.units)
		f := Frame{Kind: s.kind, Data: append([]byte(nil), data...), Time: t, Duration: s.duration, Key: true}
		if release != nil {
			release()
		}
		if !ok {
			return fmt.Errorf("%s encoder emitted a packet without input", s.kind)
		}
		if len(f.Data) == 0 {
			s.skipped.Add(1)
			continue
		}
		if !first && f.Time < last {
			// Sources stamp monotonically; keep the promise regardless.
			f.Time = last
		}
		first, last = false, f.Time
		if s.kind == Video {
			f.Key = annexb.IsIDR(f.Data)
			if f.Key {
				s.keyframes.Add(1)
				if s.keys != nil {
					s.keys.idr(f.Time)
				}
			}
		} else {
			s.keyframes.Add(1)
		}
		s.encoded.Add(1)
		s.bytes.Add(uint64(len(f.Data)))
		publish(f)
	}
}

// stop closes the source, which makes a Read in progress return; it may
// run while the loop reads.
func (s *stream) stop() error { return s.src.Close() }

// close releases the source and the encoder once the loop has returned
// (or never ran). The encoder's Close would wait for a Read in progress.
func (s *stream) close() error {
	err := errors.Join(s.src.Close(), s.enc.Close())
	if s.tap != nil {
		s.tap.done()
	}
	return err
}

func (s *stream) stats() StreamStats {
	return StreamStats{
		Captured:  s.captured.Load(),
		Dropped:   s.lost() + s.skipped.Load(),
		Encoded:   s.encoded.Load(),
		Bytes:     s.bytes.Load(),
		Keyframes: s.keyframes.Load(),
	}
}
