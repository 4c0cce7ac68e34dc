package capture

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/blackjack/webcam"
)

// TestCameraOpenErrors opens real paths that are not cameras: the error
// names the device, the reason and what to check.
func TestCameraOpenErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "video0")
	if err := os.WriteFile(file, []byte("not a camera"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		path   string
		reason error
		says   []string
	}{
		{"missing device", "/dev/video-uploadbox-test-missing", ErrNoDevice,
			[]string{"camera /dev/video-uploadbox-test-missing: no such device", "check that the camera is connected", "group video"}},
		{"regular file", file, ErrNotCapture,
			[]string{"camera " + file + ": not a V4L2 video capture device", "v4l2-ctl --list-devices"}},
		{"character device that is not V4L2", "/dev/null", ErrNotCapture,
			[]string{"camera /dev/null: not a V4L2 video capture device"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := openCamera(tt.path, 640, 480, 30, &clock{}, openWebcam)
			if !errors.Is(err, tt.reason) {
				t.Fatalf("error = %v, want %v", err, tt.reason)
			}
			var de *DeviceError
			if !errors.As(err, &de) || de.Kind != "camera" || de.Device != tt.path {
				t.Fatalf("error %#v is not a camera DeviceError for %s", err, tt.path)
			}
			for _, s := range tt.says {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
		})
	}
	t.Run("through Open", func(t *testing.T) {
		_, err := Open(Config{Source: SourceCamera, Device: "/dev/video-uploadbox-test-missing", Width: 640, Height: 480})
		if !errors.Is(err, ErrNoDevice) || !errors.Is(err, syscall.ENOENT) {
			t.Fatalf("Open = %v, want ErrNoDevice wrapping ENOENT", err)
		}
	})
}

// fakeV4L2 is a V4L2 device that serves prepared frames.
type fakeV4L2 struct {
	formats   map[webcam.PixelFormat][]webcam.FrameSize
	rates     []webcam.FrameRate
	setFormat func(webcam.PixelFormat) (webcam.PixelFormat, error)
	startErr  error
	frames    [][]byte // served in turn, then timeouts
	waitErr   error    // returned once the frames are served, instead of timeouts
	set       webcam.PixelFormat
	fps       float32
	closed    bool
	streaming bool
}

func (f *fakeV4L2) GetSupportedFormats() map[webcam.PixelFormat]string {
	m := map[webcam.PixelFormat]string{}
	for code := range f.formats {
		m[code] = fourccString(code)
	}
	return m
}

func (f *fakeV4L2) GetSupportedFrameSizes(code webcam.PixelFormat) []webcam.FrameSize {
	return f.formats[code]
}

func (f *fakeV4L2) GetSupportedFramerates(webcam.PixelFormat, uint32, uint32) []webcam.FrameRate {
	return f.rates
}

func (f *fakeV4L2) SetImageFormat(code webcam.PixelFormat, w, h uint32) (webcam.PixelFormat, uint32, uint32, error) {
	if f.setFormat != nil {
		got, err := f.setFormat(code)
		return got, w, h, err
	}
	f.set = code
	return code, w, h, nil
}

func (f *fakeV4L2) SetFramerate(fps float32) error { f.fps = fps; return nil }
func (f *fakeV4L2) SetBufferCount(uint32) error    { return nil }

func (f *fakeV4L2) StartStreaming() error {
	if f.startErr != nil {
		return f.startErr
	}
	f.streaming = true
	return nil
}

func (f *fakeV4L2) WaitForFrame(timeout uint32) error {
	if len(f.frames) > 0 && timeout > 0 {
		return nil
	}
	if f.waitErr != nil && timeout > 0 {
		return f.waitErr
	}
	return new(webcam.Timeout)
}

func (f *fakeV4L2) ReadFrame() ([]byte, error) {
	if len(f.frames) == 0 {
		return nil, syscall.EAGAIN
	}
	b := f.frames[0]
	f.frames = f.frames[1:]
	return b, nil
}

func (f *fakeV4L2) Close() error { f.closed = true; return nil }

func discrete(w, h uint32) webcam.FrameSize {
	return webcam.FrameSize{MinWidth: w, MaxWidth: w, MinHeight: h, MaxHeight: h}
}

func fps(n uint32) webcam.FrameRate {
	return webcam.FrameRate{MinNumerator: 1, MaxNumerator: 1, MinDenominator: n, MaxDenominator: n}
}

// yuyvFrame is a w×h YUYV frame of one colour.
func yuyvFrame(w, h int, y, u, v byte) []byte {
	b := make([]byte, 0, w*h*2)
	for range w * h / 2 {
		b = append(b, y, u, y, v)
	}
	return b
}

func jpegFrame(t *testing.T, w, h int, c color.Color) []byte {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, c)
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 95}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestCameraFrames reads frames from a fake device in each format and
// checks they come out as I420 of the right size and colour.
func TestCameraFrames(t *testing.T) {
	const w, h = 64, 48
	gray := color.RGBA{128, 128, 128, 255}
	tests := []struct {
		name   string
		format string
		frames [][]byte
		y      byte
	}{
		{"YUYV", "YUYV", [][]byte{yuyvFrame(w, h, 100, 90, 160), yuyvFrame(w, h, 101, 90, 160)}, 100},
		{"MJPEG", "MJPG", [][]byte{jpegFrame(t, w, h, gray), jpegFrame(t, w, h, gray)}, 128},
		{"I420", "YU12", [][]byte{bytes.Repeat([]byte{77}, w*h*3/2), bytes.Repeat([]byte{77}, w*h*3/2)}, 77},
		{"corrupt MJPEG frame skipped", "MJPG", [][]byte{[]byte("garbage"), jpegFrame(t, w, h, gray), jpegFrame(t, w, h, gray)}, 128},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dev := &fakeV4L2{
				formats: map[webcam.PixelFormat][]webcam.FrameSize{fourcc(tt.format): {discrete(1280, 720), discrete(w, h)}},
				rates:   []webcam.FrameRate{fps(30), fps(15)},
				frames:  tt.frames,
			}
			clk := &clock{}
			c, err := openCamera("/dev/fake", w, h, 15, clk, func(string) (v4l2Device, error) { return dev, nil })
			if err != nil {
				t.Fatal(err)
			}
			if !dev.streaming || dev.set != fourcc(tt.format) || dev.fps != 15 {
				t.Fatalf("device not set up: streaming %v, format %s, fps %v", dev.streaming, fourccString(dev.set), dev.fps)
			}
			clk.begin()
			dev.frames = tt.frames // the stale-frame drain at the first Read reads nothing with timeout 0
			var last time.Duration = -1
			for range 2 {
				img, release, err := c.Read()
				if err != nil {
					t.Fatal(err)
				}
				y, ok := img.(*image.YCbCr)
				if !ok || y.SubsampleRatio != image.YCbCrSubsampleRatio420 || y.Rect.Dx() != w || y.Rect.Dy() != h {
					t.Fatalf("frame is %T %v, want %dx%d I420", img, img.Bounds(), w, h)
				}
				if d := int(y.Y[w*h/2]) - int(tt.y); d < -3 || d > 3 {
					t.Errorf("luma %d, want about %d", y.Y[w*h/2], tt.y)
				}
				if c.frameTime() <= last {
					t.Errorf("capture time %v not after %v", c.frameTime(), last)
				}
				last = c.frameTime()
				release()
			}
			if tt.name == "corrupt MJPEG frame skipped" && c.lost() != 1 {
				t.Errorf("lost = %d, want the corrupt frame counted", c.lost())
			}
			// The fake now times out: five timeouts make the camera fail.
			if _, _, err := c.Read(); err == nil || !strings.Contains(err.Error(), "no frame for 5s") {
				t.Errorf("Read without frames = %v, want a no-frame error", err)
			}
			if err := c.Close(); err != nil || !dev.closed {
				t.Errorf("Close = %v, device closed %v", err, dev.closed)
			}
			if _, _, err := c.Read(); err != io.EOF {
				t.Errorf("Read after Close = %v, want io.EOF", err)
			}
		})
	}
}

