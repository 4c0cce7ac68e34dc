package crypto

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"reflect"
	"testing"
)

// FuzzParseHeader: ParseHeader never panics, fails only with ErrCorrupt,
// and whatever it accepts re-encodes from its fields to the same bytes.
func FuzzParseHeader(f *testing.F) {
	dev := newDevice(f)
	for _, suite := range allSuites {
		for _, n := range []int{1, 4} {
			_, rcs := newIdentities(f, suite, n)
			p := testParams("fuzz", 3, [CommitmentSize]byte{9})
			seg, w := sealSegment(f, rcs, dev, p, nil, sealOpts{})
			f.Add(w.Header().Bytes())
			f.Add(seg[:len(w.Header().Bytes())-1])
		}
	}
	f.Add([]byte{})
	f.Add([]byte(magic))
	f.Add(bytes.Repeat([]byte{0xff}, fixedSize+1))
	f.Fuzz(func(t *testing.T, data []byte) {
		in := bytes.Clone(data)
		h, err := ParseHeader(in)
		if err != nil {
			if h != nil {
				t.Fatal("ParseHeader returned a header with an error")
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("ParseHeader error %v is not ErrCorrupt", err)
			}
			// A stream reader may stop at the declared length; what it
			// accepts must then be a strict prefix that parses alone.
			if rh, rerr := ReadHeader(bytes.NewReader(data)); rerr == nil {
				n := len(rh.Bytes())
				if n >= len(data) {
					t.Fatalf("ReadHeader accepted %d bytes that ParseHeader refused: %v", n, err)
				}
				if _, err := ParseHeader(bytes.Clone(data[:n])); err != nil {
					t.Fatalf("ReadHeader accepted a prefix that ParseHeader refuses: %v", err)
				}
			}
			return
		}
		if !bytes.Equal(h.Bytes(), data) {
			t.Fatal("Bytes() differs from the input")
		}
		// Re-encode from the parsed fields, as the Writer does.
		enc := h.prefix(len(data))
		for _, s := range h.stanzas {
			enc = append(enc, s.enc...)
			enc = append(enc, s.wrapped...)
		}
		if !bytes.Equal(enc, data) {
			t.Fatalf("re-encoded header differs from the input:\n got %x\nwant %x", enc, data)
		}
		if _, ok := suites[h.Suite]; !ok || h.Flags != 0 || !validCodec(h.Codec) || len(h.stanzas) < 1 || len(h.stanzas) > maxRecipients {
			t.Fatalf("accepted out-of-range fields: %+v", h)
		}
		// ReadHeader takes exactly the header from a longer stream.
		r := bytes.NewReader(append(bytes.Clone(data), "rest"...))
		rh, err := ReadHeader(r)
		if err != nil || !bytes.Equal(rh.Bytes(), data) || r.Len() != 4 {
			t.Fatalf("ReadHeader on the same bytes: %v", err)
		}
	})
}

// FuzzReader: reading arbitrary bytes with a fixed identity never panics,
// classifies every failure, releases only whole chunks before a
// truncation, and returns OK only for a segment that was really sealed.
func FuzzReader(f *testing.F) {
	id, err := ParseIdentity(testKeyLine(f, keyX25519))
	if err != nil {
		f.Fatal(err)
	}
	all, valid := readVectorSegments(f)
	for _, seg := range all {
		f.Add(seg)
	}
	// Only committed segments are seeds: fuzzing workers are separate
	// processes, and a segment sealed here would be unknown to them.
	sealed := map[[32]byte]bool{}
	for _, seg := range valid {
		sealed[sha256.Sum256(seg)] = true
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		res := openSegment(data, id)
		info, verr := Verify(bytes.NewReader(data), nil)
		if wantInfo, wantErr := verifyWholeHashed(data, nil); fmt.Sprint(verr) != fmt.Sprint(wantErr) || !reflect.DeepEqual(info, wantInfo) {
			t.Fatalf("streaming Verify says %v, the whole-read verification %v", verr, wantErr)
		}
		if len(data) > 0 {
			step := int(data[0])%97 + 1
			if sinfo, serr := verifierSays(data, step, nil); fmt.Sprint(serr) != fmt.Sprint(verr) || !reflect.DeepEqual(sinfo, info) {
				t.Fatalf("Verifier in writes of %d says %v, Verify %v", step, serr, verr)
			}
		}
		if res.sticky != nil {
			t.Fatal(res.sticky)
		}
		if o := outcome(res.err); o == "error" {
			t.Fatalf("reader error %v is none of ErrCorrupt, ErrTruncated, ErrNoIdentity", res.err)
		}
		if o := outcome(verr); o == "error" || o == "no-identity" {
			t.Fatalf("Verify error %v is neither ErrCorrupt nor ErrTruncated", verr)
		}
		if res.newErr != nil && len(res.released) != 0 {
			t.Fatal("plaintext released although NewReader failed")
		}
		if errors.Is(res.err, ErrTruncated) && len(res.released)%chunk != 0 {
			t.Fatalf("a truncated segment released %d bytes, not whole chunks", len(res.released))
		}
		if res.err == nil {
			if !sealed[sha256.Sum256(data)] {
				t.Fatalf("the reader accepted %d bytes that were never sealed", len(data))
			}
			if verr != nil || info.Size != int64(len(data)) {
				t.Fatalf("the reader accepted a segment that Verify refuses: %v", verr)
			}
		}
		if verr == nil && !sealed[sha256.Sum256(data)] && !errors.Is(res.err, ErrNoIdentity) {
			t.Fatalf("Verify accepted %d bytes that were never sealed (reader: %v)", len(data), res.err)
		}
	})
}
