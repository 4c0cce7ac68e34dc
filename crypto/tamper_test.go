package crypto

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/zeebo/blake3"
)

// fixture is one sealed segment of three full chunks and a short final one,
// the subject of the tamper tests.
type fixture struct {
	ids []*Identity
	dev *DeviceKey
	p   Params
	msg []byte
	seg []byte
	w   *Writer
	l   layout
}

const fixtureSize = 3*chunk + 1000

func newFixture(t testing.TB, seed string, ids []*Identity, dev *DeviceKey) *fixture {
	t.Helper()
	var rcs []*Recipient
	for _, id := range ids {
		rcs = append(rcs, id.Recipient())
	}
	f := &fixture{ids: ids, dev: dev, p: testParams(seed, 7, [CommitmentSize]byte{0xc0, 0xff, 0xee}), msg: plaintext(seed, fixtureSize)}
	f.seg, f.w = sealSegment(t, rcs, dev, f.p, f.msg, sealOpts{writeSize: 3000})
	f.l = layoutOf(t, f.seg)
	if f.l.full != 3 {
		t.Fatalf("fixture has %d full chunks, want 3", f.l.full)
	}
	return f
}

func newX25519Fixture(t testing.TB) *fixture {
	ids, _ := newIdentities(t, SuiteX25519, 1)
	return newFixture(t, t.Name(), ids, newDevice(t))
}

// wantFailure checks res failed with one of the outcomes in want and
// released at most maxChunks chunks, all of them a prefix of msg.
func wantFailure(t *testing.T, what string, res result, msg []byte, maxChunks int, want ...string) {
	t.Helper()
	got := outcome(res.err)
	ok := false
	for _, w := range want {
		ok = ok || got == w
	}
	if !ok {
		t.Errorf("%s: outcome %s (%v), want %v", what, got, res.err, want)
	}
	if len(res.released) > maxChunks*chunk || !bytes.HasPrefix(msg, res.released) {
		t.Errorf("%s: released %d bytes, want a prefix of at most %d chunks", what, len(res.released), maxChunks)
	}
	if res.sticky != nil {
		t.Errorf("%s: %v", what, res.sticky)
	}
}

// TestTamperHeaderBits flips every bit of the header: the reader must fail
// before releasing anything, and keyless verification must fail too.
// Flips in the HPKE-bound part of the header may surface as ErrNoIdentity,
// since that part is the info of every key wrap.
func TestTamperHeaderBits(t *testing.T) {
	t.Parallel() // the heaviest test: overlap it with TestRoundTripSizes
	tests := []struct {
		name  string
		suite Suite
	}{
		{"x25519", SuiteX25519},
		{"xwing", SuiteXWing},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ids, _ := newIdentities(t, tc.suite, 1)
			f := newFixture(t, t.Name(), ids, newDevice(t))
			hdr := f.w.Header()
			codecLenAt := fixedSize - 1
			countAt := fixedSize + len(hdr.Codec)
			stride := 1
			if testing.Short() && tc.suite == SuiteXWing {
				stride = 7 // still every byte of the header, one bit each
			}
			seen := map[string]int{}
			for bit := 0; bit < f.l.hdr*8; bit += stride {
				seg := flipBit(f.seg, bit)
				at := fmt.Sprintf("header byte %d bit %d", bit/8, bit%8)
				res := openSegment(seg, f.ids...)
				seen[outcome(res.err)]++
				if res.newErr == nil {
					t.Errorf("%s: NewReader accepted the header", at)
				}
				if b := bit / 8; b < 12 || b == codecLenAt || b == countAt {
					wantFailure(t, at, res, f.msg, 0, "corrupt")
				} else {
					wantFailure(t, at, res, f.msg, 0, "corrupt", "no-identity")
				}
				for _, dev := range []*DevicePublicKey{nil, f.dev.Public()} {
					if _, err := verifyBytes(seg, dev); !errors.Is(err, ErrCorrupt) {
						t.Errorf("%s: Verify(device=%v) = %v, want ErrCorrupt", at, dev, err)
					}
				}
			}
			t.Logf("outcomes of %d header bit flips: %v", f.l.hdr*8/stride, seen)
		})
	}
}

