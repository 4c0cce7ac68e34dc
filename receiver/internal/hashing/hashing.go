// Package hashing hashes tus uploads while their bytes arrive. Wrap puts
// a Store in front of a tusd store composer, whatever store is underneath:
// every byte a WriteChunk hands to the store also goes through a keyless
// segment Verifier (crypto), whose BLAKE3 state gives the signature digest
// and the segment hash, and through SHA-256 where a commit needs it, so
// that a commit finds the digests ready instead of reading the upload
// again.
//
// SHA-256 is computed for an upload that did not announce the BLAKE3
// segment hash at creation (Announced: a box of an older release commits
// with SHA-256), and for every upload while the commits copy uploads into
// the store (SetCopying), whose Put checks the SHA-256 of what it copies.
// An announced upload that will be adopted (renamed into the fs store)
// goes through BLAKE3 only, and has no state saved.
//
// The SHA-256 state is saved after each chunk (States, keyed by upload id)
// and survives a receiver restart or a move to another replica. The
// Verifier's BLAKE3 state cannot be saved (github.com/zeebo/blake3 does not
// serialise it) and lives in this process only; without it, the commit
// verifies while it copies the upload into the store. Hashing resumes only
// when a chunk starts exactly where the hashed bytes end; otherwise the
// upload's state is dropped and the commit reads the upload as before.
package hashing

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"
	"sync/atomic"

	tusd "github.com/tus/tusd/v2/pkg/handler"

	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/wire"
)

// storageKeyPath is the key under which tusd's filestore names an
// upload's file in its FileInfo.Storage (filestore.StorageKeyPath).
const storageKeyPath = "Path"

// MaxLive bounds the uploads whose Verifier is kept in memory (about
// 20 KiB each); beyond it, an upload keeps its saved SHA-256 state only
// (one without SHA-256 keeps nothing, and its commit reads it).
const MaxLive = 1024

// States keeps each upload's saved hash state, keyed by upload id.
type States interface {
	// Load returns the state saved for id, or an error wrapping
	// ErrNoState.
	Load(ctx context.Context, id string) ([]byte, error)
	Save(ctx context.Context, id string, state []byte) error
	// Delete removes id's state; a missing one is not an error.
	Delete(ctx context.Context, id string) error
}

// ErrNoState means no state is saved for the upload.
var ErrNoState = errors.New("no hash state saved for the upload")

// Sums is what the hashes saw of an upload: its first Length bytes.
type Sums struct {
	Length int64
	// SHA256 is set when HasSHA256: the upload was hashed with SHA-256.
	SHA256    [32]byte
	HasSHA256 bool
	// Verifier saw the same bytes, when this process hashed them all;
	// nil when the upload was resumed from a saved state.
	Verifier *crypto.Verifier
}

// Store is a tusd DataStore that hashes what its uploads write.
type Store struct {
	core   tusd.DataStore
	states States

	mu   sync.Mutex
	live map[string]*entry

	read atomic.Int64 // bytes read back through GetReader
	// copying: commits copy uploads into the store, so every upload is
	// hashed with SHA-256 (SetCopying).
	copying atomic.Bool
}

// Announced reports whether an upload's creation announced the BLAKE3
// segment hash (tus metadata wire.HashMetadata = "blake3"): its commit
// carries that hash and not SHA-256.
func Announced(meta tusd.MetaData) bool {
	return meta[wire.HashMetadata] == string(wire.HashBLAKE3)
}

// SetCopying says whether commits copy uploads into the store (Put, which
// checks their SHA-256) rather than adopt them: then uploads started from
// now on are hashed with SHA-256 even when they announced BLAKE3.
func (s *Store) SetCopying(copying bool) { s.copying.Store(copying) }

// entry is one upload's hashes over its first length bytes.
type entry struct {
	length int64
	sha    hash.Hash        // nil: not hashed with SHA-256 (announced, adopted)
	v      *crypto.Verifier // nil when resumed from a saved state
	// path is the upload's file when its store keeps it in one (tusd's
	// filestore), and st that file as this process last wrote it: a file
	// changed since by anyone else no longer has the bytes hashed.
	path string
	st   stamp
}

// unchanged reports whether e's file is as this process last wrote it
// (always true for an upload without a file).
func (e *entry) unchanged() bool {
	if e.path == "" {
		return true
	}
	st, err := stampOf(e.path)
	return err == nil && st == e.st
}

