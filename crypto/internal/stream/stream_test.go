package stream

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func seal(t testing.TB, key, ctx, msg []byte, writeSize int) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(key, ctx, &buf)
	if err != nil {
		t.Fatal(err)
	}
	for p := msg; len(p) > 0; {
		n := min(writeSize, len(p))
		if _, err := w.Write(p[:n]); err != nil {
			t.Fatal(err)
		}
		p = p[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestRoundTripSizes(t *testing.T) {
	key := randomBytes(t, KeySize)
	ctx := []byte("context")
	for _, size := range []int{0, 1, ChunkSize - 1, ChunkSize, ChunkSize + 1, 257*ChunkSize + 5} {
		msg := randomBytes(t, size)
		for _, ws := range []int{1, 17, 4096, ChunkSize - 1, ChunkSize, ChunkSize + 1, 1 << 20} {
			if size > 1<<20 && ws < 4096 {
				continue // byte-at-a-time over 4 MiB adds time, not coverage
			}
			t.Run(fmt.Sprintf("size=%d/write=%d", size, ws), func(t *testing.T) {
				ct := seal(t, key, ctx, msg, ws)
				full := size / ChunkSize
				want := PrefixSize + full*EncChunkSize + (size%ChunkSize + TagSize)
				if len(ct) != want {
					t.Fatalf("ciphertext is %d bytes, want %d", len(ct), want)
				}
				r, err := NewReader(key, ctx, bytes.NewReader(ct))
				if err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(r)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, msg) {
					t.Fatal("plaintext mismatch")
				}
			})
		}
	}
}

// TestFlushWritesCompleteChunks checks that after Flush every full chunk is
// in dst and decrypts, while the partial chunk stays buffered.
func TestFlushWritesCompleteChunks(t *testing.T) {
	key := randomBytes(t, KeySize)
	var buf bytes.Buffer
	w, err := NewWriter(key, nil, &buf)
	if err != nil {
		t.Fatal(err)
	}
	msg := randomBytes(t, 2*ChunkSize+100)
	if _, err := w.Write(msg); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if got, want := buf.Len(), PrefixSize+2*EncChunkSize; got != want {
		t.Fatalf("after Flush dst holds %d bytes, want %d", got, want)
	}
	if w.Buffered() != 100 {
		t.Fatalf("Buffered = %d, want 100", w.Buffered())
	}
	// What is on "disk" now is a truncated but authentic prefix.
	r, err := NewReader(key, nil, bytes.NewReader(bytes.Clone(buf.Bytes())))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if !errors.Is(err, ErrTruncated) {
		t.Fatalf("err = %v, want ErrTruncated", err)
	}
	if !bytes.Equal(got, msg[:2*ChunkSize]) {
		t.Fatal("prefix mismatch")
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
}

type failWriter struct{ after int }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.after <= 0 {
		return 0, errors.New("disk full")
	}
	f.after--
	return len(p), nil
}

func TestWriterErrorsAreSticky(t *testing.T) {
	w, err := NewWriter(randomBytes(t, KeySize), nil, &failWriter{after: 2})
	if err != nil {
		t.Fatal(err)
	}
	msg := randomBytes(t, 4*batchChunks*ChunkSize)
	_, werr := w.Write(msg)
	ferr := w.Flush()
	if werr == nil && ferr == nil {
		t.Fatal("no error after the destination failed")
	}
	if _, err := w.Write(msg[:10]); err == nil {
		t.Fatal("write after failure succeeded")
	}
	if err := w.Close(); err == nil {
		t.Fatal("Close after failure returned nil")
	}
}

func TestWrongKeyAndContextFailBeforeChunks(t *testing.T) {
	key := randomBytes(t, KeySize)
	ct := seal(t, key, []byte("a"), randomBytes(t, 3*ChunkSize), 4096)
	if _, err := NewReader(randomBytes(t, KeySize), []byte("a"), bytes.NewReader(ct)); !errors.Is(err, ErrCommitment) {
		t.Fatalf("wrong key: %v", err)
	}
	if _, err := NewReader(key, []byte("b"), bytes.NewReader(ct)); !errors.Is(err, ErrCommitment) {
		t.Fatalf("wrong context: %v", err)
	}
	if _, err := NewReader(key[:16], []byte("a"), bytes.NewReader(ct)); !errors.Is(err, ErrKeySize) {
		t.Fatalf("short key: %v", err)
	}
}

func BenchmarkWriter(b *testing.B) {
	key := randomBytes(b, KeySize)
	msg := randomBytes(b, 1<<20)
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		w, _ := NewWriter(key, nil, io.Discard)
		w.Write(msg)
		w.Close()
	}
}
