package anon

import (
	"bytes"
	"image"
	"math/rand/v2"
	"strings"
	"testing"
)

func noise(w, h int, seed uint64) *image.YCbCr {
	img := image.NewYCbCr(image.Rect(0, 0, w, h), image.YCbCrSubsampleRatio420)
	r := rand.New(rand.NewPCG(seed, 1))
	for _, p := range [][]byte{img.Y, img.Cb, img.Cr} {
		for i := range p {
			p[i] = byte(r.IntN(256))
		}
	}
	return img
}

func clone(img *image.YCbCr) *image.YCbCr {
	c := *img
	c.Y, c.Cb, c.Cr = bytes.Clone(img.Y), bytes.Clone(img.Cb), bytes.Clone(img.Cr)
	return &c
}

// TestMasks: every pixel of a mask is black in all three planes, every
// pixel outside is untouched.
func TestMasks(t *testing.T) {
	const w, h = 640, 360
	masks := []Rect{{X: 0.1, Y: 0.2, W: 0.3, H: 0.25}, {X: 0.9, Y: 0.9, W: 0.1, H: 0.1}}
	f, err := New(Masks, masks)
	if err != nil {
		t.Fatal(err)
	}
	img := noise(w, h, 1)
	orig := clone(img)
	if err := f.Apply(img); err != nil {
		t.Fatal(err)
	}
	in := func(x, y int) bool {
		for _, r := range masks {
			if float64(x) >= r.X*w && float64(x) < (r.X+r.W)*w && float64(y) >= r.Y*h && float64(y) < (r.Y+r.H)*h {
				return true
			}
		}
		return false
	}
	near := func(x, y int) bool { // within a pixel of a mask's edge (rounded to even)
		for dx := -2; dx <= 2; dx++ {
			for dy := -2; dy <= 2; dy++ {
				if in(x+dx, y+dy) != in(x, y) {
					return true
				}
			}
		}
		return false
	}
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			i, c := y*img.YStride+x, (y/2)*img.CStride+x/2
			switch {
			case in(x, y):
				if img.Y[i] != 16 || img.Cb[c] != 128 || img.Cr[c] != 128 {
					t.Fatalf("masked pixel (%d,%d) is Y %d Cb %d Cr %d, want black", x, y, img.Y[i], img.Cb[c], img.Cr[c])
				}
			case !near(x, y):
				if img.Y[i] != orig.Y[i] || img.Cb[c] != orig.Cb[c] || img.Cr[c] != orig.Cr[c] {
					t.Fatalf("pixel (%d,%d) outside every mask changed", x, y)
				}
			}
		}
	}
}

// TestWhole: detail is gone (each block one value, few brightness
// levels), shapes larger than a block stay where they were.
func TestWhole(t *testing.T) {
	const w, h = 1280, 720
	f, err := New(Whole, nil)
	if err != nil {
		t.Fatal(err)
	}
	img := noise(w, h, 2)
	// A bright figure on a grey ground, 200 x 300 px, in fine noise.
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			v := 112 + img.Y[y*img.YStride+x]/8 // grey, with detail
			if x >= 500 && x < 700 && y >= 200 && y < 500 {
				v += 88
			}
			img.Y[y*img.YStride+x] = v
		}
	}
	if err := f.Apply(img); err != nil {
		t.Fatal(err)
	}
	b := f.block
	if b != 32 {
		t.Fatalf("block of %d px at 1280 wide, want 32", b)
	}
	levels := map[byte]bool{}
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			v := img.Y[y*img.YStride+x]
			levels[v] = true
			if first := img.Y[(y/b*b)*img.YStride+x/b*b]; v != first {
				t.Fatalf("pixel (%d,%d) is %d, its block's first %d: detail left inside a block", x, y, v, first)
			}
		}
	}
	if len(levels) > 2*Levels {
		t.Fatalf("%d brightness values left, want at most %d", len(levels), 2*Levels)
	}
	centre, ground := img.Y[350*img.YStride+600], img.Y[100*img.YStride+100]
	if centre < 180 || ground < 100 || ground > 150 {
		t.Fatalf("the figure's centre is %d and the ground %d: the shape is lost", centre, ground)
	}
	// Its outline is darker than both its inside and the ground.
	if edge := img.Y[350*img.YStride+500]; edge >= ground || edge >= centre {
		t.Fatalf("the figure's edge is %d, its centre %d, the ground %d: no outline", edge, centre, ground)
	}
}

// TestWholeOddSizes: frame sizes that are not a multiple of the block
// (and the smallest) are filtered without a panic, every pixel covered.
func TestWholeOddSizes(t *testing.T) {
	for _, sz := range [][2]int{{640, 360}, {642, 362}, {16, 16}, {1920, 1080}, {320, 240}} {
		f, _ := New(Whole, nil)
		img := noise(sz[0], sz[1], 3)
		if err := f.Apply(img); err != nil {
			t.Fatal(err)
		}
		if err := f.Apply(noise(sz[0], sz[1], 4)); err != nil { // reused grid
			t.Fatal(err)
		}
	}
}

func TestNewRefuses(t *testing.T) {
	for _, tc := range []struct {
		mode  Mode
		masks []Rect
		want  string
	}{
		{"cartoon", nil, "give off, whole or masks"},
		{Masks, nil, "no mask given"},
		{Masks, []Rect{{X: 0.8, Y: 0, W: 0.3, H: 0.1}}, "x+w, y+h at most 1"},
		{Masks, []Rect{{X: 0, Y: 0, W: 0, H: 0.1}}, "w and h above 0"},
	} {
		if _, err := New(tc.mode, tc.masks); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%q, %v): %v, want %q", tc.mode, tc.masks, err, tc.want)
		}
	}
	f, _ := New(Whole, nil)
	if err := f.Apply(image.NewYCbCr(image.Rect(0, 0, 64, 64), image.YCbCrSubsampleRatio444)); err == nil {
		t.Error("a 4:4:4 frame was filtered")
	}
}

func BenchmarkWhole720p(b *testing.B) {
	f, _ := New(Whole, nil)
	img := noise(1280, 720, 5)
	b.SetBytes(int64(len(img.Y) + len(img.Cb) + len(img.Cr)))
	for b.Loop() {
		f.Apply(img)
	}
}

func BenchmarkMasks720p(b *testing.B) {
	f, _ := New(Masks, []Rect{{X: 0.1, Y: 0.1, W: 0.3, H: 0.5}})
	img := noise(1280, 720, 6)
	for b.Loop() {
		f.Apply(img)
	}
}

// sumBytes adds eight bytes at a time: it must give the plain sum for
// every length and tail, up to the largest block with every byte 255.
func TestSumBytes(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 1))
	buf := make([]byte, 1024)
	for n := 0; n <= len(buf); n++ {
		for _, full := range []bool{false, true} {
			b := buf[:n]
			for i := range b {
				b[i] = byte(r.IntN(256))
				if full {
					b[i] = 255
				}
			}
			var want uint32
			for _, v := range b {
				want += uint32(v)
			}
			if got := sumBytes(b); got != want {
				t.Fatalf("sumBytes of %d bytes (all 255: %t) = %d, want %d", n, full, got, want)
			}
		}
	}
}
