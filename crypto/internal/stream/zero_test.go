package stream

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// zeroed reports whether k holds no key material: the base nonce is zero
// and the AEAD (with its key schedule) is no longer referenced.
func zeroed(k *keys) bool {
	return k.aead == nil && k.nonce == [nonceSize]byte{}
}

func allZero(b []byte) bool { return bytes.Equal(b, make([]byte, len(b))) }

// TestWriterCloseZeroesKeys checks that Close erases the derived keys and
// the buffered plaintext, on success and after the destination failed.
func TestWriterCloseZeroesKeys(t *testing.T) {
	tests := []struct {
		name string
		dst  io.Writer
		ok   bool
	}{
		{"ok", io.Discard, true},
		{"destination failed", &failWriter{after: 2}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w, err := NewWriter(randomBytes(t, KeySize), []byte("ctx"), tc.dst)
			if err != nil {
				t.Fatal(err)
			}
			if zeroed(w.keys) {
				t.Fatal("a fresh writer has no keys")
			}
			// Leave a partial chunk of non-zero plaintext in the buffer.
			w.Write(bytes.Repeat([]byte{0xaa}, 3*ChunkSize+100))
			w.Flush()
			if tc.ok && w.Buffered() != 100 {
				t.Fatalf("Buffered = %d, want 100", w.Buffered())
			}
			err = w.Close()
			if (err == nil) != tc.ok {
				t.Fatalf("Close = %v", err)
			}
			if !zeroed(w.keys) {
				t.Error("Close left the key material")
			}
			if !allZero(w.buf[:cap(w.buf)]) {
				t.Error("Close left plaintext in the chunk buffer")
			}
			if _, err := w.Write([]byte("x")); !errors.Is(err, ErrClosed) {
				t.Errorf("Write after Close: %v", err)
			}
			if err := w.Flush(); !errors.Is(err, ErrClosed) {
				t.Errorf("Flush after Close: %v", err)
			}
			if err := w.Close(); !errors.Is(err, ErrClosed) {
				t.Errorf("second Close: %v", err)
			}
		})
	}
}

// TestReaderCloseZeroesKeys checks that Close erases the keys and the
// plaintext buffer, mid-message and at the end, and that reads then fail.
func TestReaderCloseZeroesKeys(t *testing.T) {
	key := randomBytes(t, KeySize)
	msg := bytes.Repeat([]byte{0x55}, 2*ChunkSize+7)
	ct := seal(t, key, nil, msg, 4096)
	for _, readFirst := range []int{0, 100, ChunkSize + 1, len(msg)} {
		r, err := NewReader(key, nil, bytes.NewReader(ct))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(r, make([]byte, readFirst)); err != nil {
			t.Fatal(err)
		}
		r.Close()
		if !zeroed(r.keys) {
			t.Errorf("after %d bytes: Close left the key material", readFirst)
		}
		if !allZero(r.pbuf[:cap(r.pbuf)]) || len(r.plain) != 0 {
			t.Errorf("after %d bytes: Close left plaintext buffered", readFirst)
		}
		for range 2 {
			if n, err := r.Read(make([]byte, 10)); n != 0 || !errors.Is(err, ErrClosed) {
				t.Errorf("after %d bytes: Read after Close = %d, %v", readFirst, n, err)
			}
		}
	}
}
