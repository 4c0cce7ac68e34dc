package crypto

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hpke"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/zeebo/blake3"

	"github.com/uploadbox/uploadbox/crypto/internal/stream"
)

// Outcome is the result of reading a whole segment.
type Outcome int

// The three outcomes of opening or verifying a segment.
const (
	OK Outcome = iota
	Truncated
	Corrupt
)

func (o Outcome) String() string {
	switch o {
	case OK:
		return "OK"
	case Truncated:
		return "TRUNCATED"
	default:
		return "CORRUPT"
	}
}

// OutcomeOf classifies an error from Reader or Verify.
func OutcomeOf(err error) Outcome {
	switch {
	case err == nil:
		return OK
	case errors.Is(err, ErrTruncated):
		return Truncated
	default:
		return Corrupt
	}
}

// Trailer is the signed end of a complete segment.
type Trailer struct {
	Flags     byte
	Signature []byte
}

// Last reports whether the segment is the last of its recording.
func (t *Trailer) Last() bool { return t.Flags&FlagLast != 0 }

// End returns why the recording ended, as the last segment's trailer says;
// EndUnknown on other segments and on segments sealed before end reasons
// were defined.
func (t *Trailer) End() EndReason { return EndReason(t.Flags & endMask >> endShift) }

// splitter hides the final TrailerSize bytes of src from the payload
// reader. At the end it checks that they look like a trailer: if they do,
// the payload ends there (io.EOF); if not, the segment has no end and the
// payload reader gets stream.ErrUnterminated. Everything it releases is
// hashed for the signature check.
type splitter struct {
	src     io.Reader
	buf     []byte
	r, w    int
	srcDone bool
	srcErr  error // non-EOF read error
	end     error // terminal error once pending bytes are released
	trailer []byte
	hash    hash.Hash
}

func newSplitter(src io.Reader, h hash.Hash) *splitter {
	return &splitter{src: src, buf: make([]byte, 64<<10), hash: h}
}

func (s *splitter) Read(p []byte) (int, error) {
	for {
		if s.srcErr != nil {
			return 0, s.srcErr
		}
		pending := s.w - s.r
		if s.srcDone {
			if s.end == nil {
				s.end = stream.ErrUnterminated
				if pending >= TrailerSize && bytes.HasPrefix(s.buf[s.w-TrailerSize:s.w], []byte(trailerMagic)) {
					s.trailer = bytes.Clone(s.buf[s.w-TrailerSize : s.w])
					s.w -= TrailerSize
					s.end = io.EOF
				}
			}
			if s.w > s.r {
				return s.release(p, s.w-s.r), nil
			}
			return 0, s.end
		}
		if pending > TrailerSize {
			return s.release(p, pending-TrailerSize), nil
		}
		// Refill: keep the held-back bytes at the front.
		copy(s.buf, s.buf[s.r:s.w])
		s.w, s.r = pending, 0
		n, err := s.src.Read(s.buf[s.w:])
		s.w += n
		if err == io.EOF {
			s.srcDone = true
		} else if err != nil {
			s.srcErr = err
		}
	}
}

func (s *splitter) release(p []byte, max int) int {
	n := copy(p, s.buf[s.r:s.r+min(max, len(p))])
	s.hash.Write(p[:n])
	s.r += n
	return n
}

// probe finds where a final chunk could end inside an unterminated tail:
// before every trailer magic followed by more than a whole trailer, and
// before the last TrailerSize bytes. If one of those authenticates as the
// final chunk, the segment was complete and something after it (or its
// trailer) was damaged. A magic with less than a trailer after it is a
// trailer cut short, which is a truncation.
func probe(tail []byte) []int {
	var ends []int
	for i := stream.TagSize; i+TrailerSize < len(tail); i++ {
		if bytes.HasPrefix(tail[i:], []byte(trailerMagic)) {
			ends = append(ends, i)
		}
	}
	if l := len(tail) - TrailerSize; l >= stream.TagSize {
		ends = append(ends, l)
	}
	return ends
}

// cutTrailer finds where a final chunk could end in rest, the last bytes
// of an unterminated segment, if what follows it is a trailer cut short:
// fewer than TrailerSize bytes that begin as a writer writes a trailer
// (the magic, version 1, known flags, as far as they reach).
func cutTrailer(rest []byte) []int {
	var ends []int
	for l := max(stream.TagSize, len(rest)-(TrailerSize-1)); l < len(rest); l++ {
		if trailerStart(rest[l:]) {
			ends = append(ends, l)
		}
	}
	return ends
}

