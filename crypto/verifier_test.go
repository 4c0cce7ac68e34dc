package crypto

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"testing"

	"github.com/zeebo/blake3"

	"github.com/uploadbox/uploadbox/crypto/internal/stream"
)

// verifyWhole is Verify as it was before the Verifier: one reader through
// the splitter. The Verifier must say exactly what it says.
func verifyWhole(seg []byte, device *DevicePublicKey) (*Info, error) {
	h := blake3.New()
	cr := bytes.NewReader(seg)
	hdr, err := ReadHeader(cr)
	if err != nil {
		return nil, err
	}
	info := &Info{Header: hdr}
	if device != nil {
		if err := hdr.CheckDevice(device); err != nil {
			return info, err
		}
	}
	h.Write(hdr.raw)
	sp := newSplitter(cr, h)
	var prefix [stream.PrefixSize]byte
	if _, err := io.ReadFull(sp, prefix[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, stream.ErrUnterminated) {
			info.Size = int64(len(seg) - cr.Len())
			return info, fmt.Errorf("%w: file ends inside the salt and commitment", ErrTruncated)
		}
		return info, err
	}
	copy(info.Commitment[:], prefix[stream.SaltSize:])
	n, err := io.CopyBuffer(io.Discard, sp, make([]byte, 64<<10))
	info.Size = int64(len(seg) - cr.Len())
	switch {
	case errors.Is(err, stream.ErrUnterminated):
		return info, fmt.Errorf("%w: the trailer is missing", ErrTruncated)
	case err != nil:
		return info, fmt.Errorf("read segment: %w", err)
	}
	if final := n % stream.EncChunkSize; final < stream.TagSize {
		return info, fmt.Errorf("%w: payload length %d has no valid final chunk", ErrCorrupt, n)
	}
	t, err := checkTrailer(sp.trailer, hdr, h)
	if err != nil {
		return info, err
	}
	info.Trailer = t
	return info, nil
}

// verifyWholeHashed is verifyWhole with the segment hash computed on its
// own: BLAKE3-256 of the bytes read.
func verifyWholeHashed(seg []byte, device *DevicePublicKey) (*Info, error) {
	info, err := verifyWhole(seg, device)
	if info != nil && info.Size > 0 {
		info.FileHash = blake3.Sum256(seg[:info.Size])
	}
	return info, err
}

// verifierSays feeds seg to a Verifier in writes of step bytes.
func verifierSays(seg []byte, step int, dev *DevicePublicKey) (*Info, error) {
	v := NewVerifier()
	for p := seg; len(p) > 0; p = p[min(step, len(p)):] {
		v.Write(p[:min(step, len(p))])
	}
	return v.Finish(dev)
}

func sameVerdict(t *testing.T, what string, seg []byte, dev *DevicePublicKey, steps []int) {
	t.Helper()
	wantInfo, wantErr := verifyWholeHashed(seg, dev)
	for _, step := range steps {
		info, err := verifierSays(seg, step, dev)
		if fmt.Sprint(err) != fmt.Sprint(wantErr) || OutcomeOf(err) != OutcomeOf(wantErr) {
			t.Fatalf("%s, writes of %d: Verifier says %v, whole read %v", what, step, err, wantErr)
		}
		if !reflect.DeepEqual(info, wantInfo) {
			t.Fatalf("%s, writes of %d: Verifier Info %+v, whole read %+v", what, step, info, wantInfo)
		}
	}
}

