package capture

import (
	"fmt"
	"image"
	"image/color"
	_ "image/jpeg" // picture files of SourceImage
	_ "image/png"
	"os"
)

// picturePan is how far, in pixels, the picture of SourceImage moves from
// its centre in each direction.
const picturePan = 16

// newPicturePattern is the video source of SourceImage: the test pattern's
// pacing with the picture file in place of the stripes.
func newPicturePattern(path string, w, h, fps int, clk *clock) (*testPattern, error) {
	pic, err := loadPicture(path, w+2*picturePan, h+2*picturePan)
	if err != nil {
		return nil, err
	}
	p := newTestPattern(w, h, fps, clk)
	p.picture = pic
	return p, nil
}

// loadPicture decodes a PNG or JPEG file and draws it, scaled to fit and
// centred on mid grey, into a w x h 4:2:0 picture in video range.
func loadPicture(path string, w, h int) (*image.YCbCr, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("image source: %w", err)
	}
	defer f.Close()
	src, _, err := image.Decode(f)
	if err != nil {
		return nil, fmt.Errorf("image source %s: %w: give a PNG or JPEG file", path, err)
	}
	sb := src.Bounds()
	if sb.Dx() < 2 || sb.Dy() < 2 {
		return nil, fmt.Errorf("image source %s: %dx%d is too small to show", path, sb.Dx(), sb.Dy())
	}
	// Scale to fit: the picture's height or width fills the frame.
	scale := min(float64(w)/float64(sb.Dx()), float64(h)/float64(sb.Dy()))
	pw, ph := int(float64(sb.Dx())*scale), int(float64(sb.Dy())*scale)
	ox, oy := (w-pw)/2, (h-ph)/2
	dst := image.NewYCbCr(image.Rect(0, 0, w, h), image.YCbCrSubsampleRatio420)
	// Full range from the decoder to video range (16-235, 16-240).
	video := func(v uint8, top int) uint8 { return uint8(16 + int(v)*(top-16)/255) }
	for y := range h {
		for x := range w {
			var c color.YCbCr
			if x >= ox && x < ox+pw && y >= oy && y < oy+ph {
				r, g, b := bilinear(src, sb, (float64(x-ox)+0.5)/scale-0.5, (float64(y-oy)+0.5)/scale-0.5)
				c.Y, c.Cb, c.Cr = color.RGBToYCbCr(r, g, b)
			} else {
				c = color.YCbCr{Y: 128, Cb: 128, Cr: 128}
			}
			dst.Y[y*dst.YStride+x] = video(c.Y, 235)
			// Chroma from the top left pixel of each 2x2 block.
			if x%2 == 0 && y%2 == 0 {
				i := dst.COffset(x, y)
				dst.Cb[i], dst.Cr[i] = video(c.Cb, 240), video(c.Cr, 240)
			}
		}
	}
	return dst, nil
}

// bilinear samples src at (fx, fy), in pixels from the top left of its
// bounds b.
func bilinear(src image.Image, b image.Rectangle, fx, fy float64) (r, g, bl uint8) {
	fx = min(max(fx, 0), float64(b.Dx()-1))
	fy = min(max(fy, 0), float64(b.Dy()-1))
	x0, y0 := int(fx), int(fy)
	x1, y1 := min(x0+1, b.Dx()-1), min(y0+1, b.Dy()-1)
	ax, ay := fx-float64(x0), fy-float64(y0)
	var out [3]float64
	for _, s := range [4]struct {
		x, y int
		w    float64
	}{{x0, y0, (1 - ax) * (1 - ay)}, {x1, y0, ax * (1 - ay)}, {x0, y1, (1 - ax) * ay}, {x1, y1, ax * ay}} {
		cr, cg, cb, _ := src.At(b.Min.X+s.x, b.Min.Y+s.y).RGBA()
		out[0] += s.w * float64(cr>>8)
		out[1] += s.w * float64(cg>>8)
		out[2] += s.w * float64(cb>>8)
	}
	return uint8(out[0] + 0.5), uint8(out[1] + 0.5), uint8(out[2] + 0.5)
}

// drawPicture copies the picture into img, panned: the view moves two
// pixels every other frame along a triangle wave, horizontally and
// vertically out of step, so the encoder sees motion.
func (p *testPattern) drawPicture(img *image.YCbCr, n int64) {
	ox, oy := panOffset(n), panOffset(n+picturePan)
	pic := p.picture
	for y := range p.h {
		copy(img.Y[y*img.YStride:y*img.YStride+p.w], pic.Y[(y+oy)*pic.YStride+ox:])
	}
	for y := range p.h / 2 {
		src := (y+oy/2)*pic.CStride + ox/2
		copy(img.Cb[y*img.CStride:y*img.CStride+p.w/2], pic.Cb[src:])
		copy(img.Cr[y*img.CStride:y*img.CStride+p.w/2], pic.Cr[src:])
	}
}

// panOffset is the even offset, 0 to 2*picturePan, of frame n's view.
func panOffset(n int64) int {
	period := int64(4 * picturePan)
	v := n % period
	if v >= period/2 {
		v = period - v
	}
	return int(v) &^ 1
}
