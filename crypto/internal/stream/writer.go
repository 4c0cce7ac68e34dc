package stream

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sync"
)

// Sealed chunks travel to the output goroutine in batches of batchChunks,
// so a hand-off costs one channel operation per 128 KiB rather than per
// chunk. At most pipelineDepth batches exist, which bounds memory at
// pipelineDepth*batchChunks chunks whatever the message size.
const (
	batchChunks   = 8
	pipelineDepth = 4
)

// ErrClosed is returned by a Writer or Reader used after Close.
var ErrClosed = errors.New("use of a closed stream")

// Writer encrypts a message as Cobblestone-256.
//
// Sealing runs on the caller's goroutine while a second goroutine writes
// sealed chunks to the destination, so hashing or I/O done by the
// destination overlaps with AES-GCM. Close must always be called; it stops
// that goroutine.
type Writer struct {
	keys  *keys
	buf   []byte // plaintext of the current, incomplete chunk
	index uint64
	err   error // sticky

	batch   []byte        // sealed chunks not yet handed to the output goroutine
	out     chan []byte   // batches of sealed chunks (or nil as a flush marker)
	free    chan []byte   // empty batch buffers
	flushed chan struct{} // acknowledges a flush marker
	done    chan struct{} // closed when the output goroutine exits
	mu      sync.Mutex
	outErr  error // first error from dst, read under mu
	closed  bool
}

// NewWriter writes the salt and commitment to dst and returns a Writer for
// the chunks. inputKey must be 32 uniformly random bytes, used for one message.
func NewWriter(inputKey, context []byte, dst io.Writer) (*Writer, error) {
	salt := make([]byte, SaltSize)
	if _, err := rand.Read(salt); err != nil {
		return nil, err
	}
	k, commitment, err := derive(inputKey, salt, context)
	if err != nil {
		return nil, err
	}
	prefix := append(salt, commitment[:]...)
	if _, err := dst.Write(prefix); err != nil {
		k.zero()
		return nil, fmt.Errorf("write chunked-encryption prefix: %w", err)
	}
	w := &Writer{
		keys:    k,
		buf:     make([]byte, 0, ChunkSize),
		out:     make(chan []byte, pipelineDepth),
		free:    make(chan []byte, pipelineDepth),
		flushed: make(chan struct{}),
		done:    make(chan struct{}),
	}
	for range pipelineDepth - 1 {
		w.free <- make([]byte, 0, batchChunks*EncChunkSize)
	}
	w.batch = make([]byte, 0, batchChunks*EncChunkSize)
	go w.output(dst)
	return w, nil
}

func (w *Writer) output(dst io.Writer) {
	defer close(w.done)
	for b := range w.out {
		if b == nil {
			w.flushed <- struct{}{}
			continue
		}
		w.mu.Lock()
		failed := w.outErr != nil
		w.mu.Unlock()
		if !failed {
			if _, err := dst.Write(b); err != nil {
				w.mu.Lock()
				w.outErr = fmt.Errorf("write sealed chunks: %w", err)
				w.mu.Unlock()
			}
		}
		w.free <- b[:0]
	}
}

func (w *Writer) checkOut() error {
	if w.err != nil {
		return w.err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.outErr != nil {
		w.err = w.outErr
	}
	return w.err
}

// sealChunk seals p (a full chunk, or the final short one) as the next
// chunk, and hands the batch over once it is full.
func (w *Writer) sealChunk(p []byte) error {
	if w.index >= maxChunks {
		w.err = ErrTooLong
		return w.err
	}
	w.batch = w.keys.seal(w.batch, p, w.index)
	w.index++
	if cap(w.batch)-len(w.batch) < EncChunkSize {
		w.handOff()
	}
	return w.checkOut()
}

// handOff sends the current batch to the output goroutine.
func (w *Writer) handOff() {
	if len(w.batch) == 0 {
		return
	}
	w.out <- w.batch
	w.batch = <-w.free
}

// Write encrypts p. Every chunk that becomes complete is sealed at once.
func (w *Writer) Write(p []byte) (int, error) {
	if w.closed {
		return 0, ErrClosed
	}
	if err := w.checkOut(); err != nil {
		return 0, err
	}
	n := 0
	for len(p) > 0 {
		// Seal straight from p when no partial chunk is pending.
		if len(w.buf) == 0 && len(p) >= ChunkSize {
			if err := w.sealChunk(p[:ChunkSize]); err != nil {
				return n, err
			}
			p, n = p[ChunkSize:], n+ChunkSize
			continue
		}
		c := min(ChunkSize-len(w.buf), len(p))
		w.buf = append(w.buf, p[:c]...)
		p, n = p[c:], n+c
		// A full chunk is never the final one: the final chunk is always short.
		if len(w.buf) == ChunkSize {
			if err := w.sealChunk(w.buf); err != nil {
				return n, err
			}
			w.buf = w.buf[:0]
		}
	}
	return n, nil
}

// Flush waits until every complete chunk has been sealed and written to dst.
// Bytes of an incomplete chunk stay buffered: a chunk is sealed only once it
// is full or at Close. After Flush returns nil the caller may fsync.
func (w *Writer) Flush() error {
	if w.closed {
		return ErrClosed
	}
	if err := w.checkOut(); err != nil {
		return err
	}
	w.handOff()
	w.out <- nil
	<-w.flushed
	return w.checkOut()
}

// Buffered reports how many plaintext bytes wait for their chunk to fill.
func (w *Writer) Buffered() int { return len(w.buf) }

// Close seals the final short chunk (possibly empty), waits for dst to
// receive it, and zeroes the key material. It does not close dst.
func (w *Writer) Close() error {
	if w.closed {
		return ErrClosed
	}
	if w.err == nil && w.sealChunk(w.buf) == nil {
		w.handOff()
	}
	w.closed = true
	close(w.out)
	<-w.done
	clear(w.buf[:cap(w.buf)])
	w.keys.zero()
	return w.checkOut()
}
