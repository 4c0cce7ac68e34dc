// Package annexb reads H.264 Annex-B byte streams: NAL units separated by
// start codes (00 00 01 or 00 00 00 01), as openh264 emits them.
package annexb

import (
	"bytes"
	"iter"
)

// NAL unit types of H.264 (ITU-T H.264 table 7-1) that capture looks at.
const (
	TypeSlice = 1 // coded slice of a non-IDR picture
	TypeIDR   = 5 // coded slice of an IDR picture
	TypeSEI   = 6
	TypeSPS   = 7
	TypePPS   = 8
	TypeAUD   = 9
)

// Split returns the NAL units of b without their start codes, in order.
// Bytes before the first start code are ignored, and trailing zero bytes
// (trailing_zero_8bits, or the first byte of a 4-byte start code) are not
// part of a unit. The units alias b.
func Split(b []byte) [][]byte {
	var units [][]byte
	for u := range Units(b) {
		units = append(units, u)
	}
	return units
}

var startCode = []byte{0, 0, 1}

// Units yields the NAL units of b as Split returns them, without
// allocating. Start codes are found with bytes.Index, which scans an
// access unit many times faster than a loop over its bytes: the daemon
// runs it on every video frame.
func Units(b []byte) iter.Seq[[]byte] {
	return func(yield func([]byte) bool) {
		i := bytes.Index(b, startCode)
		for i >= 0 {
			start := i + 3
			next := bytes.Index(b[start:], startCode)
			end := len(b)
			if next >= 0 {
				end = start + next
			}
			if u := trimUnit(b[start:end]); len(u) > 0 && !yield(u) {
				return
			}
			if next < 0 {
				return
			}
			i = end
		}
	}
}

// trimUnit drops a unit's trailing zero bytes.
func trimUnit(u []byte) []byte {
	for len(u) > 0 && u[len(u)-1] == 0 {
		u = u[:len(u)-1]
	}
	return u
}

// Type is the nal_unit_type of a NAL unit (without start code); 0 for an
// empty unit.
func Type(unit []byte) int {
	if len(unit) == 0 {
		return 0
	}
	return int(unit[0] & 0x1f)
}

// HasStartCode reports whether b begins with an Annex-B start code.
func HasStartCode(b []byte) bool {
	return len(b) >= 3 && b[0] == 0 && b[1] == 0 && (b[2] == 1 || len(b) >= 4 && b[2] == 0 && b[3] == 1)
}

// Types lists the NAL unit types of an access unit in order.
func Types(b []byte) []int {
	units := Split(b)
	types := make([]int, len(units))
	for i, u := range units {
		types[i] = Type(u)
	}
	return types
}

// IsIDR reports whether the access unit b contains an IDR slice.
func IsIDR(b []byte) bool {
	for u := range Units(b) {
		if Type(u) == TypeIDR {
			return true
		}
	}
	return false
}