// trailerStart reports whether b, shorter than a trailer, is how a trailer
// begins.
func trailerStart(b []byte) bool {
	n := min(len(b), len(trailerMagic))
	if string(b[:n]) != trailerMagic[:n] {
		return false
	}
	if len(b) > 6 && b[6] != Version {
		return false
	}
	return len(b) <= 7 || checkTrailerFlags(b[7]) == nil
}

// checkTrailerFlags accepts the last flag and, with it, a defined end
// reason (format.md §6).
func checkTrailerFlags(flags byte) error {
	if flags&^(FlagLast|endMask) != 0 {
		return fmt.Errorf("%w: trailer has unknown flags %#02x", ErrCorrupt, flags)
	}
	if end := EndReason(flags & endMask >> endShift); end != EndUnknown && (flags&FlagLast == 0 || !end.valid()) {
		return fmt.Errorf("%w: trailer flags %#02x: end reason %d on a segment that is not last, or undefined", ErrCorrupt, flags, end)
	}
	return nil
}

// Reader opens a segment with an organisation identity. It releases only
// authenticated plaintext; errors are sticky. The final io.EOF comes only
// after the device signature over the whole file verified.
type Reader struct {
	header  *Header
	split   *splitter
	payload *stream.Reader
	hash    hash.Hash
	trailer *Trailer
	commit  [CommitmentSize]byte
	err     error
}

// NewReader parses the header of src, unwraps the segment key with the
// first identity that opens a stanza, and checks the key commitment before
// any chunk is decrypted.
func NewReader(src io.Reader, identities ...*Identity) (*Reader, error) {
	return newReader(src, nil, identities)
}

// newReader is NewReader that, when device is not nil, first refuses a
// segment whose header names another device (ErrWrongDevice), before any
// key is tried.
func newReader(src io.Reader, device *DevicePublicKey, identities []*Identity) (*Reader, error) {
	h := blake3.New()
	hdr, err := ReadHeader(src)
	if err != nil {
		return nil, err
	}
	if device != nil {
		if err := hdr.CheckDevice(device); err != nil {
			return nil, err
		}
	}
	h.Write(hdr.raw)
	key, err := unwrap(hdr, identities)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	return newKeyedReader(src, hdr, key, h)
}

