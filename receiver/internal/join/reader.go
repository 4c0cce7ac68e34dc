// Package join appends the fragments of consecutive fMP4 segments into one
// fragmented MP4: it splits a decrypted segment into its init and its
// complete fragments, renumbers and rebases the fragments onto one
// timeline, and writes an init that states the total duration. It reads
// and writes boxes only through mediacommon and go-mp4; walking top-level
// box headers is the one thing done by hand.
package join

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// MaxBox bounds the size of any top-level box, and so the memory a
// fragment takes: a 10 s fragment at 50 Mbit/s fits.
const MaxBox = 64 << 20

// ErrFormat marks a segment whose media is not the fMP4 an uploadbox
// recorder writes.
var ErrFormat = errors.New("not an uploadbox fMP4 segment")

// Kind is the kind of a Unit.
type Kind int

// The units a segment is made of.
const (
	Init     Kind = iota + 1 // ftyp + moov
	Fragment                 // moof + mdat
)

// Unit is an init or a complete fragment, as the bytes of its boxes.
type Unit struct {
	Kind  Kind
	Bytes []byte // valid until the next call to Next
}

// Reader splits a segment's media into units. Memory is bounded by MaxBox
// per box: nothing but the current unit is held.
type Reader struct {
	r       io.Reader
	buf     []byte
	sawInit bool
	// Partial counts the bytes of an incomplete unit at the end of the
	// stream (after a truncation) that Next dropped.
	Partial int64
}

// NewReader returns a Reader of the media stream r.
func NewReader(r io.Reader) *Reader { return &Reader{r: r} }

// boxHeader reads one top-level box header into r.buf and returns the box
// type and total size. It returns io.EOF only at a clean box boundary.
func (r *Reader) boxHeader() (string, int64, error) {
	start := len(r.buf)
	r.buf = append(r.buf, make([]byte, 8)...)
	if n, err := io.ReadFull(r.r, r.buf[start:]); err != nil {
		r.buf = r.buf[:start+n]
		if err == io.EOF && start == 0 {
			return "", 0, io.EOF
		}
		return "", 0, r.cut(err)
	}
	size := int64(binary.BigEndian.Uint32(r.buf[start:]))
	typ := string(r.buf[start+4 : start+8])
	hdr := int64(8)
	switch size {
	case 0:
		return "", 0, fmt.Errorf("%w: box %q runs to the end of the file", ErrFormat, printable(typ))
	case 1:
		r.buf = append(r.buf, make([]byte, 8)...)
		if n, err := io.ReadFull(r.r, r.buf[start+8:]); err != nil {
			r.buf = r.buf[:start+8+n]
			return "", 0, r.cut(err)
		}
		size = int64(binary.BigEndian.Uint64(r.buf[start+8:]))
		hdr = 16
	}
	if size < hdr || size > MaxBox {
		return "", 0, fmt.Errorf("%w: box %q of %d bytes", ErrFormat, printable(typ), size)
	}
	return typ, size - hdr, nil
}

// box reads one whole top-level box, appending it to r.buf. The buffer
// grows with the bytes that actually arrive, not with the size a header
// claims.
func (r *Reader) box() (string, error) {
	typ, rest, err := r.boxHeader()
	if err != nil {
		return "", err
	}
	for rest > 0 {
		step := min(rest, 1<<20)
		start := len(r.buf)
		r.buf = append(r.buf, make([]byte, step)...)
		n, err := io.ReadFull(r.r, r.buf[start:])
		if err != nil {
			r.buf = r.buf[:start+n]
			return "", r.cut(err)
		}
		rest -= step
	}
	return typ, nil
}

// cut turns the end of the stream inside a unit into the stream's own
// error (a truncation) or io.ErrUnexpectedEOF, and counts what is dropped.
func (r *Reader) cut(err error) error {
	r.Partial = int64(len(r.buf))
	r.buf = r.buf[:0]
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Next returns the next unit: first the init, then the fragments. At the
// clean end of the stream it returns io.EOF. If the stream ends inside a
// unit, the unit is dropped (counted in Partial) and the stream's error is
// returned, io.ErrUnexpectedEOF for a plain end.
func (r *Reader) Next() (Unit, error) {
	for {
		r.buf = r.buf[:0]
		typ, err := r.box()
		if err != nil {
			return Unit{}, err
		}
		switch typ {
		case "ftyp":
			if r.sawInit {
				return Unit{}, fmt.Errorf("%w: a second init", ErrFormat)
			}
			if next, err := r.box(); err != nil {
				return Unit{}, err
			} else if next != "moov" {
				return Unit{}, fmt.Errorf("%w: ftyp is followed by %q, not moov", ErrFormat, printable(next))
			}
			r.sawInit = true
			return Unit{Kind: Init, Bytes: r.buf}, nil
		case "moof":
			if !r.sawInit {
				return Unit{}, fmt.Errorf("%w: a fragment before the init", ErrFormat)
			}
			if next, err := r.box(); err != nil {
				return Unit{}, err
			} else if next != "mdat" {
				return Unit{}, fmt.Errorf("%w: moof is followed by %q, not mdat", ErrFormat, printable(next))
			}
			return Unit{Kind: Fragment, Bytes: r.buf}, nil
		case "free", "skip", "styp", "sidx", "prft", "emsg":
			continue // carry nothing the joined file needs
		default:
			return Unit{}, fmt.Errorf("%w: unexpected top-level box %q", ErrFormat, printable(typ))
		}
	}
}

func printable(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	return string(b)
}