// Wrap makes the composer's core store hash its uploads and returns the
// wrapper; the composer's extensions are given the inner uploads.
func Wrap(c *tusd.StoreComposer, states States) *Store {
	s := &Store{core: c.Core, states: states, live: map[string]*entry{}}
	c.UseCore(s)
	if c.UsesTerminater {
		c.UseTerminater(terminater{s, c.Terminater})
	}
	if c.UsesConcater {
		c.UseConcater(concater{c.Concater})
	}
	if c.UsesLengthDeferrer {
		c.UseLengthDeferrer(lengthDeferrer{c.LengthDeferrer})
	}
	if c.UsesContentServer {
		c.UseContentServer(contentServer{c.ContentServer})
	}
	return s
}

var _ tusd.DataStore = (*Store)(nil)

// NewUpload implements tusd.DataStore.
func (s *Store) NewUpload(ctx context.Context, info tusd.FileInfo) (tusd.Upload, error) {
	up, err := s.core.NewUpload(ctx, info)
	if err != nil {
		return nil, err
	}
	if info, err = up.GetInfo(ctx); err != nil {
		return nil, err
	}
	return &upload{Upload: up, s: s, id: info.ID}, nil
}

// GetUpload implements tusd.DataStore.
func (s *Store) GetUpload(ctx context.Context, id string) (tusd.Upload, error) {
	up, err := s.core.GetUpload(ctx, id)
	if err != nil {
		return nil, err
	}
	return &upload{Upload: up, s: s, id: id}, nil
}

// ReadBytes is how many bytes were read back from uploads (GetReader)
// since the Store was made: what commits cost in reading.
func (s *Store) ReadBytes() int64 { return s.read.Load() }

// Sums returns what the hashes saw of upload id, if anything: the saved
// state, with this process's Verifier when it saw the same bytes (another
// replica may have hashed more of the upload since).
func (s *Store) Sums(ctx context.Context, id string) (Sums, bool) {
	s.mu.Lock()
	live := s.live[id]
	if live != nil && !live.unchanged() {
		// Written since by another process (another replica, or behind
		// the receiver's back): this Verifier no longer speaks for the
		// file, and the saved state is checked against it by a read.
		delete(s.live, id)
		live = nil
	}
	s.mu.Unlock()
	e, err := s.load(ctx, id)
	switch {
	case live != nil && (err != nil || live.length == e.length):
		e = live
	case err != nil:
		return Sums{}, false
	}
	sums := Sums{Length: e.length, Verifier: e.v, HasSHA256: e.sha != nil}
	if e.sha != nil {
		e.sha.Sum(sums.SHA256[:0])
	}
	return sums, true
}

// Forget drops upload id's hash state (it was committed or removed).
func (s *Store) Forget(ctx context.Context, id string) error {
	s.mu.Lock()
	delete(s.live, id)
	s.mu.Unlock()
	return s.states.Delete(ctx, id)
}

// resume returns the hashes to continue for a chunk of upload id written
// at offset, or nil when they do not end exactly there (then the upload's
// state is dropped: it is not hashed any more). sha says whether an
// upload started at offset 0 is hashed with SHA-256 too.
func (s *Store) resume(ctx context.Context, id string, offset int64, sha func() bool) *entry {
	s.mu.Lock()
	e := s.live[id]
	delete(s.live, id)
	s.mu.Unlock()
	switch {
	case e != nil && e.length == offset && e.unchanged():
		return e
	case offset == 0:
		e := &entry{v: crypto.NewVerifier()}
		if sha() {
			e.sha = sha256.New()
		}
		return e
	}
	// Another process (or this one before a restart) may have hashed it.
	if e, err := s.load(ctx, id); err == nil && e.length == offset {
		return e
	}
	s.states.Delete(ctx, id)
	return nil
}

// settle records that a chunk wrote n bytes at offset after its reader
// hashed read bytes: the hashes stand for the upload only if they are the
// same bytes.
func (s *Store) settle(ctx context.Context, id string, e *entry, offset, n, read int64) {
	if n != read {
		s.states.Delete(ctx, id)
		return
	}
	e.length = offset + n
	if e.path != "" {
		st, err := stampOf(e.path)
		if err != nil || st.size != e.length {
			s.states.Delete(ctx, id)
			return
		}
		e.st = st
	}
	if e.sha != nil {
		state, err := e.encode(id)
		if err != nil || s.states.Save(ctx, id, state) != nil {
			// A stale saved state is harmless: its length no longer matches.
			s.states.Delete(ctx, id)
		}
	}
	if e.v == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.live) >= MaxLive {
		for other := range s.live { // any one; it keeps its saved state
			delete(s.live, other)
			break
		}
	}
	s.live[id] = e
}

