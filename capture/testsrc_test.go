package capture

import (
	"bytes"
	"image"
	"io"
	"math"
	"testing"
	"testing/synctest"
	"time"

	"github.com/pion/mediadevices/pkg/wave"
)

func TestTestPattern(t *testing.T) {
	tests := []struct {
		name string
		w, h int
		fps  int
	}{
		{"640x360 at 15 fps", 640, 360, 15},
		{"1280x720 at 30 fps", 1280, 720, 30},
		{"small", 32, 18, 25},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				clk := &clock{}
				clk.begin()
				p := newTestPattern(tt.w, tt.h, tt.fps, clk)
				defer p.Close()
				var prev []byte
				for n := range 2 * tt.fps {
					img, release, err := p.Read()
					if err != nil {
						t.Fatal(err)
					}
					want := time.Duration(n) * time.Second / time.Duration(tt.fps)
					if p.frameTime() != want || clk.now() != want {
						t.Fatalf("frame %d: time %v at clock %v, want both %v", n, p.frameTime(), clk.now(), want)
					}
					y := img.(*image.YCbCr)
					if y.SubsampleRatio != image.YCbCrSubsampleRatio420 || y.Rect.Dx() != tt.w || y.Rect.Dy() != tt.h ||
						len(y.Y) != tt.w*tt.h || len(y.Cb) != tt.w*tt.h/4 || len(y.Cr) != tt.w*tt.h/4 {
						t.Fatalf("frame %d is not %dx%d I420: %v %v", n, tt.w, tt.h, y.SubsampleRatio, y.Rect)
					}
					if tt.w >= 640 {
						if got := p.counter(y); got != int64(n) {
							t.Fatalf("frame %d shows number %d", n, got)
						}
					}
					if prev != nil && bytes.Equal(prev, y.Y) {
						t.Fatalf("frame %d equals the frame before: no motion", n)
					}
					prev = append(prev[:0], y.Y...)
					release()
				}
				if p.lost() != 0 {
					t.Errorf("lost %d frames while reading on time", p.lost())
				}
			})
		})
	}
}

// TestTestPatternLate: a reader that is briefly late gets every frame; one
// that falls further behind than a camera buffers skips frames, and they
// are counted.
func TestTestPatternLate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clk := &clock{}
		clk.begin()
		p := newTestPattern(64, 36, 10, clk)
		defer p.Close()
		read := func() time.Duration {
			t.Helper()
			if _, _, err := p.Read(); err != nil {
				t.Fatal(err)
			}
			return p.frameTime()
		}
		read()                             // frame 0 at 0
		time.Sleep(250 * time.Millisecond) // frames 1 and 2 wait in the buffers
		if got := read(); got != 100*time.Millisecond || p.lost() != 0 {
			t.Errorf("read after 250 ms got frame at %v with %d lost, want frame 1 and none lost", got, p.lost())
		}
		time.Sleep(600 * time.Millisecond) // at 850 ms, frames 2 to 8 are due: more than 4
		if got := read(); got != 800*time.Millisecond {
			t.Errorf("late read got frame at %v, want the newest due (800ms)", got)
		}
		if p.lost() != 6 {
			t.Errorf("lost = %d, want 6 (frames 2 to 7)", p.lost())
		}
		if got := read(); got != 900*time.Millisecond || p.lost() != 6 {
			t.Errorf("got frame at %v with %d lost, want 900ms and 6", got, p.lost())
		}
	})
}

func TestTestTone(t *testing.T) {
	for _, channels := range []int{1, 2} {
		t.Run(map[int]string{1: "mono", 2: "stereo"}[channels], func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				clk := &clock{}
				clk.begin()
				s := newTestTone(channels, clk)
				defer s.Close()
				peak := func(c *wave.Int16Interleaved) float64 {
					var m int16
					for _, v := range c.Data {
						m = max(m, v, -v)
					}
					return float64(m) / math.MaxInt16
				}
				for n := range 60 {
					chunk, _, err := s.Read()
					if err != nil {
						t.Fatal(err)
					}
					c := chunk.(*wave.Int16Interleaved)
					if c.Size.Len != 960 || c.Size.Channels != channels || c.Size.SamplingRate != SampleRate || len(c.Data) != 960*channels {
						t.Fatalf("chunk %d: %+v with %d samples", n, c.Size, len(c.Data))
					}
					start := time.Duration(n) * AudioPacket
					if s.frameTime() != start || clk.now() != start+AudioPacket {
						t.Fatalf("chunk %d: time %v delivered at %v, want %v and %v", n, s.frameTime(), clk.now(), start, start+AudioPacket)
					}
					if channels == 2 && c.Data[2*100] != c.Data[2*100+1] {
						t.Fatal("channels differ")
					}
					level := peak(c)
					// 100 ms beep at 0.5 at the start of each second, 0.25 otherwise.
					want := toneLevel
					if start%time.Second < beepLength {
						want = beepLevel
					}
					if math.Abs(level-want) > 0.01 {
						t.Errorf("chunk %d at %v: peak %.3f, want %.2f", n, start, level, want)
					}
				}
			})
		})
	}
}

// TestSourcesClose: Close ends a Read that waits for the clock.
func TestSourcesClose(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		clk := &clock{}
		clk.begin()
		p := newTestPattern(64, 36, 1, clk)
		tone := newTestTone(1, clk)
		if _, _, err := p.Read(); err != nil { // frame 0 is due at once
			t.Fatal(err)
		}
		errs := make(chan error, 2)
		go func() { _, _, err := p.Read(); errs <- err }()
		go func() { _, _, err := tone.Read(); errs <- err }()
		synctest.Wait()
		p.Close()
		tone.Close()
		for range 2 {
			if err := <-errs; err != io.EOF {
				t.Errorf("Read after Close = %v, want io.EOF", err)
			}
		}
		if clk.now() != 0 {
			t.Errorf("Close took %v of clock time", clk.now())
		}
		p.Close() // twice is fine
	})
}