// TestTamperPrefixBits flips every bit of the salt and the commitment: the
// commitment check fails before any chunk is decrypted.
func TestTamperPrefixBits(t *testing.T) {
	f := newX25519Fixture(t)
	for bit := f.l.hdr * 8; bit < f.l.chunks*8; bit++ {
		seg := flipBit(f.seg, bit)
		what := "salt"
		if bit/8 >= f.l.hdr+24 {
			what = "commitment"
		}
		at := fmt.Sprintf("%s byte %d bit %d", what, bit/8-f.l.hdr, bit%8)
		res := openSegment(seg, f.ids...)
		if res.newErr == nil {
			t.Errorf("%s: NewReader accepted the segment", at)
		}
		wantFailure(t, at, res, f.msg, 0, "corrupt")
		if _, err := verifyBytes(seg, f.dev.Public()); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: Verify = %v, want ErrCorrupt", at, err)
		}
	}
}

// TestTamperStanzas moves recipient stanzas between segments sealed to the
// same keys: the HPKE info binds each stanza to its own header.
func TestTamperStanzas(t *testing.T) {
	for _, suite := range []Suite{SuiteX25519, SuiteXWing} {
		ids, _ := newIdentities(t, suite, 2)
		dev := newDevice(t)
		a := newFixture(t, fmt.Sprintf("%s/a", suite), ids, dev)
		b := newFixture(t, fmt.Sprintf("%s/b", suite), ids, dev)
		size := suites[suite].encSize + wrappedKeySize
		stanzasAt := a.l.hdr - 2*size
		if b.l.hdr != a.l.hdr || !bytes.Equal(a.seg[:12], b.seg[:12]) {
			t.Fatal("fixtures have different header layouts")
		}
		stanza := func(seg []byte, i int) []byte { return seg[stanzasAt+i*size : stanzasAt+(i+1)*size] }
		with := func(parts ...[]byte) []byte {
			return concat(a.seg[:stanzasAt], concat(parts...), a.seg[a.l.hdr:])
		}
		tests := []struct {
			name string
			seg  []byte
		}{
			{"stanza 1 from another recording", with(stanza(b.seg, 0), stanza(a.seg, 1))},
			{"stanza 2 from another recording", with(stanza(a.seg, 0), stanza(b.seg, 1))},
			{"all stanzas from another recording", with(stanza(b.seg, 0), stanza(b.seg, 1))},
			{"stanzas swapped", with(stanza(a.seg, 1), stanza(a.seg, 0))},
			{"stanza 1 twice", with(stanza(a.seg, 0), stanza(a.seg, 0))},
			{"whole header from another recording", concat(b.seg[:b.l.hdr], a.seg[a.l.hdr:])},
		}
		for _, tc := range tests {
			t.Run(fmt.Sprintf("%s/%s", suite, tc.name), func(t *testing.T) {
				if bytes.Equal(tc.seg, a.seg) {
					t.Fatal("the tampered segment is unchanged")
				}
				for i, id := range ids {
					res := openSegment(tc.seg, id)
					wantFailure(t, fmt.Sprintf("identity %d", i+1), res, a.msg, 0, "corrupt", "no-identity")
				}
				wantFailure(t, "both identities", openSegment(tc.seg, ids...), a.msg, 0, "corrupt", "no-identity")
				if _, err := verifyBytes(tc.seg, dev.Public()); !errors.Is(err, ErrCorrupt) {
					t.Errorf("Verify = %v, want ErrCorrupt", err)
				}
			})
		}
	}
}