// TestVerifierMatchesWholeRead checks the streaming Verifier against the
// whole-file verification on every vector, on segments cut at every
// length around the header, the prefix, chunk ends and the trailer, and
// with a byte changed anywhere near them, in writes of many sizes.
func TestVerifierMatchesWholeRead(t *testing.T) {
	steps := []int{1, 7, TrailerSize - 1, TrailerSize, TrailerSize + 1, 4096, encChunk, 1 << 20}
	all, _ := readVectorSegments(t)
	for i, seg := range all {
		sameVerdict(t, fmt.Sprintf("vector %d", i), seg, nil, steps)
	}
	ids, _ := newIdentities(t, SuiteX25519, 1)
	dev, other := newDevice(t), newDevice(t)
	for _, size := range []int{0, chunk - 1, chunk, 2*chunk + 100} {
		seg, _ := sealSegment(t, []*Recipient{ids[0].Recipient()}, dev, testParams(t.Name(), 0, [CommitmentSize]byte{}), plaintext(t.Name(), size), sealOpts{})
		l := layoutOf(t, seg)
		sameVerdict(t, "whole", seg, dev.Public(), steps)
		sameVerdict(t, "other device", seg, other.Public(), steps[:2])
		var cuts []int
		for _, at := range []int{0, 12, l.hdr, l.chunks, l.final, l.trailer, len(seg)} {
			for d := -TrailerSize - 2; d <= TrailerSize+2; d++ {
				if c := at + d; c >= 0 && c <= len(seg) {
					cuts = append(cuts, c)
				}
			}
		}
		for _, c := range cuts {
			sameVerdict(t, fmt.Sprintf("%d bytes cut to %d", len(seg), c), seg[:c], nil, []int{1, TrailerSize, 1 << 20})
			if c < len(seg) {
				sameVerdict(t, fmt.Sprintf("%d bytes, byte %d changed", len(seg), c), setByte(seg, c, seg[c]^0x40), nil, []int{TrailerSize + 1, 1 << 20})
			}
		}
		sameVerdict(t, "a byte appended", append(bytes.Clone(seg), 0), nil, steps)
		// The trailer moved onto a final chunk of every length near a tag's.
		for k := 0; k <= tagSize+1; k++ {
			sameVerdict(t, fmt.Sprintf("final chunk of %d bytes", k), concat(seg[:l.final+k], seg[l.trailer:]), nil, steps[:4])
		}
	}
}

// TestFileHash checks the segment hash of every vector and of fresh
// segments, as Verify and a Verifier give it, against BLAKE3-256 of the
// file computed on its own.
func TestFileHash(t *testing.T) {
	all, _ := readVectorSegments(t)
	ids, _ := newIdentities(t, SuiteX25519, 1)
	dev := newDevice(t)
	for _, size := range []int{0, chunk, 3*chunk + 5} {
		seg, _ := sealSegment(t, []*Recipient{ids[0].Recipient()}, dev, testParams(t.Name(), 0, [CommitmentSize]byte{}), plaintext(t.Name(), size), sealOpts{})
		all = append(all, seg)
	}
	ok := 0
	for i, seg := range all {
		info, err := Verify(bytes.NewReader(seg), nil)
		if err != nil {
			continue
		}
		ok++
		want := blake3.Sum256(seg)
		if info.FileHash != want {
			t.Errorf("segment %d: Verify's FileHash %x, BLAKE3-256 of the file %x", i, info.FileHash, want)
		}
		v := NewVerifier()
		v.Write(seg)
		if got := v.FileHash(); got != want {
			t.Errorf("segment %d: Verifier.FileHash %x, BLAKE3-256 of the file %x", i, got, want)
		}
		if info.FileHash == blake3.Sum256(seg[:len(seg)-len(info.Trailer.Signature)]) {
			t.Errorf("segment %d: the segment hash is the signature digest, not the file's", i)
		}
	}
	if ok < 4 {
		t.Fatalf("only %d segments verified OK", ok)
	}
}

// TestVerifierFinishMidway asks a Verifier for its verdict after each
// write: each answer is that of the bytes so far, and the last one OK.
func TestVerifierFinishMidway(t *testing.T) {
	ids, _ := newIdentities(t, SuiteX25519, 1)
	dev := newDevice(t)
	seg, _ := sealSegment(t, []*Recipient{ids[0].Recipient()}, dev, testParams(t.Name(), 0, [CommitmentSize]byte{}), plaintext(t.Name(), 3*chunk), sealOpts{})
	v := NewVerifier()
	for at := 0; at < len(seg); at += 5000 {
		v.Write(seg[at:min(at+5000, len(seg))])
		info, err := v.Finish(nil)
		wantInfo, wantErr := verifyWholeHashed(seg[:min(at+5000, len(seg))], nil)
		if fmt.Sprint(err) != fmt.Sprint(wantErr) || !reflect.DeepEqual(info, wantInfo) {
			t.Fatalf("after %d bytes: %v, want %v", min(at+5000, len(seg)), err, wantErr)
		}
	}
	if info, err := v.Finish(dev.Public()); err != nil || info.Size != int64(len(seg)) {
		t.Fatalf("complete segment: %v", err)
	}
}
