package crypto

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/uploadbox/uploadbox/crypto/internal/stream"
)

// Every Writer runs an output goroutine until Close; goleak catches a
// Writer that is not closed on some path.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var allSuites = []Suite{SuiteXWing, SuiteX25519, SuiteP256}

// Payload geometry, named for readability in offsets.
const (
	chunk    = stream.ChunkSize
	encChunk = stream.EncChunkSize
	tagSize  = stream.TagSize
	prefix   = stream.PrefixSize
)

// plaintext returns n deterministic pseudo-random bytes that differ per seed.
func plaintext(seed string, n int) []byte {
	s := sha256.Sum256([]byte(seed))
	r := rand.NewChaCha8(s)
	b := make([]byte, n)
	r.Read(b)
	return b
}

func newIdentities(t testing.TB, suite Suite, n int) ([]*Identity, []*Recipient) {
	t.Helper()
	var ids []*Identity
	var rcs []*Recipient
	for range n {
		id, err := GenerateIdentity(suite)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
		rcs = append(rcs, id.Recipient())
	}
	return ids, rcs
}

func newDevice(t testing.TB) *DeviceKey {
	t.Helper()
	dev, err := GenerateDeviceKey()
	if err != nil {
		t.Fatal(err)
	}
	return dev
}

// testParams returns the Params of segment seq of a recording; prev must be
// the previous segment's commitment (ignored for seq 0).
func testParams(seed string, seq uint64, prev [CommitmentSize]byte) Params {
	p := Params{
		Sequence: seq,
		Start:    time.Unix(1_700_000_000+int64(seq)*10, 123456789),
		Codec:    "video/mp4",
	}
	copy(p.RecordingID[:], plaintext("recording "+seed, 16))
	if seq != 0 {
		p.Prev = prev
	}
	return p
}

// sealOpts controls how sealSegment feeds the Writer.
type sealOpts struct {
	writeSize  int // bytes per Write; 0 means all at once
	flushEvery int // call Flush after every flushEvery writes; 0 never
	last       bool
	end        EndReason // with last: the end reason in the trailer
}

// sealSegment seals msg and returns the segment and the closed Writer.
func sealSegment(t testing.TB, rcs []*Recipient, dev *DeviceKey, p Params, msg []byte, o sealOpts) ([]byte, *Writer) {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, rcs, dev, p)
	if err != nil {
		t.Fatal(err)
	}
	ws := o.writeSize
	if ws <= 0 {
		ws = max(len(msg), 1)
	}
	writes := 0
	for rest := msg; len(rest) > 0; {
		n := min(ws, len(rest))
		if m, err := w.Write(rest[:n]); err != nil || m != n {
			w.Close()
			t.Fatalf("Write(%d bytes) = %d, %v", n, m, err)
		}
		rest = rest[n:]
		writes++
		if o.flushEvery > 0 && writes%o.flushEvery == 0 {
			if err := w.Flush(); err != nil {
				w.Close()
				t.Fatalf("Flush: %v", err)
			}
			// After Flush the destination holds whole chunks only.
			if got := buf.Len() - len(w.Header().Bytes()) - prefix; got%encChunk != 0 {
				w.Close()
				t.Fatalf("after Flush the payload holds %d bytes, not whole chunks", got)
			}
		}
	}
	if o.last {
		w.SetEnd(o.end)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	return buf.Bytes(), w
}

// result is everything observable from opening a segment.
type result struct {
	reader   *Reader
	newErr   error  // from NewReader
	released []byte // plaintext returned by Read before the first error
	err      error  // the terminal error: newErr, or the first non-nil Read error (nil for io.EOF)
	sticky   error  // non-nil if a Read after the terminal error misbehaved
}

// openSegment runs NewReader and reads to the end with an odd buffer size,
// then checks that the terminal state is sticky.
func openSegment(seg []byte, ids ...*Identity) result {
	var res result
	r, err := NewReader(bytes.NewReader(seg), ids...)
	if err != nil {
		res.newErr, res.err = err, err
		return res
	}
	return drain(r)
}

// drain reads r to its end with an odd buffer size, checks that the
// terminal state is sticky and closes r.
func drain(r *Reader) result {
	res := result{reader: r}
	buf := make([]byte, 7000)
	for {
		n, err := r.Read(buf)
		res.released = append(res.released, buf[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			res.err = err
			break
		}
	}
	for range 2 {
		n, err := r.Read(buf)
		switch {
		case n != 0:
			res.sticky = fmt.Errorf("a Read after the end returned %d bytes", n)
		case res.err == nil && err != io.EOF:
			res.sticky = fmt.Errorf("a Read after io.EOF returned %v", err)
		case res.err != nil && err != res.err:
			res.sticky = fmt.Errorf("a Read after %q returned %v", res.err, err)
		}
	}
	r.Close()
	return res
}

// outcome names an error the way the vectors manifest does.
func outcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrNoIdentity):
		return "no-identity"
	case errors.Is(err, ErrTruncated):
		return "truncated"
	case errors.Is(err, ErrCorrupt):
		return "corrupt"
	default:
		return "error"
	}
}

func verifyBytes(seg []byte, dev *DevicePublicKey) (*Info, error) {
	return Verify(bytes.NewReader(seg), dev)
}

// layout locates the parts of a segment with a complete trailer.
type layout struct {
	hdr     int // header length; the salt starts here
	chunks  int // offset of chunk 0
	full    int // number of full chunks
	final   int // offset of the final chunk
	trailer int // offset of the trailer
}

func layoutOf(t testing.TB, seg []byte) layout {
	t.Helper()
	if len(seg) < 12 {
		t.Fatalf("segment of %d bytes has no header", len(seg))
	}
	l := layout{hdr: int(binary.BigEndian.Uint16(seg[10:12]))}
	l.chunks = l.hdr + prefix
	l.trailer = len(seg) - TrailerSize
	l.full = (l.trailer - l.chunks) / encChunk
	l.final = l.chunks + l.full*encChunk
	if l.trailer-l.final < tagSize || l.trailer-l.final >= encChunk {
		t.Fatalf("segment of %d bytes has no valid final chunk", len(seg))
	}
	return l
}

func (l layout) chunk(i int) (int, int) { return l.chunks + i*encChunk, l.chunks + (i+1)*encChunk }

func flipBit(b []byte, bit int) []byte {
	c := bytes.Clone(b)
	c[bit/8] ^= 1 << (bit % 8)
	return c
}

func concat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

func setByte(b []byte, at int, v byte) []byte {
	c := bytes.Clone(b)
	c[at] = v
	return c
}
