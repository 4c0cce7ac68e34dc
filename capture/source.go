package capture

import (
	"fmt"
	"image"
	"io"
	"sync/atomic"
	"time"

	"github.com/pion/mediadevices/pkg/io/audio"
	"github.com/pion/mediadevices/pkg/io/video"
	"github.com/pion/mediadevices/pkg/wave"

	"github.com/uploadbox/uploadbox/capture/anon"
)

// videoSource is a video.Reader that also tells when its frames were
// captured and how many it lost. Read returns I420 images; the image stays
// valid until release is called.
type videoSource interface {
	video.Reader
	io.Closer
	// frameTime is the capture time of the frame the last Read returned.
	frameTime() time.Duration
	// lost counts frames the source could not deliver (late, or a gap in
	// the camera's stream).
	lost() uint64
}

// audioSource is an audio.Reader of 16-bit interleaved PCM at SampleRate
// that also tells when its chunks were captured.
type audioSource interface {
	audio.Reader
	io.Closer
	// frameTime is the capture time of the first sample of the chunk the
	// last Read returned.
	frameTime() time.Duration
	// lost counts 20 ms chunks the source could not deliver on time and
	// replaced by silence, or dropped.
	lost() uint64
}

// videoTap sits between the encoder and its source: it records the
// capture time of each frame the encoder reads, releases a frame once the
// encoder asks for the next one (openh264 encodes synchronously inside
// Read, and video.ToI420 drops release functions), and lets the stream
// force an IDR on the frame about to be encoded.
type videoTap struct {
	src      videoSource
	stamps   *stamps
	release  func()
	captured atomic.Uint64
	// beforeEncode runs after a frame is read and before the encoder sees
	// it, on the encoder's goroutine.
	beforeEncode func()
	// filter, when set, anonymises each frame in place before the encoder
	// sees it; a frame it cannot filter is an error, never passed on clear.
	filter *anon.Filter
}

var _ video.Reader = (*videoTap)(nil)

func (v *videoTap) Read() (image.Image, func(), error) {
	v.done()
	img, release, err := v.src.Read()
	if err != nil {
		return nil, func() {}, err
	}
	v.release = release
	if v.filter != nil {
		yc, ok := img.(*image.YCbCr)
		if !ok {
			return nil, func() {}, fmt.Errorf("anonymise: source frame is %T, want 4:2:0 YCbCr", img)
		}
		if err := v.filter.Apply(yc); err != nil {
			return nil, func() {}, err
		}
	}
	v.stamps.push(v.src.frameTime(), 1)
	v.captured.Add(1)
	if v.beforeEncode != nil {
		v.beforeEncode()
	}
	return img, func() {}, nil
}

// done releases the frame last read.
func (v *videoTap) done() {
	if v.release != nil {
		v.release()
		v.release = nil
	}
}

// audioTap records the capture time and length of each chunk the encoder
// reads.
type audioTap struct {
	src      audioSource
	stamps   *stamps
	captured atomic.Uint64
}

var _ audio.Reader = (*audioTap)(nil)

func (a *audioTap) Read() (wave.Audio, func(), error) {
	chunk, release, err := a.src.Read()
	if err != nil {
		return nil, func() {}, err
	}
	a.stamps.push(a.src.frameTime(), chunk.ChunkInfo().Len)
	a.captured.Add(1)
	return chunk, release, nil
}
