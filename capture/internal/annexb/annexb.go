// Package annexb reads H.264 Annex-B byte streams: NAL units separated by
// start codes (00 00 01 or 00 00 00 01), as openh264 emits them.
package annexb

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
	start := -1 // first byte of the current unit
	i := 0
	for i+2 < len(b) {
		if b[i] != 0 || b[i+1] != 0 || b[i+2] != 1 {
			i++
			continue
		}
		if start >= 0 {
			units = appendUnit(units, b[start:i])
		}
		i += 3
		start = i
	}
	if start >= 0 && start <= len(b) {
		units = appendUnit(units, b[start:])
	}
	return units
}

func appendUnit(units [][]byte, u []byte) [][]byte {
	for len(u) > 0 && u[len(u)-1] == 0 {
		u = u[:len(u)-1]
	}
	if len(u) == 0 {
		return units
	}
	return append(units, u)
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
	for _, u := range Split(b) {
		if Type(u) == TypeIDR {
			return true
		}
	}
	return false
}
