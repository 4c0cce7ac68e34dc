package crypto

import (
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/rand"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"github.com/zeebo/blake3"

	"github.com/uploadbox/uploadbox/crypto/internal/stream"
)

const (
	trailerMagic = "UBXSIG"
	// TrailerSize is magic (6), version (1), flags (1) and an Ed25519 signature.
	TrailerSize = 8 + ed25519.SignatureSize

	// FlagLast in the trailer marks the last segment of a recording.
	FlagLast byte = 1 << 0
	// endMask covers the trailer flag bits 1–3, the EndReason of a last
	// segment (zero on every other segment).
	endMask  byte = 0x7 << 1
	endShift      = 1

	// ChunkSize is the plaintext size of every payload chunk but the last.
	// Flush hands only whole chunks to the file, so a writer that wants all
	// it wrote on disk at a flush pads its plaintext to a multiple of it.
	ChunkSize = stream.ChunkSize

	wrapInfo     = "uploadbox.segment-key.v1"
	signDomain   = "uploadbox.segment-signature.v1\x00"
	signHashSize = 32
)

// hpke parameters shared by all suites; only the KEM varies.
var (
	wrapKDF  = hpke.HKDFSHA256()
	wrapAEAD = hpke.AES256GCM()
)

// Params describes the segment being sealed.
type Params struct {
	RecordingID [16]byte
	Sequence    uint64
	Prev        [CommitmentSize]byte // Commitment() of segment Sequence-1
	Start       time.Time
	Codec       string
}

// Writer seals one segment: header, Cobblestone-256 payload, signed trailer.
// Only ciphertext reaches dst. Close must be called, also after an error.
type Writer struct {
	dst        io.Writer
	header     *Header
	stream     *stream.Writer
	hash       hash.Hash
	device     *DeviceKey
	commitment [CommitmentSize]byte
	last       bool
	end        EndReason
	closed     bool
}

// NewWriter writes the header of a new segment to dst and returns a Writer
// for its media. The segment key is random, wrapped to every recipient, and
// erased as soon as the payload keys are derived. device signs the trailer.
func NewWriter(dst io.Writer, recipients []*Recipient, device *DeviceKey, p Params) (*Writer, error) {
	if len(recipients) < 1 || len(recipients) > maxRecipients {
		return nil, fmt.Errorf("seal: %d recipients, want 1 to %d", len(recipients), maxRecipients)
	}
	suite := recipients[0].suite
	for _, r := range recipients[1:] {
		if r.suite != suite {
			return nil, errors.New("seal: all recipients must share one suite")
		}
	}
	if device == nil {
		return nil, errors.New("seal: a device key is required to sign the segment")
	}
	if !validCodec(p.Codec) {
		return nil, fmt.Errorf("seal: codec %q must be printable ASCII of at most %d bytes", p.Codec, maxCodecLen)
	}
	if (p.Sequence == 0) != (p.Prev == [CommitmentSize]byte{}) {
		return nil, errors.New("seal: the previous commitment must be set for every segment but sequence 0")
	}
	var start int64
	if !p.Start.IsZero() {
		start = p.Start.UnixNano()
	}
	h := &Header{
		Suite:       suite,
		Device:      device.Public(),
		RecordingID: p.RecordingID,
		Sequence:    p.Sequence,
		Prev:        p.Prev,
		StartUnixNs: start,
		Codec:       p.Codec,
	}
	key := make([]byte, stream.KeySize)
	defer clear(key)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	total := h.encodedSize(len(recipients))
	h.stanzas = make([]stanza, len(recipients))
	prefix := h.prefix(total)
	info := append([]byte(wrapInfo), prefix...)
	raw := prefix
	for i, r := range recipients {
		ct, err := hpke.Seal(r.pk, wrapKDF, wrapAEAD, info, key)
		if err != nil {
			return nil, fmt.Errorf("seal: wrap segment key for recipient %d: %w", i+1, err)
		}
		raw = append(raw, ct...)
	}
	if len(raw) != total {
		panic("crypto: header size mismatch")
	}
	h.raw = raw

	w := &Writer{dst: dst, header: h, hash: blake3.New(), device: device}
	w.hash.Write(raw)
	if _, err := dst.Write(raw); err != nil {
		return nil, fmt.Errorf("seal: write header: %w", err)
	}
	sw, err := stream.NewWriter(key, raw, &commitTee{w: w, dst: dst})
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	w.stream = sw
	return w, nil
}

// commitTee hashes everything written after the header, and remembers the
// commitment from the Cobblestone prefix (the first write).
type commitTee struct {
	w    *Writer
	dst  io.Writer
	seen bool
}

func (t *commitTee) Write(p []byte) (int, error) {
	if !t.seen {
		t.seen = true
		copy(t.w.commitment[:], p[stream.SaltSize:stream.PrefixSize])
	}
	t.w.hash.Write(p)
	return t.dst.Write(p)
}

// Header returns the segment's header.
func (w *Writer) Header() *Header { return w.header }

// Commitment returns the segment's key commitment, the link the next
// segment of the recording stores as Prev.
func (w *Writer) Commitment() [CommitmentSize]byte { return w.commitment }

// SetLast marks the segment as the last of its recording. The mark is in
// the signed trailer, so it can be decided after the header is written.
func (w *Writer) SetLast() { w.last = true }

// SetEnd marks the segment as the last of its recording and records why the
// recording ended, in the signed trailer. An invalid reason panics.
func (w *Writer) SetEnd(reason EndReason) {
	if !reason.valid() {
		panic(fmt.Sprintf("crypto: end reason %d is not defined", reason))
	}
	w.last, w.end = true, reason
}

// Write seals media bytes; every full 16 KiB chunk is sealed at once.
func (w *Writer) Write(p []byte) (int, error) { return w.stream.Write(p) }

// Flush hands every complete chunk to dst so that the caller can fsync at
// a media-fragment boundary. At most one partial chunk stays in memory.
func (w *Writer) Flush() error { return w.stream.Flush() }

// Close seals the final chunk, signs the segment and writes the trailer.
// It zeroes the payload keys; it does not close dst.
func (w *Writer) Close() error {
	if w.closed {
		return stream.ErrClosed
	}
	w.closed = true
	if err := w.stream.Close(); err != nil {
		return fmt.Errorf("seal: %w", err)
	}
	flags := byte(0)
	if w.last {
		flags |= FlagLast | byte(w.end)<<endShift
	}
	trailer := make([]byte, 0, TrailerSize)
	trailer = append(trailer, trailerMagic...)
	trailer = append(trailer, Version, flags)
	w.hash.Write(trailer)
	trailer = append(trailer, ed25519.Sign(w.device.priv, signedMessage(w.hash))...)
	if _, err := w.dst.Write(trailer); err != nil {
		return fmt.Errorf("seal: write trailer: %w", err)
	}
	return nil
}

// signedMessage is what the device signs: a domain label and the BLAKE3
// hash of every byte before the signature.
func signedMessage(h hash.Hash) []byte {
	return h.Sum([]byte(signDomain))
}
