// Package store keeps committed segments exactly once: on the local
// filesystem (NewFS) or in an S3 bucket (NewS3), both behind the Store
// interface, which is the receiver's plug-in point for storage.
package store

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"sync"

	"github.com/zeebo/blake3"

	"github.com/uploadbox/uploadbox/wire"
)

// Store holds immutable objects named by keys such as
// "DEVICEID/RECORDINGID/000003.ubx".
//
// Implementations verify every Put against the announced size and SHA-256
// before the object becomes visible, never overwrite an object, and make it
// durable before Put returns.
type Store interface {
	// Put stores the size bytes read from r under key, exactly once. If key
	// already holds an object with the same SHA-256, Put returns nil; if it
	// holds a different one, ErrConflict. If r does not yield exactly size
	// bytes hashing to sha256, Put returns ErrHashMismatch and stores nothing.
	Put(ctx context.Context, key string, r io.Reader, size int64, sha256 [32]byte) error
	// Get returns the object's content and size, or ErrNotFound.
	Get(ctx context.Context, key string) (io.ReadCloser, int64, error)
	// Stat returns the object's size and SHA-256, or ErrNotFound.
	Stat(ctx context.Context, key string) (Info, error)
	// List returns the keys that start with prefix, sorted.
	List(ctx context.Context, prefix string) ([]string, error)
}

// Sum is a hash of an object's bytes: SHA-256, or BLAKE3-256 (a segment's
// hash, docs/format.md §6). Put takes SHA-256 only, the hash its servers
// check (S3's x-amz-checksum-sha256); Adopt takes either, since it does not
// hash what it adopts.
type Sum struct {
	Alg  wire.HashAlg
	Hash [32]byte
}

// Info describes a stored object.
type Info struct {
	Size   int64
	SHA256 [32]byte
}

var (
	// ErrNotFound means no object is stored under the key.
	ErrNotFound = errors.New("store: object not found")
	// ErrConflict means the key already holds an object with another SHA-256.
	ErrConflict = errors.New("store: key already holds a different object")
	// ErrHashMismatch means the data did not match the announced size or
	// SHA-256; nothing was stored.
	ErrHashMismatch = errors.New("store: data does not match the announced size and sha-256")
	// ErrBadKey means the key or prefix is not allowed.
	ErrBadKey = errors.New("store: invalid key")
)

// maxKeyLen is S3's limit on object key length.
const maxKeyLen = 1024

// ValidateKey reports whether key is acceptable to every Store: 1 to 1024
// characters of [A-Za-z0-9._/-], slash-separated non-empty components, no
// leading or trailing slash, no component starting with "." (which also
// excludes "." and ".."; names starting with "." are reserved for the
// filesystem store's temporary files) and no "..".
func ValidateKey(key string) error {
	if key == "" || len(key) > maxKeyLen {
		return fmt.Errorf("%w: %q: length must be 1 to %d", ErrBadKey, key, maxKeyLen)
	}
	if err := checkChars(key); err != nil {
		return err
	}
	if strings.Contains(key, "..") {
		return fmt.Errorf("%w: %q: contains \"..\"", ErrBadKey, key)
	}
	for c := range strings.SplitSeq(key, "/") {
		if c == "" {
			return fmt.Errorf("%w: %q: empty path component (leading, trailing or double slash)", ErrBadKey, key)
		}
		if c[0] == '.' {
			return fmt.Errorf("%w: %q: path component starts with \".\"", ErrBadKey, key)
		}
	}
	return nil
}

// validatePrefix accepts "" and any string that could begin a valid key.
func validatePrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	if len(prefix) > maxKeyLen {
		return fmt.Errorf("%w: prefix %q longer than %d", ErrBadKey, prefix, maxKeyLen)
	}
	if err := checkChars(prefix); err != nil {
		return err
	}
	// Checking the prefix with a character appended catches "..", leading
	// and double slashes and dot-components, but allows a trailing slash.
	if err := ValidateKey(prefix + "x"); err != nil {
		return fmt.Errorf("%w: prefix %q cannot begin a valid key", ErrBadKey, prefix)
	}
	return nil
}

func checkChars(s string) error {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '.', c == '_', c == '/', c == '-':
		default:
			return fmt.Errorf("%w: %q: character %q at %d not in [A-Za-z0-9._/-]", ErrBadKey, s, c, i)
		}
	}
	return nil
}

