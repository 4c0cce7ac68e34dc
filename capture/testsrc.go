package capture

import (
	"image"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/mediadevices/pkg/wave"
)

// testPattern is the video test source: I420 frames paced by the clock,
// with whole-frame motion (diagonal stripes that scroll), a bar that
// sweeps across, the frame number as a row of binary blocks, and a white
// block during each tone beep for checking audio/video sync by eye. Frame
// n is captured at n/fps on the recording clock; when the reader falls
// more than one frame behind, the frames it missed are skipped and counted
// as lost, as a camera would.
type testPattern struct {
	w, h     int
	fps      int
	clk      *clock
	next     int64 // number of the next frame
	last     time.Duration
	dropped  atomic.Uint64
	done     chan struct{}
	closeOne sync.Once

	stripes []byte // one luma row template, w+stripePeriod long
	cb, cr  []byte // static chroma planes
	white   []byte // a row of white luma
	// picture, when set, is shown in place of the stripes, bar and
	// counter (SourceImage); it is 2*picturePan larger than the frame.
	picture *image.YCbCr

	mu   sync.Mutex
	free [][]byte // frame buffers released by the encoder
}

const (
	stripePeriod = 256
	counterBits  = 16
	beepPeriod   = time.Second
	beepLength   = 100 * time.Millisecond
)

func newTestPattern(w, h, fps int, clk *clock) *testPattern {
	p := &testPattern{w: w, h: h, fps: fps, clk: clk, done: make(chan struct{})}
	p.stripes = make([]byte, w+stripePeriod)
	for i := range p.stripes {
		// A triangle wave between video black (16) and white (235).
		v := i % stripePeriod
		if v >= stripePeriod/2 {
			v = stripePeriod - 1 - v
		}
		p.stripes[i] = byte(16 + v*219/(stripePeriod/2-1))
	}
	cw, ch := w/2, h/2
	p.cb = make([]byte, cw*ch)
	p.cr = make([]byte, cw*ch)
	for y := range ch {
		for x := range cw {
			p.cb[y*cw+x] = byte(64 + x*128/cw)
			p.cr[y*cw+x] = byte(64 + y*128/ch)
		}
	}
	p.white = make([]byte, w)
	for i := range p.white {
		p.white[i] = 235
	}
	return p
}

func (p *testPattern) interval() time.Duration { return time.Second / time.Duration(p.fps) }

// timeOf is the capture time of frame n.
func (p *testPattern) timeOf(n int64) time.Duration {
	return time.Duration(n) * time.Second / time.Duration(p.fps)
}

func (p *testPattern) Read() (image.Image, func(), error) {
	select {
	case <-p.done:
		return nil, func() {}, io.EOF
	default:
	}
	// More frames due than a camera could buffer: skip to the newest.
	if now := p.clk.now(); now >= p.timeOf(p.next+cameraBuffers) {
		n := int64(now / p.interval())
		for p.timeOf(n) > now {
			n--
		}
		p.dropped.Add(uint64(n - p.next))
		p.next = n
	}
	t := p.timeOf(p.next)
	if !p.clk.sleepUntil(t, p.done) {
		return nil, func() {}, io.EOF
	}
	buf := p.buffer()
	p.draw(buf, p.next, t)
	p.last = t
	p.next++
	img := p.image(buf)
	return img, func() { p.put(buf) }, nil
}

func (p *testPattern) buffer() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := len(p.free); n > 0 {
		b := p.free[n-1]
		p.free = p.free[:n-1]
		return b
	}
	return make([]byte, p.w*p.h*3/2)
}

func (p *testPattern) put(b []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.free) < 4 {
		p.free = append(p.free, b)
	}
}

func (p *testPattern) image(buf []byte) *image.YCbCr {
	ySize := p.w * p.h
	cSize := ySize / 4
	return &image.YCbCr{
		Y:              buf[:ySize:ySize],
		Cb:             buf[ySize : ySize+cSize : ySize+cSize],
		Cr:             buf[ySize+cSize : ySize+2*cSize : ySize+2*cSize],
		YStride:        p.w,
		CStride:        p.w / 2,
		SubsampleRatio: image.YCbCrSubsampleRatio420,
		Rect:           image.Rect(0, 0, p.w, p.h),
	}
}

