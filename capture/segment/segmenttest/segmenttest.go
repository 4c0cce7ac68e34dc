//go:build cgo

// Package segmenttest makes real encoded media for the tests of the
// segmenter and of its consumers: H.264 from the bundled openh264 encoder
// fed with a moving test pattern, and Opus from the bundled libopus fed
// with a tone. It needs cgo; without it Frames returns ErrNoEncoder.
package segmenttest

import (
	"errors"
	"fmt"
	"image"
	"math"
	"sort"
	"time"

	"github.com/pion/mediadevices/pkg/codec/openh264"
	"github.com/pion/mediadevices/pkg/codec/opus"
	"github.com/pion/mediadevices/pkg/frame"
	"github.com/pion/mediadevices/pkg/io/audio"
	"github.com/pion/mediadevices/pkg/io/video"
	"github.com/pion/mediadevices/pkg/prop"
	"github.com/pion/mediadevices/pkg/wave"

	"github.com/uploadbox/uploadbox/capture"
)

// ErrNoEncoder means the encoders are not built in (no cgo).
var ErrNoEncoder = errors.New("segmenttest: the openh264 and opus encoders need cgo")

// Options describes the media to make. Zero fields take the defaults.
type Options struct {
	Duration    time.Duration // default 12 s
	Width       int           // default 160
	Height      int           // default 96
	FPS         int           // default 15
	KeyInterval int           // frames between IDRs; default 2 s of frames
	Bitrate     int           // video bit/s; default 200k
	Audio       bool
	Channels    int // default 1
	// AudioDelay shifts the audio clock: positive starts audio later.
	AudioDelay time.Duration
}

func (o *Options) defaults() {
	if o.Duration == 0 {
		o.Duration = 12 * time.Second
	}
	if o.Width == 0 {
		o.Width, o.Height = 160, 96
	}
	if o.FPS == 0 {
		o.FPS = 15
	}
	if o.KeyInterval == 0 {
		o.KeyInterval = 2 * o.FPS
	}
	if o.Bitrate == 0 {
		o.Bitrate = 200_000
	}
	if o.Channels == 0 {
		o.Channels = 1
	}
}

// Frames encodes o.Duration of media and returns the frames in capture
// order, as the encoders' fan-out would deliver them: video times are
// i/FPS, audio times 20 ms apart.
func Frames(o Options) ([]capture.Frame, error) {
	o.defaults()
	vf, err := videoFrames(o)
	if err != nil {
		return nil, err
	}
	if !o.Audio {
		return vf, nil
	}
	af, err := audioFrames(o)
	if err != nil {
		return nil, err
	}
	all := append(vf, af...)
	sort.SliceStable(all, func(i, j int) bool { return all[i].Time < all[j].Time })
	return all, nil
}

// pattern draws a moving gradient with a block that changes every frame,
// so that every frame encodes to something new.
func pattern(w, h int) video.Reader {
	n := 0
	return video.ReaderFunc(func() (image.Image, func(), error) {
		img := image.NewYCbCr(image.Rect(0, 0, w, h), image.YCbCrSubsampleRatio420)
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				img.Y[y*img.YStride+x] = uint8(x + y + 3*n)
			}
		}
		for y := 0; y < h/2; y++ {
			for x := 0; x < w/2; x++ {
				img.Cb[y*img.CStride+x] = uint8(128 + x - n)
				img.Cr[y*img.CStride+x] = uint8(128 + y + n)
			}
		}
		bx := (n * 4) % (w - 16)
		for y := 8; y < 24 && y < h; y++ {
			for x := bx; x < bx+16; x++ {
				img.Y[y*img.YStride+x] = 235
			}
		}
		n++
		return img, func() {}, nil
	})
}

func videoFrames(o Options) ([]capture.Frame, error) {
	p, err := openh264.NewParams()
	if err != nil {
		return nil, err
	}
	p.BitRate = o.Bitrate
	p.EnableFrameSkip = false
	p.IntraPeriod = uint(o.KeyInterval)
	enc, err := p.BuildVideoEncoder(pattern(o.Width, o.Height), prop.Media{Video: prop.Video{
		Width: o.Width, Height: o.Height, FrameRate: float32(o.FPS), FrameFormat: frame.FormatI420,
	}})
	if err != nil {
		return nil, fmt.Errorf("segmenttest: openh264: %w", err)
	}
	defer enc.Close()
	interval := time.Second / time.Duration(o.FPS)
	n := int(o.Duration / interval)
	frames := make([]capture.Frame, 0, n)
	for i := range n {
		data, release, err := enc.Read()
		if err != nil {
			return nil, fmt.Errorf("segmenttest: encode frame %d: %w", i, err)
		}
		data = append([]byte(nil), data...)
		release()
		if len(data) == 0 {
			return nil, fmt.Errorf("segmenttest: frame %d was skipped by the encoder", i)
		}
		frames = append(frames, capture.Frame{
			Kind:     capture.Video,
			Data:     data,
			Time:     time.Duration(i) * time.Second / time.Duration(o.FPS),
			Duration: interval,
			Key:      isIDR(data),
		})
	}
	return frames, nil
}

// isIDR reports whether an Annex-B access unit holds an IDR slice.
func isIDR(au []byte) bool {
	for i := 0; i+3 < len(au); i++ {
		if au[i] == 0 && au[i+1] == 0 && au[i+2] == 1 && au[i+3]&0x1f == 5 {
			return true
		}
	}
	return false
}

const packet = 20 * time.Millisecond

func tone(channels int) audio.Reader {
	n := 0
	return audio.ReaderFunc(func() (wave.Audio, func(), error) {
		chunk := wave.NewInt16Interleaved(wave.ChunkInfo{Len: 960, Channels: channels, SamplingRate: 48000})
		for i := range 960 {
			v := int16(8000 * math.Sin(2*math.Pi*440*float64(n)/48000))
			for c := range channels {
				chunk.SetInt16(i, c, wave.Int16Sample(v))
			}
			n++
		}
		return chunk, func() {}, nil
	})
}

func audioFrames(o Options) ([]capture.Frame, error) {
	p, err := opus.NewParams()
	if err != nil {
		return nil, err
	}
	p.BitRate = 32000
	enc, err := p.BuildAudioEncoder(tone(o.Channels), prop.Media{Audio: prop.Audio{
		SampleRate: 48000, ChannelCount: o.Channels,
	}})
	if err != nil {
		return nil, fmt.Errorf("segmenttest: opus: %w", err)
	}
	defer enc.Close()
	n := int((o.Duration - o.AudioDelay) / packet)
	frames := make([]capture.Frame, 0, n)
	for i := range n {
		data, release, err := enc.Read()
		if err != nil {
			return nil, fmt.Errorf("segmenttest: encode packet %d: %w", i, err)
		}
		data = append([]byte(nil), data...)
		release()
		frames = append(frames, capture.Frame{
			Kind:     capture.Audio,
			Data:     data,
			Time:     o.AudioDelay + time.Duration(i)*packet,
			Duration: packet,
			Key:      true,
		})
	}
	return frames, nil
}
