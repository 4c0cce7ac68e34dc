package stream

import (
	"errors"
	"io"
)

// ErrUnterminated is returned by a source to tell the Reader that the data
// stops without the end the outer format requires (for example a missing
// signature trailer). The Reader then decrypts the remaining full chunks as
// ordinary chunks and reports ErrTruncated, never a final chunk.
var ErrUnterminated = errors.New("source ended without its terminator")

// Reader decrypts a Cobblestone-256 message. It releases a chunk's
// plaintext only after the chunk authenticated, and errors are sticky.
type Reader struct {
	keys  *keys
	src   io.Reader
	index uint64
	enc   []byte // ciphertext buffer, EncChunkSize
	plain []byte // authenticated plaintext not yet returned
	pbuf  []byte // backing array of plain
	err   error  // sticky; io.EOF after a valid final chunk

	// Probe, if set, is called with the leftover bytes when the source is
	// unterminated. It returns candidate lengths of a final chunk inside
	// tail; if one of them authenticates, the message had an end after all
	// and the Reader fails with ErrTrailing instead of ErrTruncated.
	Probe func(tail []byte) []int

	// Cut, if set, recognises a message whose end was cut inside the
	// outer terminator, as by a power cut while it was written. It is
	// called when the source is unterminated and its last bytes rest (a
	// full-size piece that failed as a non-final chunk and fewer than
	// CutWindow bytes after it, or the leftover tail) may be a final chunk
	// followed by the start of the terminator; it returns the candidate
	// final-chunk lengths. If one authenticates, the Reader fails with
	// ErrTerminatorCut (an ErrTruncated) instead of ErrAuth; the final
	// chunk's plaintext is not released.
	Cut       func(rest []byte) []int
	CutWindow int

	// Opened counts chunks that were passed to AES-GCM Open.
	Opened int
}

// NewReader reads the salt and commitment from src and checks the
// commitment before any chunk is read.
func NewReader(inputKey, context []byte, src io.Reader) (*Reader, error) {
	if len(inputKey) != KeySize {
		return nil, ErrKeySize
	}
	var prefix [PrefixSize]byte
	if _, err := io.ReadFull(src, prefix[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, ErrUnterminated) {
			return nil, ErrTruncated
		}
		return nil, err
	}
	k, commitment, err := derive(inputKey, prefix[:SaltSize], context)
	if err != nil {
		return nil, err
	}
	if err := checkCommitment(commitment, prefix[SaltSize:]); err != nil {
		k.zero()
		return nil, err
	}
	return &Reader{
		keys: k,
		src:  src,
		enc:  make([]byte, EncChunkSize),
		pbuf: make([]byte, 0, ChunkSize),
	}, nil
}

// Read returns authenticated plaintext. After the final chunk it returns
// io.EOF; on failure it returns the same error forever.
func (r *Reader) Read(p []byte) (int, error) {
	for len(r.plain) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		r.err = r.next()
	}
	n := copy(p, r.plain)
	r.plain = r.plain[n:]
	return n, nil
}

// readFull is io.ReadFull that keeps the source's own terminal error.
func (r *Reader) readFull(b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := r.src.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// next decrypts one chunk into r.plain, or returns the terminal state.
func (r *Reader) next() error {
	if r.index >= maxChunks {
		return ErrTooLong
	}
	n, err := r.readFull(r.enc)
	switch {
	case n == EncChunkSize:
		// A full-size chunk is never final, whatever follows it.
		err := r.open(r.enc)
		if err == ErrAuth && r.Cut != nil {
			return r.cutAfterFull()
		}
		return err
	case err == io.EOF:
		if n == 0 {
			return ErrTruncated // the final short chunk is missing
		}
		if n < TagSize {
			return ErrTruncated
		}
		if err := r.open(r.enc[:n]); err != nil {
			return err
		}
		return io.EOF
	case errors.Is(err, ErrUnterminated):
		if r.Probe != nil {
			for _, l := range r.Probe(r.enc[:n]) {
				if l >= TagSize && l < EncChunkSize {
					r.Opened++
					if _, oerr := r.keys.open(r.pbuf[:0], r.enc[:l], r.index); oerr == nil {
						clear(r.pbuf[:cap(r.pbuf)])
						return ErrTrailing
					}
				}
			}
		}
		if r.cutFinal(r.enc[:n]) {
			return ErrTerminatorCut
		}
		return ErrTruncated
	case err == io.ErrUnexpectedEOF:
		return ErrTruncated
	default:
		return err
	}
}

// cutAfterFull decides what a full-size piece that failed as a non-final
// chunk is: when the source ends unterminated less than CutWindow bytes
// later and a final chunk followed by a cut terminator authenticates in
// it, the message was whole up to a cut inside its terminator
// (ErrTerminatorCut); otherwise the chunk is bad (ErrAuth).
func (r *Reader) cutAfterFull() error {
	rest := make([]byte, EncChunkSize+r.CutWindow)
	copy(rest, r.enc)
	m, err := r.readFull(rest[EncChunkSize:])
	if errors.Is(err, ErrUnterminated) && m < r.CutWindow && r.cutFinal(rest[:EncChunkSize+m]) {
		return ErrTerminatorCut
	}
	return ErrAuth
}

// cutFinal reports whether one of Cut's candidate prefixes of rest opens
// as the final chunk. The plaintext is discarded.
func (r *Reader) cutFinal(rest []byte) bool {
	if r.Cut == nil {
		return false
	}
	for _, l := range r.Cut(rest) {
		if l >= TagSize && l < EncChunkSize && l <= len(rest) {
			r.Opened++
			_, oerr := r.keys.open(r.pbuf[:0], rest[:l], r.index)
			clear(r.pbuf[:cap(r.pbuf)])
			if oerr == nil {
				return true
			}
		}
	}
	return false
}

// open authenticates one chunk and makes its plaintext available.
func (r *Reader) open(c []byte) error {
	r.Opened++
	pt, err := r.keys.open(r.pbuf[:0], c, r.index)
	if err != nil {
		return ErrAuth
	}
	r.index++
	r.plain = pt
	return nil
}

// Close zeroes the key material. Further reads fail.
func (r *Reader) Close() error {
	if r.keys != nil {
		r.keys.zero()
	}
	clear(r.pbuf[:cap(r.pbuf)])
	r.plain = nil
	if r.err == nil || r.err == io.EOF {
		r.err = ErrClosed
	}
	return nil
}
