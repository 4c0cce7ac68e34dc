package crypto

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/zeebo/blake3"
)

// TestCutEveryByteAtTheEnd cuts real sealed segments at every byte from the
// last chunk through the end of the trailer, as a power cut can, for final
// chunks of every kind: short, one whose final chunk and
// trailer fill exactly one 16400-byte piece, and the longest (16399 bytes,
// where any trailer byte completes a piece that fails as a full chunk). Every
// cut is TRUNCATED with the full chunks wholly before it released and the
// final chunk withheld; only the whole file is OK. Keyless verification says
// TRUNCATED for every cut as well.
func TestCutEveryByteAtTheEnd(t *testing.T) {
	ids, _ := newIdentities(t, SuiteX25519, 1)
	dev := newDevice(t)
	finals := []int{0, 100, chunk - TrailerSize, chunk - TrailerSize + 1, chunk - 1}
	// A last segment's trailer carries flags beyond bit 0 (its end
	// reason): a cut inside it is a cut trailer all the same.
	for i, final := range append(finals, chunk-1) {
		size := chunk + final
		opts, name := sealOpts{}, fmt.Sprintf("final chunk of %d bytes", final+tagSize)
		if i == len(finals) {
			opts, name = sealOpts{last: true, end: EndCrashed}, name+", last, box crashed"
		}
		t.Run(name, func(t *testing.T) {
			msg := plaintext(t.Name(), size)
			p := testParams(t.Name(), 0, [CommitmentSize]byte{})
			seg, _ := sealSegment(t, []*Recipient{ids[0].Recipient()}, dev, p, msg, opts)
			l := layoutOf(t, seg)
			if l.full != 1 {
				t.Fatalf("%d full chunks, want 1", l.full)
			}
			// Every byte of the final chunk where it is the longest; the
			// other cases differ only in its last bytes and the trailer.
			from := l.final
			if final != chunk-1 {
				from = max(l.final, l.trailer-2*TrailerSize)
			}
			// One header parse and key unwrap for all cuts; NewReader does
			// the same and then this.
			hdr, err := ReadHeader(bytes.NewReader(seg))
			if err != nil {
				t.Fatal(err)
			}
			key, err := unwrap(hdr, ids)
			if err != nil {
				t.Fatal(err)
			}
			open := func(cut []byte) result {
				h := blake3.New()
				h.Write(hdr.raw)
				r, err := newKeyedReader(bytes.NewReader(cut[l.hdr:]), hdr, key, h)
				if err != nil {
					return result{newErr: err, err: err}
				}
				return drain(r)
			}
			for at := from; at <= len(seg); at++ {
				cut := seg[:at]
				res := open(cut)
				_, verr := verifyBytes(cut, dev.Public())
				if res.sticky != nil {
					t.Fatalf("cut at %d: %v", at, res.sticky)
				}
				if at == len(seg) {
					if res.err != nil || verr != nil || !bytes.Equal(res.released, msg) {
						t.Fatalf("whole file: open %v, verify %v, released %d of %d bytes", res.err, verr, len(res.released), len(msg))
					}
					continue
				}
				full := min((at-l.chunks)/encChunk, l.full)
				if got := outcome(res.err); got != "truncated" {
					t.Fatalf("cut at %d (%s): open says %s (%v), want truncated", at, where(l, at), got, res.err)
				}
				if !bytes.Equal(res.released, msg[:full*chunk]) {
					t.Fatalf("cut at %d (%s): released %d bytes, want the %d full chunks before the cut (%d bytes)", at, where(l, at), len(res.released), full, full*chunk)
				}
				if got := outcome(verr); got != "truncated" {
					t.Fatalf("cut at %d (%s): verify says %s (%v), want truncated", at, where(l, at), got, verr)
				}
			}
		})
	}
}

// where names the part of a segment a cut at byte at falls in.
func where(l layout, at int) string {
	switch {
	case at >= l.trailer:
		return fmt.Sprintf("%d bytes into the trailer", at-l.trailer)
	case at >= l.final:
		return fmt.Sprintf("%d bytes into the final chunk", at-l.final)
	default:
		return fmt.Sprintf("%d bytes into chunk %d", (at-l.chunks)%encChunk, (at-l.chunks)/encChunk)
	}
}