// newKeyedReader reads the payload and trailer of src, whose header hdr
// was read already and hashed into h, with the unwrapped segment key.
func newKeyedReader(src io.Reader, hdr *Header, key []byte, h hash.Hash) (*Reader, error) {
	sp := newSplitter(src, h)
	tee := &prefixTee{src: sp}
	payload, err := stream.NewReader(key, hdr.raw, tee)
	switch {
	case errors.Is(err, stream.ErrTruncated):
		return nil, fmt.Errorf("%w: file ends inside the salt and commitment", ErrTruncated)
	case errors.Is(err, stream.ErrCommitment):
		return nil, fmt.Errorf("%w: key commitment does not match the header (modified salt, commitment or header)", ErrCorrupt)
	case err != nil:
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	payload.Probe = probe
	payload.Cut, payload.CutWindow = cutTrailer, TrailerSize-1
	r := &Reader{header: hdr, split: sp, payload: payload, hash: h}
	copy(r.commit[:], tee.prefix[stream.SaltSize:])
	return r, nil
}

// prefixTee keeps a copy of the salt and commitment as they are read.
type prefixTee struct {
	src    io.Reader
	prefix []byte
}

func (t *prefixTee) Read(p []byte) (int, error) {
	n, err := t.src.Read(p)
	if need := stream.PrefixSize - len(t.prefix); need > 0 {
		t.prefix = append(t.prefix, p[:min(n, need)]...)
	}
	return n, err
}

func unwrap(hdr *Header, identities []*Identity) ([]byte, error) {
	if len(identities) == 0 {
		return nil, errors.New("open: no identity given")
	}
	info := append([]byte(wrapInfo), hdr.raw[:len(hdr.raw)-len(hdr.stanzas)*(suites[hdr.Suite].encSize+wrappedKeySize)]...)
	for _, id := range identities {
		if id.suite != hdr.Suite {
			continue
		}
		for _, s := range hdr.stanzas {
			ct := append(bytes.Clone(s.enc), s.wrapped...)
			key, err := hpke.Open(id.sk, wrapKDF, wrapAEAD, info, ct)
			if err == nil && len(key) == stream.KeySize {
				return key, nil
			}
		}
	}
	return nil, fmt.Errorf("%w; the segment is %s with %d recipient(s): check the identity file", ErrNoIdentity, hdr.Suite, len(hdr.stanzas))
}

// Header returns the segment's authenticated header.
func (r *Reader) Header() *Header { return r.header }

// Commitment returns the segment's key commitment (its chain link).
func (r *Reader) Commitment() [CommitmentSize]byte { return r.commit }

// Trailer returns the verified trailer after Read returned io.EOF, else nil.
func (r *Reader) Trailer() *Trailer { return r.trailer }

// Read returns authenticated plaintext. It fails with ErrTruncated (the
// authentic prefix was released) or ErrCorrupt, and keeps failing.
func (r *Reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.payload.Read(p)
	if err == nil {
		return n, nil
	}
	r.err = r.finish(err)
	return n, r.err
}

func (r *Reader) finish(err error) error {
	switch {
	case err == io.EOF:
		t, verr := checkTrailer(r.split.trailer, r.header, r.hash)
		if verr != nil {
			return verr
		}
		r.trailer = t
		return io.EOF
	case errors.Is(err, stream.ErrTerminatorCut):
		return fmt.Errorf("%w: the file ends inside the trailer (cut while the segment was closed); the full chunks were released, the final chunk is not", ErrTruncated)
	case errors.Is(err, stream.ErrTruncated) && r.split.trailer != nil:
		// A power cut cannot leave a trailer after a missing final chunk.
		return fmt.Errorf("%w: the trailer follows no valid final chunk", ErrCorrupt)
	case errors.Is(err, stream.ErrTruncated):
		return fmt.Errorf("%w: the end of the segment is missing (no final chunk or trailer); the authentic prefix was released", ErrTruncated)
	case errors.Is(err, stream.ErrAuth):
		return fmt.Errorf("%w: a chunk failed authentication (modified, reordered or foreign data)", ErrCorrupt)
	case errors.Is(err, stream.ErrTrailing):
		return fmt.Errorf("%w: data after the end of the segment, or a damaged trailer", ErrCorrupt)
	case errors.Is(err, stream.ErrTooLong):
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	default:
		return fmt.Errorf("read segment: %w", err)
	}
}

// checkTrailer verifies the trailer's signature over everything before it.
func checkTrailer(raw []byte, hdr *Header, h hash.Hash) (*Trailer, error) {
	if len(raw) != TrailerSize || string(raw[:len(trailerMagic)]) != trailerMagic {
		return nil, fmt.Errorf("%w: trailer is missing", ErrCorrupt)
	}
	if raw[6] != Version {
		return nil, fmt.Errorf("%w: trailer version %d is not supported", ErrCorrupt, raw[6])
	}
	flags := raw[7]
	if err := checkTrailerFlags(flags); err != nil {
		return nil, err
	}
	h.Write(raw[:8])
	if !ed25519.Verify(hdr.Device.pub, signedMessage(h), raw[8:]) {
		return nil, fmt.Errorf("%w: device signature does not verify (the file was modified or signed by another device)", ErrCorrupt)
	}
	return &Trailer{Flags: flags, Signature: bytes.Clone(raw[8:])}, nil
}

// Close erases the payload keys. Further reads fail.
func (r *Reader) Close() error {
	r.payload.Close()
	if r.err == nil || r.err == io.EOF {
		r.err = stream.ErrClosed
	}
	return nil
}

// Info is what a keyless verification learns about a segment.
type Info struct {
	Header     *Header
	Commitment [CommitmentSize]byte
	Trailer    *Trailer
	Size       int64 // bytes read, the whole file when complete
	// FileHash is the segment hash: BLAKE3-256 of the Size bytes read
	// (the whole file, signature included, when complete). Verify and
	// Verifier.Finish set it; Open does not.
	FileHash [32]byte
}

// NoMedia reports whether a segment that did not verify complete ends
// before its first full payload chunk: nothing in it can be decrypted, as
// when the box stopped right after writing the header.
func (i *Info) NoMedia() bool {
	if i == nil || i.Header == nil {
		return false
	}
	if i.Trailer != nil {
		return false
	}
	return i.Size-int64(len(i.Header.raw))-stream.PrefixSize < stream.EncChunkSize
}

// MediaBytes is how many plaintext bytes the segment holds, from its
// length alone: 0 for an empty end segment (§6). For a segment without its
// trailer (TRUNCATED) it counts the chunk-sized pieces that arrived, one
// chunk high when the final chunk and a cut trailer fill a chunk's length.
func (i *Info) MediaBytes() int64 {
	if i == nil || i.Header == nil {
		return 0
	}
	n := i.Size - int64(len(i.Header.raw)) - stream.PrefixSize
	if i.Trailer == nil {
		return max(0, n/stream.EncChunkSize*stream.ChunkSize)
	}
	n -= TrailerSize
	return max(0, n-stream.TagSize*(n/stream.EncChunkSize+1))
}
