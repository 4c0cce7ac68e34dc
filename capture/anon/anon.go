// Package anon anonymises raw video frames before they reach the encoder,
// so that no clear picture is ever encoded, stored or sent.
//
// Two modes:
//
//   - Whole: the picture is reduced to blocks of about 1/40 of its width
//     (32 px at 1280x720), each the mean of its pixels, its brightness
//     posterised to a few levels, with the blocks where the brightness
//     changes sharply darkened, so that outlines stay. Faces, a few blocks
//     wide at most, cannot be recognised; where people are and how they
//     move can be followed.
//   - Masks: fixed rectangles, given as fractions of the frame, are filled
//     opaque (black); the rest of the picture is untouched.
//
// The filter works in place on 4:2:0 frames (image.YCbCr, as the camera
// and the test source deliver them), in integer arithmetic over the
// planes, and allocates nothing per frame once the frame size is known.
package anon

import (
	"encoding/binary"
	"fmt"
	"image"
)

// Mode is what the filter does.
type Mode string

// The modes. Off passes frames through untouched.
const (
	Off   Mode = "off"
	Whole Mode = "whole"
	Masks Mode = "masks"
)

// ParseMode checks a mode's name.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case Off, Whole, Masks:
		return m, nil
	case "":
		return Off, nil
	}
	return "", fmt.Errorf("anonymise %q: give off, whole or masks", s)
}

// Rect is a rectangle in fractions of the frame: X and Y of its top left
// corner, W and H its size, each from 0 to 1.
type Rect struct {
	X, Y, W, H float64
}

// Check reports a rectangle that is not inside the frame or is empty.
func (r Rect) Check() error {
	if r.W <= 0 || r.H <= 0 || r.X < 0 || r.Y < 0 || r.X+r.W > 1.0000001 || r.Y+r.H > 1.0000001 {
		return fmt.Errorf("mask {x: %g, y: %g, w: %g, h: %g}: give fractions of the frame with w and h above 0 and x+w, y+h at most 1", r.X, r.Y, r.W, r.H)
	}
	return nil
}

// Filter anonymises frames of one stream. It is not safe for concurrent
// use: one per encoder.
type Filter struct {
	mode  Mode
	masks []Rect

	// Whole: the block grid of the last frame size, reused.
	w, h, block int
	gw, gh      int
	sumY        []uint32
	sumC        [2][]uint32
	meanY       []uint8
	meanC       [2][]uint8
	// rowY and rowC are one row of the output, luma and chroma, built once
	// per row of blocks and copied into each of its rows.
	rowY []byte
	rowC [2][]byte
}

// Levels is how many brightness levels Whole keeps.
const Levels = 5

// BlocksAcross is about how many blocks Whole makes across the frame.
const BlocksAcross = 40

// edgeStep is the change of mean brightness between neighbouring blocks
// (sum of the horizontal and vertical steps, 0-510) above which Whole
// darkens a block as an outline.
const edgeStep = 48

// New makes a filter. Masks mode needs at least one mask; the masks are
// ignored by the other modes.
func New(mode Mode, masks []Rect) (*Filter, error) {
	if _, err := ParseMode(string(mode)); err != nil {
		return nil, err
	}
	if mode == Masks && len(masks) == 0 {
		return nil, fmt.Errorf("anonymise masks: no mask given (capture.masks)")
	}
	for _, r := range masks {
		if err := r.Check(); err != nil {
			return nil, err
		}
	}
	return &Filter{mode: mode, masks: append([]Rect(nil), masks...)}, nil
}

// Mode is the filter's mode.
func (f *Filter) Mode() Mode { return f.mode }

// Apply anonymises img in place. img must be 4:2:0.
func (f *Filter) Apply(img *image.YCbCr) error {
	if img.SubsampleRatio != image.YCbCrSubsampleRatio420 || img.Rect.Min != (image.Point{}) {
		return fmt.Errorf("anonymise: frame is %v at %v, want 4:2:0 from (0,0)", img.SubsampleRatio, img.Rect.Min)
	}
	switch f.mode {
	case Whole:
		f.whole(img)
	case Masks:
		f.fillMasks(img)
	}
	return nil
}

// fillMasks fills each mask black (Y 16, Cb Cr 128), rounded outwards to
// even pixels so that the chroma of every masked pixel is covered.
func (f *Filter) fillMasks(img *image.YCbCr) {
	w, h := img.Rect.Dx(), img.Rect.Dy()
	for _, r := range f.masks {
		x0, y0 := int(r.X*float64(w))&^1, int(r.Y*float64(h))&^1
		x1, y1 := ceilEven(r.X+r.W, w), ceilEven(r.Y+r.H, h)
		for y := y0; y < y1; y++ {
			row := img.Y[y*img.YStride:]
			fill(row[x0:x1], 16)
		}
		for y := y0 / 2; y < y1/2; y++ {
			fill(img.Cb[y*img.CStride+x0/2:y*img.CStride+x1/2], 128)
			fill(img.Cr[y*img.CStride+x0/2:y*img.CStride+x1/2], 128)
		}
	}
}

func ceilEven(frac float64, n int) int {
	v := int(frac*float64(n) + 0.9999)
	v = (v + 1) &^ 1
	if v > n {
		v = n &^ 1
	}
	return v
}

