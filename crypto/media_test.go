package crypto

import (
	"bytes"
	"testing"
)

// TestMediaBytes reads the plaintext length of real segments from their
// length alone, across chunk boundaries, and the full chunks of a cut one.
func TestMediaBytes(t *testing.T) {
	ids, _ := newIdentities(t, SuiteX25519, 1)
	dev := newDevice(t)
	for _, size := range []int{0, 1, chunk - 1, chunk, chunk + 1, 3*chunk + 5} {
		seg, _ := sealSegment(t, []*Recipient{ids[0].Recipient()}, dev, testParams(t.Name(), 0, [CommitmentSize]byte{}), plaintext(t.Name(), size), sealOpts{})
		info, err := Verify(bytes.NewReader(seg), nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := info.MediaBytes(); got != int64(size) {
			t.Errorf("segment of %d plaintext bytes: MediaBytes = %d", size, got)
		}
		// Cut inside the trailer: the full chunks count, the final one
		// not (unless the final chunk and the trailer's start fill a
		// chunk's length: then the count is one chunk high, see MediaBytes).
		if size%chunk+tagSize+TrailerSize-10 >= chunk+tagSize {
			continue
		}
		info, _ = Verify(bytes.NewReader(seg[:len(seg)-10]), nil)
		if got, want := info.MediaBytes(), int64(size/chunk*chunk); got != want {
			t.Errorf("segment of %d bytes cut in the trailer: MediaBytes = %d, want %d", size, got, want)
		}
	}
}
