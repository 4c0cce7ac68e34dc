package crypto

import (
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Format constants; docs/format.md is the normative description.
const (
	// Version is the only header version this build reads and writes.
	Version = 1

	magic          = "UBXSEG"
	fixedSize      = 6 + 1 + 1 + 2 + 2 + 32 + 16 + 8 + 32 + 8 + 1 // up to the codec bytes
	maxCodecLen    = 64
	wrappedKeySize = 32 + 16 // segment key + AES-256-GCM tag
	// MaxHeaderSize bounds what a reader buffers before it has parsed anything.
	MaxHeaderSize = 8192
	// CommitmentSize is the size of a segment's commitment (its chain link).
	CommitmentSize = 32
)

// ErrCorrupt marks a segment that is malformed or failed authentication.
// Nothing unauthenticated is released from such a segment.
var ErrCorrupt = errors.New("segment is corrupt")

// ErrTruncated marks a segment whose authentic prefix is intact but whose
// end is missing, as after a power cut. The prefix can still be read.
var ErrTruncated = errors.New("segment is truncated")

// ErrNoIdentity means no recipient stanza of the segment opens with the
// given keys: the segment is not for this organisation key.
var ErrNoIdentity = errors.New("no recipient stanza opens with this key (the segment is for another key, or its header was modified)")

// ErrWrongDevice marks a segment whose header names, and whose trailer is
// signed by, another device than the one expected. Such an error is also
// an ErrCorrupt.
var ErrWrongDevice = errors.New("segment is signed by another device")

// wrongDeviceError is an ErrWrongDevice naming both keys.
type wrongDeviceError struct{ want, got *DevicePublicKey }

func (e *wrongDeviceError) Error() string {
	return fmt.Sprintf("segment is signed by another device than %s (its header names %s)", e.want, e.got)
}

func (e *wrongDeviceError) Is(target error) bool {
	return target == ErrWrongDevice || target == ErrCorrupt
}

// CheckDevice returns an ErrWrongDevice unless the header names device.
// The signature is checked with the header's key, so a segment that
// passes both is signed by device.
func (h *Header) CheckDevice(device *DevicePublicKey) error {
	if !device.Equal(h.Device) {
		return &wrongDeviceError{want: device, got: h.Device}
	}
	return nil
}

// Header is the authenticated, non-secret description of a segment.
type Header struct {
	Suite       Suite
	Flags       uint16 // no flags are defined in version 1; all must be zero
	Device      *DevicePublicKey
	RecordingID [16]byte
	Sequence    uint64
	Prev        [CommitmentSize]byte // commitment of the previous segment; zero for sequence 0
	StartUnixNs int64                // wall-clock start of the segment's media
	Codec       string               // e.g. "video/mp4"; printable ASCII, at most 64 bytes

	stanzas []stanza
	raw     []byte // the exact encoded bytes, the Cobblestone context
}

type stanza struct {
	enc     []byte
	wrapped []byte
}

// Bytes returns the encoded header exactly as stored.
func (h *Header) Bytes() []byte { return h.raw }

func (h *Header) headerErr(format string, args ...any) error {
	return fmt.Errorf("%w: header: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}

// prefix encodes everything up to and including the recipient count. It is
// bound into every HPKE wrap, so a stanza cannot move to another segment.
func (h *Header) prefix(total int) []byte {
	b := make([]byte, 0, total)
	b = append(b, magic...)
	b = append(b, Version, byte(h.Suite))
	b = binary.BigEndian.AppendUint16(b, h.Flags)
	b = binary.BigEndian.AppendUint16(b, uint16(total))
	b = append(b, h.Device.pub...)
	b = append(b, h.RecordingID[:]...)
	b = binary.BigEndian.AppendUint64(b, h.Sequence)
	b = append(b, h.Prev[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(h.StartUnixNs))
	b = append(b, byte(len(h.Codec)))
	b = append(b, h.Codec...)
	b = append(b, byte(len(h.stanzas)))
	return b
}

func (h *Header) encodedSize(nStanzas int) int {
	return fixedSize + len(h.Codec) + 1 + nStanzas*(suites[h.Suite].encSize+wrappedKeySize)
}

func validCodec(s string) bool {
	if len(s) > maxCodecLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// ReadHeader reads and strictly parses a header from r. Anything unknown or
// out of range is an ErrCorrupt naming the field; a short read is
// ErrTruncated.
func ReadHeader(r io.Reader) (*Header, error) {
	var fixed [12]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return nil, shortRead(err, "header")
	}
	if string(fixed[:6]) != magic {
		return nil, fmt.Errorf("%w: not an uploadbox segment (bad magic)", ErrCorrupt)
	}
	if fixed[6] != Version {
		return nil, fmt.Errorf("%w: header version %d is not supported (this build reads version %d; upgrade uploadbox)", ErrCorrupt, fixed[6], Version)
	}
	total := int(binary.BigEndian.Uint16(fixed[10:12]))
	if total < fixedSize+1 || total > MaxHeaderSize {
		return nil, fmt.Errorf("%w: header length %d out of range", ErrCorrupt, total)
	}
	raw := make([]byte, total)
	copy(raw, fixed[:])
	if _, err := io.ReadFull(r, raw[12:]); err != nil {
		return nil, shortRead(err, "header")
	}
	return ParseHeader(raw)
}

func shortRead(err error, what string) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: file ends inside the %s", ErrTruncated, what)
	}
	return err
}

// ParseHeader parses exactly one encoded header; trailing bytes are an error.
func ParseHeader(raw []byte) (*Header, error) {
	h := &Header{}
	if len(raw) < fixedSize+1 || len(raw) > MaxHeaderSize {
		return nil, h.headerErr("length %d out of range", len(raw))
	}
	if string(raw[:6]) != magic {
		return nil, fmt.Errorf("%w: not an uploadbox segment (bad magic)", ErrCorrupt)
	}
	if raw[6] != Version {
		return nil, h.headerErr("version %d is not supported (this build reads version %d)", raw[6], Version)
	}
	h.Suite = Suite(raw[7])
	info, ok := suites[h.Suite]
	if !ok {
		return nil, h.headerErr("unknown suite %d", raw[7])
	}
	h.Flags = binary.BigEndian.Uint16(raw[8:10])
	if h.Flags != 0 {
		return nil, h.headerErr("unknown flags %#04x", h.Flags)
	}
	if total := int(binary.BigEndian.Uint16(raw[10:12])); total != len(raw) {
		return nil, h.headerErr("declared length %d, have %d", total, len(raw))
	}
	p := raw[12:]
	if err := checkDevicePoint(p[:32]); err != nil {
		return nil, h.headerErr("device key %v", err)
	}
	h.Device = &DevicePublicKey{pub: ed25519.PublicKey(append([]byte(nil), p[:32]...))}
	p = p[32:]
	copy(h.RecordingID[:], p[:16])
	p = p[16:]
	h.Sequence = binary.BigEndian.Uint64(p)
	p = p[8:]
	copy(h.Prev[:], p[:32])
	p = p[32:]
	h.StartUnixNs = int64(binary.BigEndian.Uint64(p))
	p = p[8:]
	codecLen := int(p[0])
	p = p[1:]
	if codecLen > maxCodecLen || len(p) < codecLen+1 {
		return nil, h.headerErr("codec length %d out of range", codecLen)
	}
	h.Codec = string(p[:codecLen])
	if !validCodec(h.Codec) {
		return nil, h.headerErr("codec is not printable ASCII")
	}
	p = p[codecLen:]
	n := int(p[0])
	p = p[1:]
	if n < 1 || n > maxRecipients {
		return nil, h.headerErr("%d recipient stanzas, want 1 to %d", n, maxRecipients)
	}
	size := info.encSize + wrappedKeySize
	if len(p) != n*size {
		return nil, h.headerErr("recipient stanzas take %d bytes, want %d for %d %s stanzas", len(p), n*size, n, info.name)
	}
	for i := 0; i < n; i++ {
		s := p[i*size : (i+1)*size]
		h.stanzas = append(h.stanzas, stanza{enc: s[:info.encSize], wrapped: s[info.encSize:]})
	}
	if (h.Sequence == 0) != (h.Prev == [CommitmentSize]byte{}) {
		return nil, h.headerErr("previous commitment must be zero exactly for sequence 0")
	}
	h.raw = raw
	return h, nil
}
