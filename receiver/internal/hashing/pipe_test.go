package hashing

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"testing/synctest"

	"go.uber.org/goleak"

	"github.com/uploadbox/uploadbox/crypto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// writerFunc is a store's file as a function.
type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// endless yields bytes 16 KiB at a time, as a TLS connection, and never
// ends; read counts them.
type endless struct{ read atomic.Int64 }

func (e *endless) Read(p []byte) (int, error) {
	n := min(len(p), 16<<10)
	for i := range p[:n] {
		p[i] = byte(e.read.Load() + int64(i))
	}
	e.read.Add(int64(n))
	return n, nil
}

func newTee(ctx context.Context, r io.Reader) *tee {
	return &tee{r: r, e: &entry{sha: sha256.New(), v: crypto.NewVerifier()}, ctx: ctx}
}

// TestPipeReadsWhileWriting: while a piece is being written, the next is
// read from the request (one PATCH uses two cores), and no more than that:
// the pieces one PATCH holds are bounded. Then everything read is written
// and hashed in order.
func TestPipeReadsWhileWriting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		data := bytes.Repeat([]byte("0123456789abcdef"), (pipeDepth+3)*writePiece/16+1000)
		src := &recordReader{data: data}
		release := make(chan struct{})
		var got bytes.Buffer
		w := writerFunc(func(p []byte) (int, error) {
			<-release
			return got.Write(p)
		})
		tt := newTee(t.Context(), src)
		type result struct {
			n   int64
			err error
		}
		done := make(chan result)
		go func() {
			n, err := tt.WriteTo(w)
			done <- result{n, err}
		}()
		synctest.Wait() // the first piece's write blocks; the reading too, once the ring is full
		ahead := src.off
		close(release)
		r := <-done
		if ahead != pipeDepth*writePiece {
			t.Fatalf("read %d bytes while the first piece was written; want %d (%d pieces of %d)", ahead, pipeDepth*writePiece, pipeDepth, writePiece)
		}
		if r.err != nil || r.n != int64(len(data)) || !bytes.Equal(got.Bytes(), data) {
			t.Fatalf("WriteTo = %d, %v; wrote %d bytes, equal: %v; want all %d", r.n, r.err, got.Len(), bytes.Equal(got.Bytes(), data), len(data))
		}
		var sum [32]byte
		if tt.e.sha.Sum(sum[:0]); tt.n != int64(len(data)) || sum != sha256.Sum256(data) || tt.e.v.Size() != int64(len(data)) {
			t.Fatalf("hashed %d bytes (Verifier %d), SHA-256 %x; want %d, %x", tt.n, tt.e.v.Size(), sum, len(data), sha256.Sum256(data))
		}
	})
}

// TestPipeEnds: a write error stops the reading, and the context's end
// stops it too, with every byte read written first; WriteTo returns only
// after its reading goroutine (goleak in TestMain).
func TestPipeEnds(t *testing.T) {
	full := errors.New("disk full")
	tests := []struct {
		name string
		// write is the store's file; cancel ends the context.
		write     func(cancel context.CancelFunc, got *bytes.Buffer) writerFunc
		wantErr   error
		wantShort bool // written less than read (the hashes are dropped)
	}{
		{
			name: "write error",
			write: func(_ context.CancelFunc, got *bytes.Buffer) writerFunc {
				return func(p []byte) (int, error) {
					if got.Len() >= 2*writePiece {
						return 0, full
					}
					return got.Write(p)
				}
			},
			wantErr:   full,
			wantShort: true,
		},
		{
			name: "context ends",
			write: func(cancel context.CancelFunc, got *bytes.Buffer) writerFunc {
				return func(p []byte) (int, error) {
					if got.Len() >= 2*writePiece {
						cancel()
					}
					return got.Write(p)
				}
			},
			wantErr: context.Canceled,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			src := &endless{}
			var got bytes.Buffer
			te := newTee(ctx, src)
			n, err := te.WriteTo(tt.write(cancel, &got))
			if !errors.Is(err, tt.wantErr) || n != int64(got.Len()) {
				t.Fatalf("WriteTo = %d, %v; want %d written and %v", n, err, got.Len(), tt.wantErr)
			}
			if read := src.read.Load(); read > n+(pipeDepth+1)*writePiece {
				t.Fatalf("read %d bytes, wrote %d: more than %d pieces ahead", read, n, pipeDepth+1)
			}
			if short := n < te.n; short != tt.wantShort {
				t.Fatalf("wrote %d of the %d bytes hashed; want fewer: %v", n, te.n, tt.wantShort)
			}
			want := make([]byte, n)
			(&endless{}).readFull(want)
			if !bytes.Equal(got.Bytes(), want) {
				t.Fatal("the bytes written are not the request's, in order")
			}
		})
	}
}

func (e *endless) readFull(p []byte) {
	for len(p) > 0 {
		n, _ := e.Read(p)
		p = p[n:]
	}
}