// verifyingReader passes through exactly size bytes of r while hashing them.
// It withholds bytes and returns ErrHashMismatch instead if r is shorter or
// longer than size or the SHA-256 differs: a chunk is released only when
// at least one more byte is known to follow it, or, for the last chunk,
// after r's end and the hash were checked. So a consumer never sees a
// complete, hash-matching body for bad data, even an HTTP server that takes
// a connection cut short for the end of the body.
type verifyingReader struct {
	ctx  context.Context
	r    *bufio.Reader
	size int64
	want [32]byte
	n    int64 // bytes released
	h    hash.Hash
	done bool // all size bytes released

	// An HTTP transport may still be reading the body in its own goroutine
	// when the request returns (after an early response such as 412). mu
	// serialises Read with stop, which Put calls so that the caller's
	// reader is never touched after Put returns.
	mu  sync.Mutex
	err error // sticky
}

var errReaderStopped = errors.New("store: body read after the request ended")

// stop makes further Reads fail and returns the error that ended reading
// before, if any.
func (v *verifyingReader) stop() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	err := v.err
	if err == nil {
		v.err = errReaderStopped
	}
	return err
}

func newVerifyingReader(ctx context.Context, r io.Reader, size int64, want [32]byte) *verifyingReader {
	return &verifyingReader{ctx: ctx, r: bufio.NewReaderSize(r, copyBuffer), size: size, want: want, h: sha256.New()}
}

func (v *verifyingReader) fail(err error) (int, error) {
	v.err = err
	return 0, err
}

func (v *verifyingReader) Read(p []byte) (int, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.err != nil {
		return 0, v.err
	}
	if v.done {
		return 0, io.EOF
	}
	if err := v.ctx.Err(); err != nil {
		return v.fail(err)
	}
	remaining := v.size - v.n
	if remaining == 0 {
		// size 0: nothing to release, only to check.
		if err := v.finish(); err != nil {
			return v.fail(err)
		}
		v.done = true
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	if int64(len(p)) > remaining {
		p = p[:remaining]
	}
	n, err := v.r.Read(p)
	if n == 0 {
		if err == io.EOF {
			return v.fail(fmt.Errorf("%w: got %d bytes, want %d", ErrHashMismatch, v.n, v.size))
		}
		if err == nil {
			err = io.ErrNoProgress
		}
		return v.fail(err)
	}
	v.h.Write(p[:n])
	if v.n+int64(n) == v.size {
		if err := v.finish(); err != nil {
			return v.fail(err)
		}
		v.n += int64(n)
		v.done = true
		return n, nil
	}
	// Release these bytes only if more follow.
	if _, err := v.r.Peek(1); err != nil {
		if err == io.EOF {
			err = fmt.Errorf("%w: got %d bytes, want %d", ErrHashMismatch, v.n+int64(n), v.size)
		}
		return v.fail(err)
	}
	v.n += int64(n)
	return n, nil
}

// finish runs when all size bytes were read: r must be at its end and the
// hash must match.
func (v *verifyingReader) finish() error {
	if _, err := v.r.Peek(1); err == nil {
		return fmt.Errorf("%w: more than %d bytes", ErrHashMismatch, v.size)
	} else if err != io.EOF {
		return err
	}
	var got [32]byte
	v.h.Sum(got[:0])
	if got != v.want {
		return fmt.Errorf("%w: sha-256 %x, want %x", ErrHashMismatch, got, v.want)
	}
	return nil
}

// sumReader returns the hash alg of everything r yields.
func sumReader(ctx context.Context, r io.Reader, alg wire.HashAlg) (Sum, error) {
	var h hash.Hash
	switch alg {
	case wire.HashSHA256:
		h = sha256.New()
	case wire.HashBLAKE3:
		h = blake3.New()
	default:
		return Sum{}, fmt.Errorf("store: unknown hash %q", alg)
	}
	if _, err := io.Copy(h, ctxReader{ctx, r}); err != nil {
		return Sum{}, err
	}
	sum := Sum{Alg: alg}
	h.Sum(sum.Hash[:0])
	return sum, nil
}

// hashReader returns the size and SHA-256 of everything r yields.
func hashReader(ctx context.Context, r io.Reader) (Info, error) {
	h := sha256.New()
	n, err := io.Copy(h, ctxReader{ctx, r})
	if err != nil {
		return Info{}, err
	}
	info := Info{Size: n}
	h.Sum(info.SHA256[:0])
	return info, nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
