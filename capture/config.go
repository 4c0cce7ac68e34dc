package capture

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/uploadbox/uploadbox/capture/anon"
)

// Source names for Config.Source.
const (
	// SourceTest is the built-in test pattern and, with audio, a test tone.
	SourceTest = "test"
	// SourceCamera is a V4L2 camera and, with audio, a microphone.
	SourceCamera = "camera"
	// SourceImage shows the picture file Config.Image (PNG or JPEG) in
	// place of a camera, panned a few pixels back and forth so that the
	// encoder sees motion, and, with audio, the test tone. It is for tests:
	// a real photograph through the real recorder.
	SourceImage = "image"
)

// Defaults applied to zero fields of a Config.
const (
	DefaultDevice       = "/dev/video0"
	DefaultWidth        = 1280
	DefaultHeight       = 720
	DefaultFPS          = 30
	DefaultBitrate      = 2_500_000
	DefaultKeyInterval  = 2 * time.Second
	DefaultChannels     = 1
	DefaultAudioBitrate = 32_000 // per channel
)

// SampleRate is the audio sample rate of every source and of the Opus
// encoder, in Hz.
const SampleRate = 48000

// AudioPacket is the duration of one Opus packet and of one audio chunk
// read from a source.
const AudioPacket = 20 * time.Millisecond

// Config chooses the sources and encoder settings of a Capture. Zero
// fields take the documented defaults; Source has none.
type Config struct {
	// Source is SourceTest, SourceCamera or SourceImage.
	Source string
	// Image is the picture file SourceImage shows.
	Image string
	// Device is the V4L2 device of the camera source (default /dev/video0).
	Device string
	// Width and Height of the video in pixels, both even (default 1280x720).
	Width, Height int
	// FPS is the video frame rate (default 30).
	FPS int
	// Bitrate is the H.264 target bitrate in bit/s (default 2.5 Mbit/s).
	Bitrate int
	// KeyInterval is the time between two IDR frames (default 2 s); the
	// recorder cuts segments at IDR frames, so segment lengths should be
	// a multiple of it.
	KeyInterval time.Duration
	// Audio turns the audio stream on. When false no microphone or tone is
	// opened at all (a privacy setting).
	Audio bool
	// AudioDevice selects the microphone by name or id, or a unique part
	// of its name; empty is the system default.
	AudioDevice string
	// Channels is 1 (mono, default) or 2 (stereo).
	Channels int
	// AudioBitrate is the Opus bitrate in bit/s (default 32 kbit/s per
	// channel).
	AudioBitrate int
	// Anonymise filters every video frame before the encoder, so that no
	// clear frame is encoded (anon.Off, the default, passes them through).
	Anonymise anon.Mode
	// Masks are the rectangles anon.Masks fills; that mode needs one.
	Masks []anon.Rect
}

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if c.Device == "" {
		c.Device = DefaultDevice
	}
	if c.Width == 0 {
		c.Width = DefaultWidth
	}
	if c.Height == 0 {
		c.Height = DefaultHeight
	}
	if c.FPS == 0 {
		c.FPS = DefaultFPS
	}
	if c.Bitrate == 0 {
		c.Bitrate = DefaultBitrate
	}
	if c.KeyInterval == 0 {
		c.KeyInterval = DefaultKeyInterval
	}
	if c.Channels == 0 {
		c.Channels = DefaultChannels
	}
	if c.AudioBitrate == 0 {
		c.AudioBitrate = DefaultAudioBitrate * c.Channels
	}
	if c.Anonymise == "" {
		c.Anonymise = anon.Off
	}
	return c
}

// Validate reports every problem of c at once, each naming its field.
// Zero fields are valid: they take their defaults.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("capture config: %s: "+format, append([]any{field}, args...)...))
	}
	switch c.Source {
	case SourceTest, SourceCamera:
	case SourceImage:
		if c.Image == "" {
			bad("image", "missing: source %q needs the path of a PNG or JPEG file", SourceImage)
		}
	case "":
		bad("source", "missing: use %q or %q", SourceTest, SourceCamera)
	default:
		bad("source", "unknown source %q: use %q, %q or %q", c.Source, SourceTest, SourceCamera, SourceImage)
	}
	if c.Source == SourceCamera && !filepath.IsAbs(c.Device) {
		bad("device", "%q is not an absolute path such as /dev/video0", c.Device)
	}
	if c.Width < 16 || c.Width > 4096 || c.Width%2 != 0 {
		bad("width", "%d: must be even and between 16 and 4096", c.Width)
	}
	if c.Height < 16 || c.Height > 4096 || c.Height%2 != 0 {
		bad("height", "%d: must be even and between 16 and 4096", c.Height)
	}
	if c.FPS < 1 || c.FPS > 60 {
		bad("fps", "%d: must be between 1 and 60", c.FPS)
	}
	if c.Bitrate < 100_000 || c.Bitrate > 50_000_000 {
		bad("bitrate", "%d bit/s: must be between 100 kbit/s and 50 Mbit/s", c.Bitrate)
	}
	if c.KeyInterval < 100*time.Millisecond || c.KeyInterval > time.Minute {
		bad("key interval", "%v: must be between 100ms and 1m", c.KeyInterval)
	} else if c.FPS >= 1 && c.KeyInterval < c.frameInterval() {
		bad("key interval", "%v is shorter than one frame at %d fps", c.KeyInterval, c.FPS)
	}
	if c.Channels != 1 && c.Channels != 2 {
		bad("channels", "%d: must be 1 or 2", c.Channels)
	}
	if c.AudioBitrate < 6_000 || c.AudioBitrate > 510_000 {
		bad("audio bitrate", "%d bit/s: must be between 6 kbit/s and 510 kbit/s", c.AudioBitrate)
	}
	if _, err := anon.New(c.Anonymise, c.Masks); err != nil {
		bad("anonymise", "%v", err)
	}
	return errors.Join(errs...)
}

// keyFrames is the IDR period in frames, KeyInterval rounded to frames.
func (c Config) keyFrames() int {
	return max(1, int((c.KeyInterval*time.Duration(c.FPS)+time.Second/2)/time.Second))
}

// frameInterval is the nominal time between two video frames.
func (c Config) frameInterval() time.Duration {
	return time.Second / time.Duration(c.FPS)
}
