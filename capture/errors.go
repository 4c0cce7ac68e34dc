package capture

import (
	"errors"
	"strings"
	"syscall"
)

// Sentinel errors for callers that branch on why a device could not be
// used. Errors from opening a camera or microphone wrap one of them inside
// a *DeviceError.
var (
	// ErrNoDevice: the device does not exist or is not connected.
	ErrNoDevice = errors.New("no such device")
	// ErrDeviceBusy: another program holds the device.
	ErrDeviceBusy = errors.New("device busy")
	// ErrPermission: the process may not open the device.
	ErrPermission = errors.New("permission denied")
	// ErrNotCapture: the path is not a video capture device.
	ErrNotCapture = errors.New("not a V4L2 video capture device")
	// ErrUnsupported: the device cannot deliver the configured format, size
	// or rate.
	ErrUnsupported = errors.New("unsupported format")
	// ErrNoAudioSystem: no audio backend (ALSA, PulseAudio) could be used.
	ErrNoAudioSystem = errors.New("no audio system")
)

// DeviceError is a failure to open or read a camera or microphone. Its
// message names the device, what went wrong and what to check.
type DeviceError struct {
	Kind   string // "camera" or "microphone"
	Device string // path or name; empty for the default microphone
	Reason error  // one of the sentinel errors above, or nil
	Hint   string // what to check
	Err    error  // the underlying error, if any
}

func (e *DeviceError) Error() string {
	var b strings.Builder
	b.WriteString(e.Kind)
	if e.Device != "" {
		b.WriteString(" " + e.Device)
	}
	switch {
	case e.Reason != nil && e.Err != nil:
		b.WriteString(": " + e.Reason.Error() + " (" + e.Err.Error() + ")")
	case e.Reason != nil:
		b.WriteString(": " + e.Reason.Error())
	case e.Err != nil:
		b.WriteString(": " + e.Err.Error())
	}
	if e.Hint != "" {
		b.WriteString(": " + e.Hint)
	}
	return b.String()
}

// Unwrap returns the reason and the underlying error, so errors.Is works
// with both the sentinels and errno values such as syscall.EBUSY.
func (e *DeviceError) Unwrap() []error {
	var errs []error
	if e.Reason != nil {
		errs = append(errs, e.Reason)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// errnoOf finds the errno behind err. Some libraries (blackjack/webcam)
// flatten errno values into strings, so the message's suffix is tried too.
func errnoOf(err error) (syscall.Errno, bool) {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno, true
	}
	msg := err.Error()
	for _, e := range []syscall.Errno{syscall.EBUSY, syscall.ENOENT, syscall.ENODEV, syscall.ENXIO,
		syscall.EACCES, syscall.EPERM, syscall.EINVAL, syscall.ENOTTY, syscall.ENOMEM, syscall.EIO, syscall.ENOSPC} {
		if strings.HasSuffix(msg, e.Error()) {
			return e, true
		}
	}
	return 0, false
}
