package capture

import (
	"image"
	"strings"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/capture/anon"
)

// oneFrame is a videoSource that returns img on every Read.
type oneFrame struct {
	img      image.Image
	released int
}

func (o *oneFrame) Read() (image.Image, func(), error) {
	return o.img, func() { o.released++ }, nil
}
func (o *oneFrame) Close() error             { return nil }
func (o *oneFrame) frameTime() time.Duration { return 0 }
func (o *oneFrame) lost() uint64             { return 0 }

// The video tap filters each frame in place before the encoder reads it,
// and a frame it cannot filter is an error, never handed on clear.
func TestTapAnonymises(t *testing.T) {
	masks, err := anon.New(anon.Masks, []anon.Rect{{X: 0, Y: 0, W: 0.5, H: 1}})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		img     image.Image
		wantErr string
	}{
		{"4:2:0 frame", image.NewYCbCr(image.Rect(0, 0, 16, 16), image.YCbCrSubsampleRatio420), ""},
		{"4:2:2 frame", image.NewYCbCr(image.Rect(0, 0, 16, 16), image.YCbCrSubsampleRatio422), "want 4:2:0"},
		{"RGBA frame", image.NewRGBA(image.Rect(0, 0, 16, 16)), "want 4:2:0 YCbCr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if yc, ok := tt.img.(*image.YCbCr); ok {
				fillBytes(yc.Y, 200)
			}
			src := &oneFrame{img: tt.img}
			tap := &videoTap{src: src, stamps: &stamps{}, filter: masks}
			img, _, err := tap.Read()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || img != nil {
					t.Fatalf("Read = %v, %v; want no frame and an error with %q", img, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			yc := img.(*image.YCbCr)
			if l, r := yc.Y[0], yc.Y[15]; l != 16 || r != 200 {
				t.Errorf("left (masked) luma %d, right %d: want 16 and 200", l, r)
			}
			tap.done()
			if src.released != 1 {
				t.Errorf("frame released %d times, want 1", src.released)
			}
		})
	}
}
