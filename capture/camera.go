package capture

import (
	"errors"
	"fmt"
	"image"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/blackjack/webcam"
	"github.com/pion/mediadevices/pkg/frame"
	"github.com/pion/mediadevices/pkg/io/video"
)

// v4l2Device is the part of *webcam.Webcam the camera source uses; tests
// stand in a fake.
type v4l2Device interface {
	GetSupportedFormats() map[webcam.PixelFormat]string
	GetSupportedFrameSizes(webcam.PixelFormat) []webcam.FrameSize
	GetSupportedFramerates(webcam.PixelFormat, uint32, uint32) []webcam.FrameRate
	SetImageFormat(webcam.PixelFormat, uint32, uint32) (webcam.PixelFormat, uint32, uint32, error)
	SetFramerate(float32) error
	SetBufferCount(uint32) error
	StartStreaming() error
	WaitForFrame(timeout uint32) error
	ReadFrame() ([]byte, error)
	Close() error
}

var _ v4l2Device = (*webcam.Webcam)(nil)

func openWebcam(path string) (v4l2Device, error) {
	cam, err := webcam.Open(path)
	if err != nil {
		return nil, err // a nil *Webcam must not become a non-nil interface
	}
	return cam, nil
}

// fourcc builds a V4L2 pixel format code.
func fourcc(s string) webcam.PixelFormat {
	return webcam.PixelFormat(uint32(s[0]) | uint32(s[1])<<8 | uint32(s[2])<<16 | uint32(s[3])<<24)
}

// cameraFormats are the pixel formats the camera source reads, in order of
// preference: raw formats first (no decoding), then MJPEG, which most USB
// cameras need for 720p at 30 fps.
var cameraFormats = []struct {
	code webcam.PixelFormat
	name frame.Format
}{
	{fourcc("YU12"), frame.FormatI420},
	{fourcc("NV12"), frame.FormatNV12},
	{fourcc("YUYV"), frame.FormatYUYV},
	{fourcc("MJPG"), frame.FormatMJPEG},
}

const (
	cameraBuffers = 4
	// cameraTimeout is how long the camera may deliver no frame before the
	// source fails.
	cameraTimeout = 5 * time.Second
	// cameraBadFrames is how many undecodable frames in a row fail the
	// source; single corrupt MJPEG frames happen and are skipped.
	cameraBadFrames = 30
)

// camera is the V4L2 video source. A frame's capture time is when it was
// dequeued: the kernel's own timestamp is not exposed by the library.
type camera struct {
	path    string
	w, h    int
	fps     int
	clk     *clock
	dev     v4l2Device
	format  frame.Format
	decoder frame.Decoder

	mu      sync.Mutex // held while reading from the device's buffers
	closed  atomic.Bool
	once    sync.Once
	drained bool
	buf     []byte
	decoded image.Image
	toI420  video.Reader
	last    time.Duration
	read    bool // last is valid
	dropped atomic.Uint64
}

// openCamera opens and configures the V4L2 device at path and starts
// streaming, so that a missing, busy or unsuitable camera is reported now
// rather than on the first read.
func openCamera(path string, w, h, fps int, clk *clock, open func(string) (v4l2Device, error)) (*camera, error) {
	dev, err := open(path)
	if err != nil {
		return nil, cameraError(path, "open", err)
	}
	c := &camera{path: path, w: w, h: h, fps: fps, clk: clk, dev: dev}
	if err := c.configure(); err != nil {
		dev.Close()
		return nil, err
	}
	c.toI420 = video.ToI420(video.ReaderFunc(func() (image.Image, func(), error) {
		return c.decoded, func() {}, nil
	}))
	return c, nil
}

func (c *camera) configure() error {
	code, name, err := chooseFormat(c.dev, c.w, c.h, c.fps)
	if err != nil {
		return &DeviceError{Kind: "camera", Device: c.path, Reason: ErrUnsupported, Err: err,
			Hint: fmt.Sprintf("choose a size and frame rate the camera offers (v4l2-ctl -d %s --list-formats-ext)", c.path)}
	}
	c.format = name
	if c.decoder, err = frame.NewDecoder(name); err != nil {
		return fmt.Errorf("camera %s: %w", c.path, err)
	}
	got, _, _, err := c.dev.SetImageFormat(code, uint32(c.w), uint32(c.h))
	if err != nil {
		return cameraError(c.path, "set format", err)
	}
	if got != code {
		return &DeviceError{Kind: "camera", Device: c.path, Reason: ErrUnsupported,
			Err:  fmt.Errorf("asked for %s %dx%d, the driver chose %s", name, c.w, c.h, fourccString(got)),
			Hint: fmt.Sprintf("check the formats with v4l2-ctl -d %s --list-formats-ext", c.path)}
	}
	if err := c.dev.SetFramerate(float32(c.fps)); err != nil {
		return cameraError(c.path, fmt.Sprintf("set %d fps", c.fps), err)
	}
	if err := c.dev.SetBufferCount(cameraBuffers); err != nil {
		return cameraError(c.path, "set buffer count", err)
	}
	if err := c.dev.StartStreaming(); err != nil {
		return cameraError(c.path, "start streaming", err)
	}
	return nil
}

