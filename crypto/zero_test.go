package crypto

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/uploadbox/uploadbox/crypto/internal/stream"
)

// The key material itself lives in crypto/internal/stream, whose own tests
// (zero_test.go) check that stream.Writer.Close and stream.Reader.Close
// zero it. These tests check that Writer and Reader reach those Closes.

func TestWriterCloseErasesKeys(t *testing.T) {
	ids, rcs := newIdentities(t, SuiteX25519, 1)
	dev := newDevice(t)
	var buf bytes.Buffer
	w, err := NewWriter(&buf, rcs, dev, Params{})
	if err != nil {
		t.Fatal(err)
	}
	msg := plaintext(t.Name(), chunk+10)
	if _, err := w.Write(msg); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// The stream writer is closed, which is where its keys were zeroed.
	if _, err := w.stream.Write([]byte("x")); !errors.Is(err, stream.ErrClosed) {
		t.Errorf("the stream writer is still open: %v", err)
	}
	if _, err := w.Write([]byte("x")); err == nil {
		t.Error("Write after Close succeeded")
	}
	if err := w.Flush(); err == nil {
		t.Error("Flush after Close succeeded")
	}
	if err := w.Close(); !errors.Is(err, stream.ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
	// Nothing was written after the trailer by the calls above.
	if res := openSegment(buf.Bytes(), ids...); res.err != nil || !bytes.Equal(res.released, msg) {
		t.Fatalf("segment after Close: %v", res.err)
	}
}

func TestReaderCloseStopsReads(t *testing.T) {
	f := newX25519Fixture(t)
	for _, readFirst := range []int{0, 1, chunk, fixtureSize} {
		r, err := NewReader(bytes.NewReader(f.seg), f.ids...)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(r, make([]byte, readFirst)); err != nil {
			t.Fatal(err)
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			if n, err := r.Read(make([]byte, 100)); n != 0 || err == nil || err == io.EOF {
				t.Errorf("after %d bytes: Read after Close = %d, %v", readFirst, n, err)
			}
			// The payload reader itself refuses too: its keys are gone.
			if n, err := r.payload.Read(make([]byte, 100)); n != 0 || !errors.Is(err, stream.ErrClosed) {
				t.Errorf("after %d bytes: payload Read after Close = %d, %v", readFirst, n, err)
			}
		}
		if err := r.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	}
}