// The saved state: magic, upload id, length, SHA-256 state.
const stateMagic = "uploadbox.hash.v1\n"

func (e *entry) encode(id string) ([]byte, error) {
	sha, err := e.sha.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return nil, err
	}
	b := append([]byte(stateMagic), byte(len(id)))
	b = append(b, id...)
	b = binary.BigEndian.AppendUint64(b, uint64(e.length))
	return append(b, sha...), nil
}

func (s *Store) load(ctx context.Context, id string) (*entry, error) {
	b, err := s.states.Load(ctx, id)
	if err != nil {
		return nil, err
	}
	bad := fmt.Errorf("hash state of upload %s is damaged: %w", id, ErrNoState)
	rest, ok := bytes.CutPrefix(b, []byte(stateMagic))
	if !ok || len(rest) < 1+len(id)+8 || int(rest[0]) != len(id) || string(rest[1:1+len(id)]) != id {
		return nil, bad
	}
	rest = rest[1+len(id):]
	e := &entry{length: int64(binary.BigEndian.Uint64(rest)), sha: sha256.New()}
	if e.length < 0 || e.sha.(encoding.BinaryUnmarshaler).UnmarshalBinary(rest[8:]) != nil {
		return nil, bad
	}
	return e, nil
}

// upload hashes what its WriteChunk writes.
type upload struct {
	tusd.Upload
	s  *Store
	id string
}

// WriteChunk implements tusd.Upload.
func (u *upload) WriteChunk(ctx context.Context, offset int64, src io.Reader) (int64, error) {
	e := u.s.resume(ctx, u.id, offset, func() bool {
		if u.s.copying.Load() {
			return true
		}
		info, err := u.Upload.GetInfo(ctx)
		return err != nil || !Announced(info.MetaData)
	})
	if e == nil {
		return u.Upload.WriteChunk(ctx, offset, src)
	}
	if e.v != nil && e.path == "" {
		// Only a live entry is trusted without reading the file again.
		if info, err := u.Upload.GetInfo(ctx); err == nil {
			e.path = info.Storage[storageKeyPath]
		}
	}
	t := &tee{r: src, e: e, ctx: ctx}
	n, err := u.Upload.WriteChunk(ctx, offset, t)
	u.s.settle(ctx, u.id, e, offset, n, t.n)
	return n, err
}

// GetReader implements tusd.Upload, counting what is read.
func (u *upload) GetReader(ctx context.Context) (io.ReadCloser, error) {
	rc, err := u.Upload.GetReader(ctx)
	if err != nil {
		return nil, err
	}
	return &countingReadCloser{ReadCloser: rc, n: &u.s.read}, nil
}

type countingReadCloser struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c *countingReadCloser) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// tee hashes every byte the store reads.
type tee struct {
	r io.Reader
	e *entry
	n int64 // bytes read from r (and hashed by SHA-256, if e has it)
	// ctx is the WriteChunk's, for WriteTo, whose signature has none:
	// the tee lives for that one call.
	ctx context.Context
}

func (t *tee) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if n > 0 {
		if t.e.sha != nil {
			t.e.sha.Write(p[:n])
		}
		if t.e.v != nil {
			t.e.v.Write(p[:n])
		}
		t.n += int64(n)
	}
	return n, err
}

// writePiece is the size of the pieces tee.WriteTo writes, and pipeDepth
// how many one WriteTo holds at once, 512 KiB per PATCH in progress as
// with two of 256 KiB: in smaller pieces the reading and the writing
// wait less on each other (the upload bench: 585 MB/s against 559).
const (
	writePiece = 64 << 10
	pipeDepth  = 8
)

var pieces = sync.Pool{New: func() any { return new([writePiece]byte) }}

// piece is n bytes read into buf, already through SHA-256 if the upload
// is hashed with it.
type piece struct {
	buf *[writePiece]byte
	n   int
}