// chooseFormat picks the first of cameraFormats the device offers at
// w×h and fps.
func chooseFormat(dev v4l2Device, w, h, fps int) (webcam.PixelFormat, frame.Format, error) {
	offered := dev.GetSupportedFormats()
	var seen []string
	for _, f := range cameraFormats {
		if _, ok := offered[f.code]; !ok {
			continue
		}
		sizes := dev.GetSupportedFrameSizes(f.code)
		if !sizeSupported(sizes, w, h) {
			seen = append(seen, fmt.Sprintf("%s at %s", f.name, sizesString(sizes)))
			continue
		}
		rates := dev.GetSupportedFramerates(f.code, uint32(w), uint32(h))
		if len(rates) > 0 && !rateSupported(rates, fps) {
			seen = append(seen, fmt.Sprintf("%s %dx%d at %s fps", f.name, w, h, ratesString(rates)))
			continue
		}
		return f.code, f.name, nil
	}
	if len(seen) == 0 {
		var names []string
		for _, code := range slices.Sorted(maps.Keys(offered)) {
			names = append(names, fourccString(code))
		}
		return 0, "", fmt.Errorf("no usable pixel format: the camera offers %s; capture reads YU12, NV12, YUYV or MJPG",
			orNone(strings.Join(names, ", ")))
	}
	return 0, "", fmt.Errorf("%dx%d at %d fps is not offered; the camera offers %s", w, h, fps, strings.Join(seen, "; "))
}

func sizeSupported(sizes []webcam.FrameSize, w, h int) bool {
	for _, s := range sizes {
		if uint32(w) < s.MinWidth || uint32(w) > s.MaxWidth || uint32(h) < s.MinHeight || uint32(h) > s.MaxHeight {
			continue
		}
		if s.StepWidth > 0 && (uint32(w)-s.MinWidth)%s.StepWidth != 0 {
			continue
		}
		if s.StepHeight > 0 && (uint32(h)-s.MinHeight)%s.StepHeight != 0 {
			continue
		}
		return true
	}
	return false
}

// rateSupported reports whether fps lies in one of the frame intervals
// (seconds per frame, as fractions) the device lists.
func rateSupported(rates []webcam.FrameRate, fps int) bool {
	for _, r := range rates {
		if r.MinDenominator == 0 || r.MaxDenominator == 0 {
			continue
		}
		// Interval 1/fps within [min, max], compared as fractions:
		// minN/minD <= 1/fps <= maxN/maxD.
		lo := uint64(r.MinNumerator) * uint64(fps) * 1000 / uint64(r.MinDenominator)
		hi := uint64(r.MaxNumerator) * uint64(fps) * 1000 / uint64(r.MaxDenominator)
		if lo > hi {
			lo, hi = hi, lo
		}
		// 1000 means exactly 1/fps; allow rounding of rates like 29.97.
		if lo <= 1005 && hi >= 995 {
			return true
		}
	}
	return false
}

func sizesString(sizes []webcam.FrameSize) string {
	var s []string
	for _, fs := range sizes {
		if fs.StepWidth == 0 && fs.StepHeight == 0 {
			s = append(s, fmt.Sprintf("%dx%d", fs.MaxWidth, fs.MaxHeight))
		} else {
			s = append(s, fmt.Sprintf("%dx%d to %dx%d", fs.MinWidth, fs.MinHeight, fs.MaxWidth, fs.MaxHeight))
		}
	}
	return orNone(strings.Join(s, ", "))
}