func fill(b []byte, v byte) {
	for i := range b {
		b[i] = v
	}
}

// size prepares the block grid for a w x h frame.
func (f *Filter) size(w, h int) {
	if f.w == w && f.h == h {
		return
	}
	f.w, f.h = w, h
	f.block = max(8, (w/BlocksAcross)&^1) // even, so chroma blocks align
	f.gw, f.gh = (w+f.block-1)/f.block, (h+f.block-1)/f.block
	n := f.gw * f.gh
	f.sumY = make([]uint32, n)
	f.meanY = make([]uint8, n)
	for i := range f.sumC {
		f.sumC[i] = make([]uint32, n)
		f.meanC[i] = make([]uint8, n)
		f.rowC[i] = make([]byte, (w+1)/2)
	}
	f.rowY = make([]byte, w)
}

func (f *Filter) whole(img *image.YCbCr) {
	w, h := img.Rect.Dx(), img.Rect.Dy()
	f.size(w, h)
	b, gw, gh := f.block, f.gw, f.gh
	clear(f.sumY)
	clear(f.sumC[0])
	clear(f.sumC[1])
	// Block means: sum rows into their blocks.
	for y := 0; y < h; y++ {
		row := img.Y[y*img.YStride : y*img.YStride+w]
		sums := f.sumY[(y/b)*gw:]
		for gx := 0; gx < gw; gx++ {
			sums[gx] += sumBytes(row[gx*b : min(gx*b+b, w)])
		}
	}
	cb, cw, ch := b/2, (w+1)/2, (h+1)/2
	for i, plane := range [2][]byte{img.Cb, img.Cr} {
		for y := 0; y < ch; y++ {
			row := plane[y*img.CStride : y*img.CStride+cw]
			sums := f.sumC[i][(y/cb)*gw:]
			for gx := 0; gx < gw; gx++ {
				sums[gx] += sumBytes(row[gx*cb : min(gx*cb+cb, cw)])
			}
		}
	}
	for gy := 0; gy < gh; gy++ {
		bh, cbh := min(b, h-gy*b), min(cb, ch-gy*cb)
		for gx := 0; gx < gw; gx++ {
			bw, cbw := min(b, w-gx*b), min(cb, cw-gx*cb)
			i := gy*gw + gx
			f.meanY[i] = uint8(f.sumY[i] / uint32(bw*bh))
			for c := range f.meanC {
				f.meanC[c][i] = uint8(f.sumC[c][i] / uint32(max(1, cbw*cbh)))
			}
		}
	}
	// Posterise, darkening the blocks on an outline (judged on the means
	// before posterising). Written into sumY, reused as the output grid.
	for gy := 0; gy < gh; gy++ {
		for gx := 0; gx < gw; gx++ {
			i := gy*gw + gx
			m := int(f.meanY[i])
			dx := absDiff(f.meanY[gy*gw+max(gx-1, 0)], f.meanY[gy*gw+min(gx+1, gw-1)])
			dy := absDiff(f.meanY[max(gy-1, 0)*gw+gx], f.meanY[min(gy+1, gh-1)*gw+gx])
			level := m * Levels / 256
			v := 16 + (level*2+1)*(235-16)/(2*Levels) // the level's centre in video range
			if dx+dy > edgeStep {
				v = 16 + (v-16)/3
			}
			f.sumY[i] = uint32(v)
		}
	}
	// Fill each block with its value: one output row per row of blocks,
	// copied into each of its rows.
	for gy := 0; gy < gh; gy++ {
		vals := f.sumY[gy*gw:]
		for gx := 0; gx < gw; gx++ {
			fill(f.rowY[gx*b:min(gx*b+b, w)], byte(vals[gx]))
		}
		for y := gy * b; y < min(gy*b+b, h); y++ {
			copy(img.Y[y*img.YStride:y*img.YStride+w], f.rowY)
		}
		for c, plane := range [2][]byte{img.Cb, img.Cr} {
			row, vals := f.rowC[c][:cw], f.meanC[c][gy*gw:]
			for gx := 0; gx < gw; gx++ {
				fill(row[gx*cb:min(gx*cb+cb, cw)], vals[gx])
			}
			for y := gy * cb; y < min(gy*cb+cb, ch); y++ {
				copy(plane[y*img.CStride:y*img.CStride+cw], row)
			}
		}
	}
}

// sumBytes is the sum of b's bytes, eight at a time: two bytes of each
// 16-bit lane added per step, so a lane holds at most 510 per 8 bytes and
// b up to 1 KiB (a block is at most 4096/BlocksAcross px wide) cannot
// overflow it.
func sumBytes(b []byte) uint32 {
	const even = 0x00ff00ff00ff00ff
	var lanes uint64
	i := 0
	for ; i+8 <= len(b); i += 8 {
		x := binary.LittleEndian.Uint64(b[i:])
		lanes += x&even + x>>8&even
	}
	s := uint32(lanes&0xffff + lanes>>16&0xffff + lanes>>32&0xffff + lanes>>48)
	for _, v := range b[i:] {
		s += uint32(v)
	}
	return s
}

func absDiff(a, b uint8) int {
	if a > b {
		return int(a - b)
	}
	return int(b - a)
}