// TestTruncation cuts the fixture everywhere a power cut can leave it:
// the authentic whole chunks before the cut are released, then
// ErrTruncated; keyless Verify says ErrTruncated as well.
func TestTruncation(t *testing.T) {
	f := newX25519Fixture(t)
	l := f.l
	type cut struct {
		name   string
		at     int
		chunks int
	}
	var cuts []cut
	add := func(name string, at, chunks int) { cuts = append(cuts, cut{name, at, chunks}) }
	// Every cut in the header, the salt and the commitment.
	for at := 0; at < l.chunks; at++ {
		what := "header"
		switch {
		case at >= l.hdr+24:
			what = "commitment"
		case at >= l.hdr:
			what = "salt"
		}
		add(fmt.Sprintf("in the %s at %d", what, at), at, 0)
	}
	for k := 0; k < l.full; k++ {
		start, end := l.chunk(k)
		add(fmt.Sprintf("at the start of chunk %d", k), start, k)
		add(fmt.Sprintf("1 byte into chunk %d", k), start+1, k)
		add(fmt.Sprintf("in the middle of chunk %d", k), start+encChunk/2, k)
		add(fmt.Sprintf("at the tag of chunk %d", k), end-tagSize, k)
		add(fmt.Sprintf("in the tag of chunk %d", k), end-tagSize/2, k)
		add(fmt.Sprintf("1 byte before the end of chunk %d", k), end-1, k)
	}
	add("at the final chunk", l.final, l.full)
	add("1 byte into the final chunk", l.final+1, l.full)
	add("in the middle of the final chunk", (l.final+l.trailer)/2, l.full)
	add("at the final tag", l.trailer-tagSize, l.full)
	add("in the final tag", l.trailer-tagSize/2, l.full)
	// Every cut in the trailer, and the trailer missing entirely.
	for at := l.trailer; at < len(f.seg); at++ {
		add(fmt.Sprintf("%d bytes into the trailer", at-l.trailer), at, l.full)
	}
	for _, c := range cuts {
		t.Run(c.name, func(t *testing.T) {
			seg := f.seg[:c.at]
			res := openSegment(seg, f.ids...)
			if !errors.Is(res.err, ErrTruncated) {
				t.Fatalf("cut at %d: %v, want ErrTruncated", c.at, res.err)
			}
			if !bytes.Equal(res.released, f.msg[:c.chunks*chunk]) {
				t.Fatalf("cut at %d: released %d bytes, want the first %d chunks (%d bytes)", c.at, len(res.released), c.chunks, c.chunks*chunk)
			}
			if res.sticky != nil {
				t.Error(res.sticky)
			}
			if _, err := verifyBytes(seg, f.dev.Public()); !errors.Is(err, ErrTruncated) {
				t.Errorf("Verify: %v, want ErrTruncated", err)
			}
		})
	}
}

