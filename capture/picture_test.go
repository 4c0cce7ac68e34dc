package capture

import (
	"bytes"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
)

// writePNG writes a w x h picture, red on its left half and blue on its
// right, and returns its path.
func writePNG(t *testing.T, w, h int) string {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			c := color.RGBA{R: 255, A: 255}
			if x >= w/2 {
				c = color.RGBA{B: 255, A: 255}
			}
			img.Set(x, y, c)
		}
	}
	path := filepath.Join(t.TempDir(), "pic.png")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := png.Encode(f, img); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

// The image source shows the picture scaled to fit and centred on grey,
// in video range, and moves it from frame to frame.
func TestPicturePattern(t *testing.T) {
	path := writePNG(t, 200, 100)
	synctest.Test(t, func(t *testing.T) {
		clk := &clock{}
		clk.begin()
		const w, h = 320, 240
		p, err := newPicturePattern(path, w, h, 25, clk)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		var prev []byte
		for n := range 50 {
			img, release, err := p.Read()
			if err != nil {
				t.Fatal(err)
			}
			y := img.(*image.YCbCr)
			// The 2:1 picture fills the 352 px wide view: 176 px high,
			// grey above and below; red left, blue right (Cr high on the
			// left, Cb high on the right).
			if v := y.Y[2*w+w/2]; v != 16+128*219/255 {
				t.Fatalf("frame %d: luma %d at the top, want mid grey in video range", n, v)
			}
			mid := y.COffset(w/4, h/2)
			if cb, cr := y.Cb[mid], y.Cr[mid]; cr < 200 || cb > 128 {
				t.Fatalf("frame %d: left half Cb %d Cr %d, want red", n, cb, cr)
			}
			mid = y.COffset(3*w/4, h/2)
			if cb, cr := y.Cb[mid], y.Cr[mid]; cb < 200 || cr > 128 {
				t.Fatalf("frame %d: right half Cb %d Cr %d, want blue", n, cb, cr)
			}
			for _, v := range y.Y {
				if v < 16 || v > 235 {
					t.Fatalf("frame %d: luma %d outside video range", n, v)
				}
			}
			if n%2 == 1 && bytes.Equal(prev, y.Y) {
				t.Fatalf("frame %d equals frame %d: no motion", n, n-2)
			}
			if n%2 == 1 {
				prev = append(prev[:0], y.Y...)
			}
			release()
		}
	})
}

func TestPicturePatternBadFile(t *testing.T) {
	dir := t.TempDir()
	notPic := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(notPic, []byte("not a picture"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ path, want string }{
		{filepath.Join(dir, "missing.png"), "image source: open " + dir},
		{notPic, "image source " + notPic + ": image: unknown format: give a PNG or JPEG file"},
	} {
		_, err := newPicturePattern(tt.path, 64, 48, 25, &clock{})
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: err = %v, want %q", tt.path, err, tt.want)
		}
	}
}
