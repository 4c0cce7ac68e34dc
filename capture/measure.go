package capture

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/pion/mediadevices/pkg/wave"
)

// VideoStats is what MeasureVideo saw: counts and rates only, never a frame.
type VideoStats struct {
	// Frames is the number of frames read.
	Frames int
	// Span is the capture time from the first frame read to the last.
	Span time.Duration
	// FPS is the measured frame rate, (Frames-1)/Span; 0 with fewer than
	// two frames.
	FPS float64
	// Lost counts frames the source reported lost while measuring.
	Lost uint64
}

// AudioLevel is the level MeasureAudio computed: numbers only, never a
// sample. Levels are in dBFS relative to a full-scale square wave, so a
// full-scale sine has an RMS level of -3.01 dBFS; silence reads
// SilenceFloor.
type AudioLevel struct {
	// Samples is the number of samples measured (frames × channels).
	Samples int
	// RMS is the root-mean-square level in dBFS.
	RMS float64
	// Peak is the largest absolute sample in dBFS.
	Peak float64
	// Clipped is the fraction (0 to 1) of samples at or above
	// ClipLevel.
	Clipped float64
}

// SilenceFloor is the level in dBFS reported for digital silence (a level
// of -Inf cannot be written as JSON). 16-bit audio reaches about -96 dBFS.
const SilenceFloor = -120.0

// ClipLevel is the level in dBFS from which a sample counts as clipped.
const ClipLevel = -0.1

// measureGrace is how much longer than the measuring time a source may
// take to deliver before the measurement is cut short.
const measureGrace = 3 * time.Second

// MeasureVideo opens the video source of cfg (the camera, or the test
// pattern), reads frames for about d and returns how many arrived and at
// what rate. Frames are released as soon as they are counted: nothing is
// encoded, kept or written. A camera that cannot be opened returns its
// *DeviceError (errors.Is works with ErrNoDevice, ErrDeviceBusy, …).
func MeasureVideo(ctx context.Context, cfg Config, d time.Duration) (VideoStats, error) {
	if err := cfg.Validate(); err != nil {
		return VideoStats{}, err
	}
	cfg = cfg.withDefaults()
	clk := &clock{}
	clk.begin()
	src, err := openVideoSource(cfg, clk)
	if err != nil {
		return VideoStats{}, err
	}
	defer src.Close()
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, d+measureGrace)
	defer cancel()
	// Close unblocks a Read in progress (io.EOF) when time is up.
	stop := context.AfterFunc(ctx, func() { src.Close() })
	defer stop()

	var st VideoStats
	var first, last time.Duration
	for {
		_, release, err := src.Read()
		if err != nil {
			if errors.Is(err, io.EOF) && ctx.Err() != nil {
				break
			}
			return st, err
		}
		release()
		last = src.frameTime()
		if st.Frames == 0 {
			first = last
		}
		st.Frames++
		if last-first >= d {
			break
		}
	}
	st.Lost = src.lost()
	st.Span = last - first
	if st.Frames >= 2 && st.Span > 0 {
		st.FPS = float64(st.Frames-1) / st.Span.Seconds()
	}
	if st.Frames == 0 {
		return st, fmt.Errorf("camera %s: no frame within %v", videoName(cfg), d+measureGrace)
	}
	return st, parent.Err()
}

// MeasureAudio opens the audio source of cfg (the microphone, or the test
// tone), reads about d of audio and returns its level. Samples are only
// summed: nothing is encoded, kept or written. It refuses when cfg has
// audio off, so a privacy setting is never bypassed.
func MeasureAudio(ctx context.Context, cfg Config, d time.Duration) (AudioLevel, error) {
	if !cfg.Audio {
		return AudioLevel{}, errors.New("audio is off in the capture config: no microphone is opened")
	}
	if err := cfg.Validate(); err != nil {
		return AudioLevel{}, err
	}
	cfg = cfg.withDefaults()
	clk := &clock{}
	clk.begin()
	src, err := openAudioSource(cfg, clk)
	if err != nil {
		return AudioLevel{}, err
	}
	defer src.Close()
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, d+measureGrace)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { src.Close() })
	defer stop()

	want := int(d * SampleRate / time.Second)
	var m levelMeter
	frames := 0
	for frames < want {
		chunk, release, err := src.Read()
		if err != nil {
			if errors.Is(err, io.EOF) && ctx.Err() != nil {
				break
			}
			return m.level(), err
		}
		if pcm, ok := chunk.(*wave.Int16Interleaved); ok {
			n := min(chunk.ChunkInfo().Len, want-frames)
			m.add(pcm.Data[:n*chunk.ChunkInfo().Channels])
			frames += n
		}
		release()
	}
	if m.n == 0 {
		return AudioLevel{}, fmt.Errorf("microphone %s: no samples within %v", audioName(cfg), d+measureGrace)
	}
	return m.level(), parent.Err()
}

// levelMeter accumulates the statistics of 16-bit samples.
type levelMeter struct {
	n       int
	sumSq   float64
	peak    int
	clipped int
}

// clipAt is the smallest absolute sample value at or above ClipLevel.
var clipAt = int(math.Ceil(32768 * math.Pow(10, ClipLevel/20)))

func (m *levelMeter) add(samples []int16) {
	for _, s := range samples {
		v := int(s)
		if v < 0 {
			v = -v
		}
		m.sumSq += float64(v) * float64(v)
		m.peak = max(m.peak, v)
		if v >= clipAt {
			m.clipped++
		}
	}
	m.n += len(samples)
}

func (m *levelMeter) level() AudioLevel {
	l := AudioLevel{Samples: m.n, RMS: SilenceFloor, Peak: SilenceFloor}
	if m.n == 0 {
		return l
	}
	l.RMS = dBFS(math.Sqrt(m.sumSq / float64(m.n)))
	l.Peak = dBFS(float64(m.peak))
	l.Clipped = float64(m.clipped) / float64(m.n)
	return l
}

// dBFS is the level of an absolute 16-bit sample value.
func dBFS(v float64) float64 {
	if v <= 0 {
		return SilenceFloor
	}
	return max(SilenceFloor, 20*math.Log10(v/32768))
}

func videoName(cfg Config) string {
	switch cfg.Source {
	case SourceCamera:
		return cfg.Device
	case SourceImage:
		return cfg.Image
	}
	return "(test pattern)"
}

func audioName(cfg Config) string {
	switch {
	case cfg.Source != SourceCamera:
		return "(test tone)"
	case cfg.AudioDevice == "":
		return "(default)"
	}
	return cfg.AudioDevice
}
