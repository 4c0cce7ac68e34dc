//go:build !cgo

package segmenttest

import (
	"errors"
	"time"

	"github.com/uploadbox/uploadbox/capture"
)

// ErrNoEncoder means the encoders are not built in (no cgo).
var ErrNoEncoder = errors.New("segmenttest: the openh264 and opus encoders need cgo")

// Options describes the media to make. Zero fields take the defaults.
type Options struct {
	Duration    time.Duration
	Width       int
	Height      int
	FPS         int
	KeyInterval int
	Bitrate     int
	Audio       bool
	Channels    int
	AudioDelay  time.Duration
}

// Frames returns ErrNoEncoder: this build has no cgo.
func Frames(Options) ([]capture.Frame, error) { return nil, ErrNoEncoder }