// TestChunkReordering moves, repeats, drops and replaces chunks: reading
// fails with ErrCorrupt and releases nothing from the bad chunk on.
func TestChunkReordering(t *testing.T) {
	f := newX25519Fixture(t)
	// Same identity and device, another recording: chunk i there is sealed
	// with another segment key at the same index.
	g := newFixture(t, t.Name()+"/other", f.ids, f.dev)
	l := f.l
	c := func(seg []byte, i int) []byte { s, e := l.chunk(i); return seg[s:e] }
	head := f.seg[:l.chunks]
	final := f.seg[l.final:l.trailer]
	trailer := f.seg[l.trailer:]
	tests := []struct {
		name string
		seg  []byte
		bad  int // index of the first chunk that must fail
	}{
		{"chunks 0 and 1 swapped", concat(head, c(f.seg, 1), c(f.seg, 0), c(f.seg, 2), final, trailer), 0},
		{"chunks 1 and 2 swapped", concat(head, c(f.seg, 0), c(f.seg, 2), c(f.seg, 1), final, trailer), 1},
		{"chunk 1 duplicated", concat(head, c(f.seg, 0), c(f.seg, 1), c(f.seg, 1), c(f.seg, 2), final, trailer), 2},
		{"chunk 1 over chunk 2", concat(head, c(f.seg, 0), c(f.seg, 1), c(f.seg, 1), final, trailer), 2},
		{"chunk 0 repeated first", concat(head, c(f.seg, 0), c(f.seg, 0), c(f.seg, 1), c(f.seg, 2), final, trailer), 1},
		{"chunk 1 dropped", concat(head, c(f.seg, 0), c(f.seg, 2), final, trailer), 1},
		{"final chunk dropped", concat(head, c(f.seg, 0), c(f.seg, 1), c(f.seg, 2), trailer), 3},
		{"chunk 0 from another segment", concat(head, c(g.seg, 0), c(f.seg, 1), c(f.seg, 2), final, trailer), 0},
		{"chunk 1 from another segment", concat(head, c(f.seg, 0), c(g.seg, 1), c(f.seg, 2), final, trailer), 1},
		{"chunk 2 from another segment", concat(head, c(f.seg, 0), c(f.seg, 1), c(g.seg, 2), final, trailer), 2},
		{"final chunk from another segment", concat(head, c(f.seg, 0), c(f.seg, 1), c(f.seg, 2), g.seg[g.l.final:g.l.trailer], trailer), 3},
		{"payload from another segment", concat(head, g.seg[g.l.chunks:]), 0},
		{"bit flip in chunk 1", flipBit(f.seg, (l.chunks+encChunk+100)*8), 1},
		{"bit flip in the tag of chunk 2", flipBit(f.seg, (l.final-1)*8+3), 2},
		{"bit flip in the final chunk", flipBit(f.seg, (l.final+5)*8), 3},
		{"bit flip in the final tag", flipBit(f.seg, (l.trailer-1)*8), 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := openSegment(tc.seg, f.ids...)
			if !errors.Is(res.err, ErrCorrupt) {
				t.Fatalf("%v, want ErrCorrupt", res.err)
			}
			if !bytes.Equal(res.released, f.msg[:tc.bad*chunk]) {
				t.Fatalf("released %d bytes, want the %d chunks before the bad one", len(res.released), tc.bad)
			}
			if res.sticky != nil {
				t.Error(res.sticky)
			}
			if _, err := verifyBytes(tc.seg, f.dev.Public()); !errors.Is(err, ErrCorrupt) {
				t.Errorf("Verify: %v, want ErrCorrupt", err)
			}
		})
	}
}

// TestTrailingBytes appends data after a complete segment: never OK, and
// the reader calls it corrupt. Keyless Verify sees no trailer at the end
// and cannot tell appended data from a cut, so it may say truncated.
func TestTrailingBytes(t *testing.T) {
	f := newX25519Fixture(t)
	tests := []struct {
		name  string
		extra []byte
	}{
		{"1 byte", []byte{0}},
		{"16 bytes", plaintext("16", 16)},
		{"72 bytes", plaintext("72", 72)},
		{"100 bytes", plaintext("100", 100)},
		{"20000 bytes", plaintext("20000", 20000)},
		{"the trailer again", f.seg[f.l.trailer:]},
		{"a trailer magic", []byte(trailerMagic)},
		{"a trailer-looking block", concat([]byte(trailerMagic), []byte{Version, 0}, make([]byte, 64))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			seg := concat(f.seg, tc.extra)
			res := openSegment(seg, f.ids...)
			wantFailure(t, "reader", res, f.msg, f.l.full+1, "corrupt")
			if _, err := verifyBytes(seg, f.dev.Public()); err == nil {
				t.Error("Verify accepted the segment")
			}
		})
	}
}

// TestWrongIdentity opens with keys that are not recipients.
func TestWrongIdentity(t *testing.T) {
	f := newX25519Fixture(t)
	others := map[Suite]*Identity{}
	for _, s := range allSuites {
		ids, _ := newIdentities(t, s, 1)
		others[s] = ids[0]
	}
	tests := []struct {
		name string
		ids  []*Identity
		want string
	}{
		{"other x25519 key", []*Identity{others[SuiteX25519]}, "no-identity"},
		{"other suite", []*Identity{others[SuiteXWing]}, "no-identity"},
		{"several wrong keys", []*Identity{others[SuiteP256], others[SuiteXWing], others[SuiteX25519]}, "no-identity"},
		{"no key", nil, "error"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := openSegment(f.seg, tc.ids...)
			if res.newErr == nil {
				t.Fatal("NewReader succeeded")
			}
			wantFailure(t, "reader", res, f.msg, 0, tc.want)
		})
	}
	t.Run("wrong key before the right one", func(t *testing.T) {
		res := openSegment(f.seg, others[SuiteX25519], others[SuiteP256], f.ids[0])
		if res.err != nil || !bytes.Equal(res.released, f.msg) {
			t.Fatalf("%v", res.err)
		}
	})
}

