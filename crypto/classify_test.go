package crypto

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// TestClassification follows the table of docs/format.md §8.4 row by row:
// the outcome of opening with the key and of keyless verification.
func TestClassification(t *testing.T) {
	f := newX25519Fixture(t)
	l := f.l
	// A final chunk of 16399 bytes: any trailer byte after it completes a
	// 16400-byte piece, which fails as a non-final chunk (step 6); a cut
	// inside the trailer is still TRUNCATED, a damaged one CORRUPT.
	long := &fixture{ids: f.ids, dev: f.dev, p: f.p, msg: plaintext("long", 2*chunk-1)}
	long.seg, long.w = sealSegment(t, []*Recipient{f.ids[0].Recipient()}, f.dev, long.p, long.msg, sealOpts{})
	long.l = layoutOf(t, long.seg)
	other, _ := newIdentities(t, SuiteX25519, 1)
	setHeader := func(off int, v ...byte) []byte {
		s := bytes.Clone(f.seg)
		copy(s[off:], v)
		return s
	}
	u16 := func(v int) []byte { return binary.BigEndian.AppendUint16(nil, uint16(v)) }
	codecAt := fixedSize // first codec byte
	countAt := fixedSize + len(f.p.Codec)
	rows := []struct {
		name     string
		f        *fixture
		seg      []byte
		ids      []*Identity
		open     string
		keyless  string
		released int // chunks released, for truncated outcomes
	}{
		{"empty file", f, nil, nil, "truncated", "truncated", 0},
		{"ends inside the fixed header", f, f.seg[:11], nil, "truncated", "truncated", 0},
		{"ends inside the stanzas", f, f.seg[:l.hdr-1], nil, "truncated", "truncated", 0},
		{"bad magic", f, setHeader(0, 'X'), nil, "corrupt", "corrupt", 0},
		{"version 2", f, setHeader(6, 2), nil, "corrupt", "corrupt", 0},
		{"suite 0", f, setHeader(7, 0), nil, "corrupt", "corrupt", 0},
		{"suite 4", f, setHeader(7, 4), nil, "corrupt", "corrupt", 0},
		{"header flags", f, setHeader(8, 0x80, 0), nil, "corrupt", "corrupt", 0},
		{"header_len 109", f, setHeader(10, u16(109)...), nil, "corrupt", "corrupt", 0},
		{"header_len 8193", f, setHeader(10, u16(8193)...), nil, "corrupt", "corrupt", 0},
		{"header_len one more", f, setHeader(10, u16(l.hdr+1)...), nil, "corrupt", "corrupt", 0},
		{"header_len one less", f, setHeader(10, u16(l.hdr-1)...), nil, "corrupt", "corrupt", 0},
		{"codec_len 65", f, setHeader(codecAt-1, 65), nil, "corrupt", "corrupt", 0},
		{"codec byte 0x7f", f, setHeader(codecAt, 0x7f), nil, "corrupt", "corrupt", 0},
		{"codec byte 0x1f", f, setHeader(codecAt, 0x1f), nil, "corrupt", "corrupt", 0},
		{"zero recipients", f, setHeader(countAt, 0), nil, "corrupt", "corrupt", 0},
		{"five recipients", f, setHeader(countAt, 5), nil, "corrupt", "corrupt", 0},
		{"sequence 0 with a prev", f, setHeader(60, make([]byte, 8)...), nil, "corrupt", "corrupt", 0},
		{"no stanza opens", f, f.seg, other, "no-identity", "ok", 0},
		{"ends inside the salt", f, f.seg[:l.hdr+10], nil, "truncated", "truncated", 0},
		{"ends inside the commitment", f, f.seg[:l.hdr+40], nil, "truncated", "truncated", 0},
		{"commitment mismatch", f, flipBit(f.seg, (l.hdr+30)*8), nil, "corrupt", "corrupt", 0},
		{"power cut in a chunk", f, f.seg[:l.chunks+encChunk+99], nil, "truncated", "truncated", 1},
		{"power cut after the final chunk", f, f.seg[:l.trailer], nil, "truncated", "truncated", 3},
		{"data appended", f, concat(f.seg, make([]byte, 100)), nil, "corrupt", "truncated", 0},
		{"trailer magic damaged", f, flipBit(f.seg, l.trailer*8), nil, "corrupt", "truncated", 0},
		{"cut inside the trailer", f, f.seg[:l.trailer+30], nil, "truncated", "truncated", 3},
		{"cut inside the trailer after a long final chunk", long, long.seg[:long.l.trailer+30], nil, "truncated", "truncated", 1},
		{"damaged cut trailer after a long final chunk", long, flipBit(long.seg[:long.l.trailer+30], long.l.trailer*8), nil, "corrupt", "truncated", 0},
		{"cut trailer with version 2 after a long final chunk", long, setByte(long.seg[:long.l.trailer+30], long.l.trailer+6, 2), nil, "corrupt", "truncated", 0},
		{"cut before the trailer after a long final chunk", long, long.seg[:long.l.trailer], nil, "truncated", "truncated", 1},
		{"trailer after no final chunk", f, concat(f.seg[:l.final], f.seg[l.trailer:]), nil, "corrupt", "corrupt", 0},
		{"trailer after a 15-byte final chunk", f, concat(f.seg[:l.final+15], f.seg[l.trailer:]), nil, "corrupt", "corrupt", 0},
		{"a chunk fails authentication", f, flipBit(f.seg, (l.chunks+2*encChunk+7)*8), nil, "corrupt", "corrupt", 0},
		{"trailer version 2", f, resign(f.seg, f.dev, 2, 0), nil, "corrupt", "corrupt", 0},
		{"unknown trailer flag", f, resign(f.seg, f.dev, Version, 0x40), nil, "corrupt", "corrupt", 0},
		{"bad signature", f, flipBit(f.seg, (len(f.seg)-1)*8), nil, "corrupt", "corrupt", 0},
		{"everything verifies", f, f.seg, nil, "ok", "ok", 0},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			ids := row.ids
			if ids == nil {
				ids = row.f.ids
			}
			res := openSegment(row.seg, ids...)
			if got := outcome(res.err); got != row.open {
				t.Errorf("open: %s (%v), want %s", got, res.err, row.open)
			}
			if res.sticky != nil {
				t.Error(res.sticky)
			}
			switch row.open {
			case "ok":
				if !bytes.Equal(res.released, row.f.msg) {
					t.Error("plaintext differs")
				}
			case "truncated":
				if !bytes.Equal(res.released, row.f.msg[:row.released*chunk]) {
					t.Errorf("released %d bytes, want %d chunks", len(res.released), row.released)
				}
			default:
				if !bytes.HasPrefix(row.f.msg, res.released) {
					t.Error("released bytes are not a prefix of the plaintext")
				}
			}
			_, verr := verifyBytes(row.seg, row.f.dev.Public())
			if got := outcome(verr); got != row.keyless {
				t.Errorf("keyless: %s (%v), want %s", got, verr, row.keyless)
			}
		})
	}
}