func ratesString(rates []webcam.FrameRate) string {
	var s []string
	for _, r := range rates {
		if r.MaxNumerator == 0 {
			continue
		}
		s = append(s, fmt.Sprintf("%g", float64(r.MaxDenominator)/float64(r.MaxNumerator)))
	}
	return orNone(strings.Join(s, ", "))
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func fourccString(code webcam.PixelFormat) string {
	b := []byte{byte(code), byte(code >> 8), byte(code >> 16), byte(code >> 24)}
	return strings.TrimRight(string(b), "\x00 ")
}

// cameraError turns a failure of op on the device at path into a
// DeviceError that says what to check.
func cameraError(path, op string, err error) error {
	e := &DeviceError{Kind: "camera", Device: path, Err: fmt.Errorf("%s: %w", op, err)}
	errno, ok := errnoOf(err)
	switch {
	case ok && (errno == syscall.ENOENT || errno == syscall.ENODEV || errno == syscall.ENXIO):
		e.Reason = ErrNoDevice
		e.Hint = "check that the camera is connected, that the path is right (ls -l /dev/video*) " +
			"and that the uploadbox user is in group video"
	case ok && (errno == syscall.EACCES || errno == syscall.EPERM):
		e.Reason = ErrPermission
		e.Hint = fmt.Sprintf("check that the uploadbox user is in group video (ls -l %s)", path)
	case ok && errno == syscall.EBUSY:
		e.Reason = ErrDeviceBusy
		e.Hint = fmt.Sprintf("another program is using the camera (fuser -v %s): stop it or choose another device", path)
	case ok && errno == syscall.ENOTTY,
		strings.Contains(err.Error(), "Not a video capture device"),
		strings.Contains(err.Error(), "does not support the streaming"):
		e.Reason = ErrNotCapture
		e.Hint = "check the path: list the cameras with v4l2-ctl --list-devices " +
			"(on a Pi, /dev/video10 to /dev/video31 are codecs, not cameras)"
	default:
		e.Hint = fmt.Sprintf("check the camera with v4l2-ctl -d %s --all", path)
	}
	return e
}

// Read returns the next frame as I420. It blocks until the camera delivers
// one, the camera fails, or Close is called (io.EOF).
func (c *camera) Read() (image.Image, func(), error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.drained {
		// Frames queued between Open and the clock's start carry no usable
		// capture time.
		for c.dev.WaitForFrame(0) == nil {
			if _, err := c.dev.ReadFrame(); err != nil {
				break
			}
		}
		c.drained = true
	}
	var waited time.Duration
	bad := 0
	for {
		if c.closed.Load() {
			return nil, func() {}, io.EOF
		}
		err := c.dev.WaitForFrame(1)
		var timeout *webcam.Timeout
		switch {
		case errors.As(err, &timeout):
			if waited += time.Second; waited >= cameraTimeout {
				return nil, func() {}, &DeviceError{Kind: "camera", Device: c.path,
					Err:  fmt.Errorf("no frame for %v", cameraTimeout),
					Hint: "check the cable and the camera's power; a USB camera may need a powered hub"}
			}
			continue
		case err != nil:
			return nil, func() {}, cameraError(c.path, "wait for frame", err)
		}
		waited = 0
		b, err := c.dev.ReadFrame()
		if err != nil {
			if errno, ok := errnoOf(err); ok && errno == syscall.EAGAIN {
				continue
			}
			return nil, func() {}, cameraError(c.path, "read frame", err)
		}
		if len(b) == 0 {
			continue
		}
		t := c.stamp()
		// Copy out of the mmap'ed buffer, which the driver reuses.
		c.buf = append(c.buf[:0], b...)
		img, release, err := c.decode(c.buf)
		if err != nil {
			c.dropped.Add(1)
			if bad++; bad >= cameraBadFrames {
				return nil, func() {}, &DeviceError{Kind: "camera", Device: c.path, Reason: ErrUnsupported,
					Err:  fmt.Errorf("%d frames in a row could not be decoded as %s %dx%d: %w", bad, c.format, c.w, c.h, err),
					Hint: "the driver may deliver another size or format than it reported"}
			}
			continue
		}
		c.last, c.read = t, true
		return img, release, nil
	}
}

// stamp returns the capture time of a frame dequeued now and counts the
// frames a gap in the stream suggests the camera lost.
func (c *camera) stamp() time.Duration {
	t := c.clk.now()
	if !c.read {
		return t
	}
	if t <= c.last {
		t = c.last + time.Microsecond
	}
	interval := time.Second / time.Duration(c.fps)
	if gap := t - c.last; gap > interval*3/2 {
		c.dropped.Add(uint64((gap+interval/2)/interval) - 1)
	}
	return t
}

func (c *camera) decode(b []byte) (image.Image, func(), error) {
	img, _, err := c.decoder.Decode(b, c.w, c.h)
	if err != nil {
		return nil, nil, err
	}
	if got := img.Bounds(); got.Dx() != c.w || got.Dy() != c.h {
		return nil, nil, fmt.Errorf("frame is %dx%d", got.Dx(), got.Dy())
	}
	c.decoded = img
	return c.toI420.Read()
}

func (c *camera) frameTime() time.Duration { return c.last }
func (c *camera) lost() uint64             { return c.dropped.Load() }

// Close stops streaming and closes the device. A Read in progress returns
// io.EOF within a second.
func (c *camera) Close() error {
	var err error
	c.once.Do(func() {
		c.closed.Store(true)
		c.mu.Lock() // wait for Read to leave the device's buffers
		defer c.mu.Unlock()
		err = c.dev.Close()
	})
	return err
}