// resign replaces the trailer of seg with one of the given version and
// flags, correctly signed by dev, to reach the checks behind the signature.
func resign(seg []byte, dev *DeviceKey, version, flags byte) []byte {
	body := seg[:len(seg)-TrailerSize]
	tr := append([]byte(trailerMagic), version, flags)
	h := blake3.New()
	h.Write(body)
	h.Write(tr)
	return concat(body, tr, ed25519.Sign(dev.priv, signedMessage(h)))
}

// TestTamperTrailer covers the signed trailer: a trailer from another
// device, every bit flip, and unknown versions and flags even when signed.
func TestTamperTrailer(t *testing.T) {
	f := newX25519Fixture(t)
	l := f.l
	t.Run("from another device", func(t *testing.T) {
		g := newFixture(t, t.Name(), f.ids, newDevice(t))
		seg := concat(f.seg[:l.trailer], g.seg[g.l.trailer:])
		wantFailure(t, "reader", openSegment(seg, f.ids...), f.msg, l.full+1, "corrupt")
		for _, dev := range []*DevicePublicKey{nil, f.dev.Public(), g.dev.Public()} {
			if _, err := verifyBytes(seg, dev); !errors.Is(err, ErrCorrupt) {
				t.Errorf("Verify(device=%v) = %v, want ErrCorrupt", dev, err)
			}
		}
	})
	t.Run("whole segment signed by another device", func(t *testing.T) {
		// The header still names f's device, so the signature cannot verify.
		seg := resign(f.seg, newDevice(t), Version, 0)
		wantFailure(t, "reader", openSegment(seg, f.ids...), f.msg, l.full+1, "corrupt")
		if _, err := verifyBytes(seg, nil); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Verify = %v, want ErrCorrupt", err)
		}
	})
	t.Run("every bit", func(t *testing.T) {
		for bit := l.trailer * 8; bit < len(f.seg)*8; bit++ {
			seg := flipBit(f.seg, bit)
			off := bit/8 - l.trailer
			at := fmt.Sprintf("trailer byte %d bit %d", off, bit%8)
			wantFailure(t, at, openSegment(seg, f.ids...), f.msg, l.full+1, "corrupt")
			_, err := verifyBytes(seg, f.dev.Public())
			switch {
			case off < len(trailerMagic):
				// A damaged magic looks like a missing trailer without the key.
				if err == nil {
					t.Errorf("%s: Verify accepted the segment", at)
				}
			case !errors.Is(err, ErrCorrupt):
				t.Errorf("%s: Verify = %v, want ErrCorrupt", at, err)
			}
		}
	})
	tests := []struct {
		name    string
		version byte
		flags   byte
		want    string
		last    bool
		end     EndReason
	}{
		{"resigned as is", Version, 0, "ok", false, EndUnknown},
		{"resigned as last", Version, FlagLast, "ok", true, EndUnknown},
		{"last, stopped", Version, 0x03, "ok", true, EndStopped},
		{"last, session time up", Version, 0x05, "ok", true, EndTimeUp},
		{"last, spool full", Version, 0x07, "ok", true, EndSpoolFull},
		{"last, disk error", Version, 0x09, "ok", true, EndDiskError},
		{"last, box crashed", Version, 0x0b, "ok", true, EndCrashed},
		{"last, undefined reason 6", Version, 0x0d, "corrupt", false, 0},
		{"last, undefined reason 7", Version, 0x0f, "corrupt", false, 0},
		{"reason without last 0x02", Version, 0x02, "corrupt", false, 0},
		{"reason without last 0x0a", Version, 0x0a, "corrupt", false, 0},
		{"flag 0x10", Version, 0x10, "corrupt", false, 0},
		{"flag 0x80", Version, 0x80, "corrupt", false, 0},
		{"flags 0xff", Version, 0xff, "corrupt", false, 0},
		{"version 0", 0, 0, "corrupt", false, 0},
		{"version 2", 2, 0, "corrupt", false, 0},
	}
	for _, tc := range tests {
		t.Run("signed "+tc.name, func(t *testing.T) {
			seg := resign(f.seg, f.dev, tc.version, tc.flags)
			res := openSegment(seg, f.ids...)
			info, verr := verifyBytes(seg, f.dev.Public())
			if tc.want == "ok" {
				if res.err != nil || !bytes.Equal(res.released, f.msg) || verr != nil {
					t.Fatalf("reader %v, Verify %v", res.err, verr)
				}
				if res.reader.Trailer().Last() != tc.last || info.Trailer.Last() != tc.last {
					t.Errorf("Last() = %v/%v, want %v", res.reader.Trailer().Last(), info.Trailer.Last(), tc.last)
				}
				if res.reader.Trailer().End() != tc.end || info.Trailer.End() != tc.end {
					t.Errorf("End() = %v/%v, want %v", res.reader.Trailer().End(), info.Trailer.End(), tc.end)
				}
				return
			}
			wantFailure(t, "reader", res, f.msg, l.full+1, tc.want)
			if res.reader.Trailer() != nil {
				t.Error("Trailer() is set on a corrupt segment")
			}
			if !errors.Is(verr, ErrCorrupt) {
				t.Errorf("Verify = %v, want ErrCorrupt", verr)
			}
		})
	}
}