// WriteTo lets a store that copies with io.Copy (tusd's filestore) write
// in pieces of writePiece bytes instead of its own 32 KiB, and uses two
// cores for one PATCH: a goroutine reads the request into a piece and
// hashes it with SHA-256 (if the upload is) while this one passes the previous piece through
// the Verifier (BLAKE3) and writes it. Bytes read are written before a
// read error (or the context's end) is returned, so a cut request keeps
// what it brought; after a write error nothing more is read, and WriteTo
// returns only once the reading goroutine has.
func (t *tee) WriteTo(w io.Writer) (int64, error) {
	free := make(chan *[writePiece]byte, pipeDepth)
	for range pipeDepth {
		free <- pieces.Get().(*[writePiece]byte)
	}
	// full never holds more than the pipeDepth pieces there are, so
	// sends on it and on free do not block.
	full := make(chan piece, pipeDepth)
	stop := make(chan struct{})
	var rerr error // the reading's end, set before full is closed
	go func() {
		defer close(full)
		rerr = t.fill(free, full, stop)
	}()
	var written int64
	var werr error
	for p := range full {
		if werr == nil {
			if t.e.v != nil {
				t.e.v.Write(p.buf[:p.n])
			}
			var m int
			m, werr = w.Write(p.buf[:p.n])
			written += int64(m)
			if werr == nil && m < p.n {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				close(stop)
			}
		}
		free <- p.buf
	}
	for range pipeDepth {
		pieces.Put(<-free)
	}
	switch {
	case werr != nil:
		return written, werr
	case rerr == io.EOF:
		return written, nil
	}
	return written, rerr
}

// fill reads the request into pieces from free, hashes them with
// SHA-256 (if the upload is) and hands them on in full, until a read error (io.EOF at the
// end), the context's end, or stop; it returns that error (nil on stop).
// A piece is handed on full, or short when the reading ends.
func (t *tee) fill(free chan *[writePiece]byte, full chan<- piece, stop <-chan struct{}) error {
	for {
		var buf *[writePiece]byte
		select {
		case buf = <-free:
		case <-stop:
			return nil
		case <-t.ctx.Done():
			return t.ctx.Err()
		}
		n := 0
		var err error
		for n < len(buf) && err == nil {
			var m int
			m, err = t.r.Read(buf[n:])
			n += m
			if err == nil {
				select {
				case <-stop:
					free <- buf // read but not hashed: not written either
					return nil
				default:
					err = t.ctx.Err()
				}
			}
		}
		if n == 0 {
			free <- buf
			return err
		}
		if t.e.sha != nil {
			t.e.sha.Write(buf[:n])
		}
		t.n += int64(n)
		full <- piece{buf, n}
		if err != nil {
			return err
		}
	}
}

// inner returns the store's own upload under a wrapper.
func inner(up tusd.Upload) tusd.Upload {
	if u, ok := up.(*upload); ok {
		return u.Upload
	}
	return up
}

type terminater struct {
	s    *Store
	next tusd.TerminaterDataStore
}

func (t terminater) AsTerminatableUpload(up tusd.Upload) tusd.TerminatableUpload {
	return terminatable{t.next.AsTerminatableUpload(inner(up)), t.s, up}
}

type terminatable struct {
	tusd.TerminatableUpload
	s  *Store
	up tusd.Upload
}

// Terminate removes the upload and its hash state.
func (t terminatable) Terminate(ctx context.Context) error {
	if err := t.TerminatableUpload.Terminate(ctx); err != nil {
		return err
	}
	if u, ok := t.up.(*upload); ok {
		return t.s.Forget(ctx, u.id)
	}
	return nil
}

type concater struct{ next tusd.ConcaterDataStore }

func (c concater) AsConcatableUpload(up tusd.Upload) tusd.ConcatableUpload {
	return concatable{c.next.AsConcatableUpload(inner(up))}
}

type concatable struct{ tusd.ConcatableUpload }

// ConcatUploads hands the inner partial uploads on. The result has no hash
// state (it was not written through WriteChunk): its commit reads it.
func (c concatable) ConcatUploads(ctx context.Context, partials []tusd.Upload) error {
	in := make([]tusd.Upload, len(partials))
	for i, p := range partials {
		in[i] = inner(p)
	}
	return c.ConcatableUpload.ConcatUploads(ctx, in)
}

type lengthDeferrer struct{ next tusd.LengthDeferrerDataStore }

func (l lengthDeferrer) AsLengthDeclarableUpload(up tusd.Upload) tusd.LengthDeclarableUpload {
	return l.next.AsLengthDeclarableUpload(inner(up))
}

type contentServer struct{ next tusd.ContentServerDataStore }

func (c contentServer) AsServableUpload(up tusd.Upload) tusd.ServableUpload {
	return c.next.AsServableUpload(inner(up))
}