// TestCameraSetupErrors: what the device refuses turns into a DeviceError
// with the reason and what to check.
func TestCameraSetupErrors(t *testing.T) {
	yuyv := map[webcam.PixelFormat][]webcam.FrameSize{fourcc("YUYV"): {discrete(640, 480), discrete(1280, 720)}}
	tests := []struct {
		name   string
		dev    *fakeV4L2
		w, h   int
		fps    int
		reason error
		says   []string
	}{
		{"size not offered", &fakeV4L2{formats: yuyv}, 1920, 1080, 30, ErrUnsupported,
			[]string{"camera /dev/fake: unsupported format", "1920x1080 at 30 fps is not offered", "YUYV at 640x480, 1280x720", "--list-formats-ext"}},
		{"rate not offered", &fakeV4L2{formats: yuyv, rates: []webcam.FrameRate{fps(10), fps(5)}}, 1280, 720, 30, ErrUnsupported,
			[]string{"YUYV 1280x720 at 10, 5 fps"}},
		{"no usable format", &fakeV4L2{formats: map[webcam.PixelFormat][]webcam.FrameSize{fourcc("H264"): {discrete(1280, 720)}}}, 1280, 720, 30, ErrUnsupported,
			[]string{"the camera offers H264"}},
		{"busy at set format", &fakeV4L2{formats: yuyv, setFormat: func(webcam.PixelFormat) (webcam.PixelFormat, error) { return 0, syscall.EBUSY }},
			1280, 720, 30, ErrDeviceBusy, []string{"camera /dev/fake: device busy", "fuser -v /dev/fake"}},
		{"busy at start", &fakeV4L2{formats: yuyv, startErr: errors.New("Failed to map request buffers: device or resource busy")},
			1280, 720, 30, ErrDeviceBusy, []string{"device busy", "start streaming"}},
		{"driver changes the format", &fakeV4L2{formats: yuyv, setFormat: func(webcam.PixelFormat) (webcam.PixelFormat, error) { return fourcc("MJPG"), nil }},
			1280, 720, 30, ErrUnsupported, []string{"asked for YUYV 1280x720, the driver chose MJPG"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := openCamera("/dev/fake", tt.w, tt.h, tt.fps, &clock{}, func(string) (v4l2Device, error) { return tt.dev, nil })
			if !errors.Is(err, tt.reason) {
				t.Fatalf("error = %v, want %v", err, tt.reason)
			}
			for _, s := range tt.says {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
			if !tt.dev.closed {
				t.Error("device left open after a failed setup")
			}
		})
	}
}

func TestCameraReadErrors(t *testing.T) {
	dev := &fakeV4L2{formats: map[webcam.PixelFormat][]webcam.FrameSize{fourcc("YUYV"): {discrete(64, 48)}},
		waitErr: syscall.ENODEV}
	c, err := openCamera("/dev/fake", 64, 48, 30, &clock{}, func(string) (v4l2Device, error) { return dev, nil })
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _, err = c.Read()
	if !errors.Is(err, ErrNoDevice) || !strings.Contains(err.Error(), "wait for frame") {
		t.Errorf("unplugged camera: %v", err)
	}
}

func TestFormatChoice(t *testing.T) {
	sizes := []webcam.FrameSize{discrete(1280, 720)}
	stepwise := webcam.FrameSize{MinWidth: 16, MaxWidth: 1920, StepWidth: 16, MinHeight: 16, MaxHeight: 1080, StepHeight: 8}
	tests := []struct {
		name    string
		formats map[webcam.PixelFormat][]webcam.FrameSize
		rates   []webcam.FrameRate
		w, h    int
		fps     int
		want    string // fourcc, or "" for an error
	}{
		{"raw preferred over MJPEG", map[webcam.PixelFormat][]webcam.FrameSize{fourcc("MJPG"): sizes, fourcc("YUYV"): sizes}, nil, 1280, 720, 30, "YUYV"},
		{"I420 preferred over YUYV", map[webcam.PixelFormat][]webcam.FrameSize{fourcc("YU12"): sizes, fourcc("YUYV"): sizes}, nil, 1280, 720, 30, "YU12"},
		{"MJPEG when raw lacks the size", map[webcam.PixelFormat][]webcam.FrameSize{fourcc("MJPG"): sizes, fourcc("YUYV"): {discrete(640, 480)}}, nil, 1280, 720, 30, "MJPG"},
		{"stepwise size", map[webcam.PixelFormat][]webcam.FrameSize{fourcc("NV12"): {stepwise}}, nil, 1280, 720, 30, "NV12"},
		{"stepwise size off the step", map[webcam.PixelFormat][]webcam.FrameSize{fourcc("NV12"): {stepwise}}, nil, 1288, 720, 30, ""},
		{"29.97 counts as 30", map[webcam.PixelFormat][]webcam.FrameSize{fourcc("YUYV"): sizes},
			[]webcam.FrameRate{{MinNumerator: 1001, MaxNumerator: 1001, MinDenominator: 30000, MaxDenominator: 30000}}, 1280, 720, 30, "YUYV"},
		{"stepwise rates", map[webcam.PixelFormat][]webcam.FrameSize{fourcc("YUYV"): sizes},
			[]webcam.FrameRate{{MinNumerator: 1, MinDenominator: 60, MaxNumerator: 1, MaxDenominator: 5, StepNumerator: 1, StepDenominator: 1}}, 1280, 720, 25, "YUYV"},
		{"rate too high", map[webcam.PixelFormat][]webcam.FrameSize{fourcc("YUYV"): sizes}, []webcam.FrameRate{fps(15)}, 1280, 720, 30, ""},
		{"nothing offered", nil, nil, 1280, 720, 30, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, err := chooseFormat(&fakeV4L2{formats: tt.formats, rates: tt.rates}, tt.w, tt.h, tt.fps)
			got := ""
			if err == nil {
				got = fourccString(code)
			}
			if got != tt.want {
				t.Errorf("chose %q (%v), want %q", got, err, tt.want)
			}
		})
	}
}

func TestCameraErrorMapping(t *testing.T) {
	tests := []struct {
		err    error
		reason error
	}{
		{syscall.ENOENT, ErrNoDevice},
		{syscall.ENODEV, ErrNoDevice},
		{syscall.EACCES, ErrPermission},
		{syscall.EBUSY, ErrDeviceBusy},
		{fmt.Errorf("wrapped: %w", syscall.EBUSY), ErrDeviceBusy},
		{errors.New("Failed to start streaming: device or resource busy"), ErrDeviceBusy},
		{errors.New("Not a video capture device"), ErrNotCapture},
		{syscall.EIO, nil},
	}
	for _, tt := range tests {
		t.Run(tt.err.Error(), func(t *testing.T) {
			err := cameraError("/dev/video0", "op", tt.err)
			var de *DeviceError
			if !errors.As(err, &de) || de.Reason != tt.reason || de.Hint == "" {
				t.Fatalf("cameraError(%v) = %#v, want reason %v with a hint", tt.err, err, tt.reason)
			}
			if !strings.HasPrefix(err.Error(), "camera /dev/video0: ") {
				t.Errorf("message %q does not start with the device", err)
			}
		})
	}
}