// TestErrorsAreSticky reads past every terminal state with several buffer
// sizes; each one repeats forever, and Close turns success into a failure.
func TestErrorsAreSticky(t *testing.T) {
	f := newX25519Fixture(t)
	tests := []struct {
		name string
		seg  []byte
		want error // nil for success
	}{
		{"ok", f.seg, nil},
		{"truncated", f.seg[:f.l.chunks+encChunk+5], ErrTruncated},
		{"corrupt chunk", flipBit(f.seg, (f.l.chunks+encChunk+5)*8), ErrCorrupt},
		{"corrupt trailer", flipBit(f.seg, (len(f.seg)-1)*8), ErrCorrupt},
	}
	for _, tc := range tests {
		for _, bufSize := range []int{1, 100, chunk, 1 << 20} {
			t.Run(fmt.Sprintf("%s/buf=%d", tc.name, bufSize), func(t *testing.T) {
				r, err := NewReader(bytes.NewReader(tc.seg), f.ids...)
				if err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, bufSize)
				var got []byte
				var first error
				for first == nil {
					n, err := r.Read(buf)
					got = append(got, buf[:n]...)
					first = err
				}
				if tc.want == nil && first != io.EOF || tc.want != nil && !errors.Is(first, tc.want) {
					t.Fatalf("first error %v, want %v", first, tc.want)
				}
				if !bytes.HasPrefix(f.msg, got) {
					t.Fatal("released bytes are not a prefix of the message")
				}
				for range 3 {
					if n, err := r.Read(buf); n != 0 || err != first {
						t.Fatalf("Read after %v = %d, %v", first, n, err)
					}
				}
				if n, err := r.Read(nil); n != 0 || err != first {
					t.Fatalf("Read(nil) after %v = %d, %v", first, n, err)
				}
				r.Close()
				n, err := r.Read(buf)
				if n != 0 || err == nil || err == io.EOF {
					t.Fatalf("Read after Close = %d, %v", n, err)
				}
				if tc.want != nil && !errors.Is(err, tc.want) {
					t.Errorf("Close replaced %v with %v", tc.want, err)
				}
			})
		}
	}
}
