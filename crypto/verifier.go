package crypto

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/zeebo/blake3"

	"github.com/uploadbox/uploadbox/crypto/internal/stream"
)

// Verifier is Verify fed with the bytes as they arrive: write a segment's
// bytes to it in order, in pieces of any size, and Finish gives what Verify
// would have said about the whole. It hashes every byte once and holds
// O(1) memory: the header, the salt and commitment, the last TrailerSize
// bytes and the BLAKE3 state.
//
// Its BLAKE3 state lives in memory only: github.com/zeebo/blake3 cannot
// serialise it, and the format fixes the signature hash over the whole
// file, so a Verifier cannot be saved and resumed in another process.
type Verifier struct {
	n    int64  // bytes written
	head []byte // the first bytes, until the header and the prefix after it are complete
	hdr  *Header
	herr error // the header's parse error, once certain
	// h has every byte but the last min(n, TrailerSize), which wait in
	// tail because they may be the trailer.
	h    *blake3.Hasher
	tail []byte
}

// NewVerifier returns a Verifier for one segment.
func NewVerifier() *Verifier {
	return &Verifier{h: blake3.New(), tail: make([]byte, 0, 2*TrailerSize)}
}

// Size is the number of bytes written so far.
func (v *Verifier) Size() int64 { return v.n }

// Write takes the next bytes of the segment; it never fails.
func (v *Verifier) Write(p []byte) (int, error) {
	n := len(p)
	v.n += int64(n)
	v.keepHead(p)
	// Everything but the last TrailerSize bytes of the stream is hashed.
	if len(p) > TrailerSize {
		v.hashOut(v.tail)
		v.tail = v.tail[:0]
		v.hashOut(p[:len(p)-TrailerSize])
		p = p[len(p)-TrailerSize:]
	}
	v.tail = append(v.tail, p...)
	if over := len(v.tail) - TrailerSize; over > 0 {
		v.hashOut(v.tail[:over])
		v.tail = append(v.tail[:0], v.tail[over:]...)
	}
	return n, nil
}

func (v *Verifier) hashOut(p []byte) { v.h.Write(p) }

// FileHash is the segment hash of the bytes written so far: BLAKE3-256
// of every one of them, the trailer included (docs/format.md §6). It
// costs the last TrailerSize bytes only: the state that hashed the rest
// for the signature digest goes on from a copy.
func (v *Verifier) FileHash() [32]byte {
	h := v.h.Clone()
	h.Write(v.tail)
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// keepHead buffers the header and the salt and commitment after it.
func (v *Verifier) keepHead(p []byte) {
	if v.herr != nil {
		return
	}
	if v.hdr != nil {
		if need := len(v.hdr.raw) + stream.PrefixSize - len(v.head); need > 0 {
			v.head = append(v.head, p[:min(need, len(p))]...)
		}
		return
	}
	before := len(v.head)
	v.head = append(v.head, p[:min(len(p), MaxHeaderSize+stream.PrefixSize-before)]...)
	hdr, err := ReadHeader(bytes.NewReader(v.head))
	switch {
	case errors.Is(err, ErrTruncated):
		// More bytes may complete it.
	case err != nil:
		v.herr = err
		v.head = nil
	default:
		v.hdr = hdr
		v.head = v.head[:min(len(v.head), len(hdr.raw)+stream.PrefixSize)]
	}
}

// Finish reports on the bytes written so far as Verify reports on a
// reader that ends there, with the same Info, outcomes and errors. If
// device is not nil, the header's device must be it. The Verifier is not
// changed: more bytes may be written and Finish called again.
func (v *Verifier) Finish(device *DevicePublicKey) (*Info, error) {
	if v.hdr == nil {
		if v.herr != nil {
			return nil, v.herr
		}
		_, err := ReadHeader(bytes.NewReader(v.head))
		return nil, err
	}
	hdr := v.hdr
	if device != nil {
		if err := hdr.CheckDevice(device); err != nil {
			return &Info{Header: hdr}, err // as Verify, which stops reading there
		}
	}
	info := &Info{Header: hdr, Size: v.n, FileHash: v.FileHash()}
	// The rest after the header ends in a trailer when its last
	// TrailerSize bytes begin with the trailer's magic (the splitter's rule).
	rest := v.n - int64(len(hdr.raw))
	terminated := rest >= TrailerSize && len(v.tail) == TrailerSize && bytes.HasPrefix(v.tail, []byte(trailerMagic))
	body := rest
	if terminated {
		body -= TrailerSize
	}
	if body < stream.PrefixSize {
		return info, fmt.Errorf("%w: file ends inside the salt and commitment", ErrTruncated)
	}
	copy(info.Commitment[:], v.head[len(hdr.raw)+stream.SaltSize:])
	if !terminated {
		return info, fmt.Errorf("%w: the trailer is missing", ErrTruncated)
	}
	if n := body - stream.PrefixSize; n%stream.EncChunkSize < stream.TagSize {
		return info, fmt.Errorf("%w: payload length %d has no valid final chunk", ErrCorrupt, n)
	}
	t, err := checkTrailer(v.tail, hdr, v.h.Clone())
	if err != nil {
		return info, err
	}
	info.Trailer = t
	return info, nil
}

// Verify checks a segment without any decryption key: the header parses,
// the payload has a valid Cobblestone length (full chunks and a short final
// chunk), the trailer is present, and the signature verifies with the
// header's device key. If device is not nil, the header's device must be it.
func Verify(src io.Reader, device *DevicePublicKey) (*Info, error) {
	v := NewVerifier()
	if _, err := io.CopyBuffer(v, src, make([]byte, 64<<10)); err != nil {
		if v.herr != nil {
			return nil, v.herr
		}
		info, _ := v.Finish(device)
		return info, fmt.Errorf("read segment: %w", err)
	}
	return v.Finish(device)
}