// draw paints frame n (captured at t) into buf. Rows are copied from
// templates, so a frame costs a few memory copies, not per-pixel work.
func (p *testPattern) draw(buf []byte, n int64, t time.Duration) {
	img := p.image(buf)
	if p.picture != nil {
		p.drawPicture(img, n)
		return
	}
	w, h := p.w, p.h
	// Two pixels a frame: faster scrolling makes openh264's scene change
	// detection insert extra IDR frames.
	shift := int(n*2) % stripePeriod
	for y := range h {
		off := (y + shift) % stripePeriod
		copy(img.Y[y*w:(y+1)*w], p.stripes[off:off+w])
	}
	copy(img.Cb, p.cb)
	copy(img.Cr, p.cr)

	// The sweeping bar: one frame width every two seconds.
	barW := max(2, w/16) &^ 1
	x0 := int(n*int64(w)/int64(2*p.fps)) % w &^ 1
	x1 := min(w, x0+barW)
	for y := range h {
		copy(img.Y[y*w+x0:y*w+x1], p.white)
	}
	for y := range h / 2 {
		row := y * w / 2
		fillBytes(img.Cb[row+x0/2:row+x1/2], 90)
		fillBytes(img.Cr[row+x0/2:row+x1/2], 240)
	}

	// The frame number, most significant bit first, as white or black
	// blocks along the top; then the beep block.
	b := p.block()
	for i := range counterBits + 1 {
		on := t%beepPeriod < beepLength
		if i < counterBits {
			on = n>>(counterBits-1-i)&1 == 1
		}
		v := byte(16)
		if on {
			v = 235
		}
		bx := b + i*b
		if bx+b > w || 2*b > h {
			break
		}
		for y := b; y < 2*b; y++ {
			fillBytes(img.Y[y*w+bx:y*w+bx+b], v)
		}
		for y := b / 2; y < b; y++ {
			row := y * w / 2
			fillBytes(img.Cb[row+bx/2:row+(bx+b)/2], 128)
			fillBytes(img.Cr[row+bx/2:row+(bx+b)/2], 128)
		}
	}
}

// block is the side of a counter block in pixels: even, at least 8.
func (p *testPattern) block() int {
	return max(8, p.w/48) &^ 1
}

// counter reads back the frame number drawn into img (for tests).
func (p *testPattern) counter(img *image.YCbCr) int64 {
	b := p.block()
	var n int64
	for i := range counterBits {
		v := img.Y[(b+b/2)*img.YStride+b+i*b+b/2]
		n <<= 1
		if v > 128 {
			n |= 1
		}
	}
	return n
}

func fillBytes(b []byte, v byte) {
	for i := range b {
		b[i] = v
	}
}

func (p *testPattern) frameTime() time.Duration { return p.last }
func (p *testPattern) lost() uint64             { return p.dropped.Load() }

// Close makes the current and every later Read return io.EOF.
func (p *testPattern) Close() error {
	p.closeOne.Do(func() { close(p.done) })
	return nil
}

// testTone is the audio test source: a 440 Hz sine with a 100 ms 880 Hz
// beep at the start of every second, in 20 ms chunks paced by the clock.
// Chunk n holds the samples from n×20 ms and is delivered once the clock
// has passed its end; a reader that falls behind gets the missed chunks at
// once, so the tone never has gaps.
type testTone struct {
	channels int
	clk      *clock
	next     int64
	done     chan struct{}
	closeOne sync.Once
}

func newTestTone(channels int, clk *clock) *testTone {
	return &testTone{channels: channels, clk: clk, done: make(chan struct{})}
}

const (
	toneHz      = 440
	beepHz      = 880
	toneLevel   = 0.25
	beepLevel   = 0.5
	chunkFrames = int(SampleRate * AudioPacket / time.Second) // 960; no int overflow on 32-bit arm
)

func (s *testTone) Read() (wave.Audio, func(), error) {
	select {
	case <-s.done:
		return nil, func() {}, io.EOF
	default:
	}
	if !s.clk.sleepUntil(time.Duration(s.next+1)*AudioPacket, s.done) {
		return nil, func() {}, io.EOF
	}
	chunk := wave.NewInt16Interleaved(wave.ChunkInfo{Len: chunkFrames, Channels: s.channels, SamplingRate: SampleRate})
	first := s.next * int64(chunkFrames)
	for i := range chunkFrames {
		v := toneSample(first + int64(i))
		for c := range s.channels {
			chunk.Data[i*s.channels+c] = v
		}
	}
	s.next++
	return chunk, func() {}, nil
}

// toneSample is sample number i of the test tone.
func toneSample(i int64) int16 {
	inSecond := i % SampleRate
	hz, level := float64(toneHz), toneLevel
	if inSecond < SampleRate*int64(beepLength)/int64(time.Second) {
		hz, level = beepHz, beepLevel
	}
	// Phase from the position within the second keeps the sine exact over
	// long runs; both frequencies complete whole cycles each second.
	return int16(math.Round(level * math.MaxInt16 * math.Sin(2*math.Pi*hz*float64(inSecond)/SampleRate)))
}

func (s *testTone) frameTime() time.Duration { return time.Duration(s.next-1) * AudioPacket }
func (s *testTone) lost() uint64             { return 0 }

// Close makes the current and every later Read return io.EOF.
func (s *testTone) Close() error {
	s.closeOne.Do(func() { close(s.done) })
	return nil
}
