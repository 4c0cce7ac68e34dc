// Package spool is the box's durable upload queue: a bbolt index (spool.db)
// beside the sealed segment files, with one state per segment.
//
// Every transition is one bbolt transaction, fsynced on commit, so the
// index survives a power cut in the last state it reported. A segment is
// keyed by its sealed file name, "<recording-hex>-<seq>.ubx"; while the
// recorder writes it, the file on disk carries the ".partial" suffix.
//
// States and transitions:
//
//	(none)      → recording   MarkRecording
//	(none)      → sealed      MarkSealed (the file verifies OK)
//	recording   → sealed      MarkSealed
//	empty       → sealed      MarkSealed, only for a last segment: the recording's end sealed in its place
//	sealed      → uploading   StartUpload
//	truncated   → uploading   StartUpload
//	uploading   → uploading   StartUpload (same URL keeps the offset, a new URL restarts at 0), SetOffset
//	uploading   → committed   Commit (stores the receipt; the same receipt again is a no-op)
//	committed   → wiped       Wipe (unlink, fsync the directory, record the wipe)
//	wiped       → wiped       Wipe is a no-op
//	uploading   → uploading   FreshStart (forget the upload URL, count the fresh start)
//	sealed, truncated, uploading → quarantined   Quarantine (the receiver refused it for good)
//	quarantined → sealed, truncated or corrupt   Retry (verified again, as Reconcile does)
//	quarantined, corrupt → discarded             Discard (unlink, fsync the directory)
//	recording   → truncated, sealed, corrupt or empty   Settle (the recorder failed; no restart needed)
//
// Reconcile adds truncated, corrupt, missing and empty; see Reconcile. A
// segment that ends inside its header or before its first full payload chunk (the box stopped
// right after writing its header) holds no media: it becomes empty, its
// file is removed at once and it is never uploaded. Corrupt and
// missing segments are never uploaded, deleted or dropped from the index:
// they wait for a technician. Quarantined segments are kept on disk with the
// receiver's refusal and are not uploaded until Retry; they never hold up
// the segments after them. Discard, a technician's decision, is the only
// way a sealed file is deleted without a receipt.
package spool

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/zeebo/blake3"
	"go.etcd.io/bbolt"

	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/internal/atomicfile"
	"github.com/uploadbox/uploadbox/wire"
)

// File names in the spool directory. They match the recorder's
// (capture/recorder SealedSuffix and PartialSuffix); spool does not import
// the capture side.
const (
	SealedSuffix  = ".ubx"
	PartialSuffix = ".ubx.partial"
	// IndexFile is the bbolt index inside the spool directory.
	IndexFile = "spool.db"
)

var segmentName = regexp.MustCompile(`^([0-9a-f]{32})-([0-9]{6,20})\.ubx(\.partial)?$`)

// State is the upload state of one segment.
type State string

// The states of a segment. The zero State means "not in the index".
const (
	Recording State = "recording" // a .partial file the recorder is writing
	Sealed    State = "sealed"    // complete and verified, waiting for upload
	Truncated State = "truncated" // cut by a crash, verified TRUNCATED; still uploaded
	Uploading State = "uploading" // an upload URL and a confirmed offset
	Committed State = "committed" // the receiver's receipt is stored; the file awaits its wipe
	Wiped     State = "wiped"     // file removed, record kept
	Corrupt   State = "corrupt"   // verified CORRUPT; kept and reported, never uploaded
	Missing   State = "missing"   // the file vanished before its wipe; kept and reported
	// Quarantined: the receiver refused the segment for good (Refusal
	// says why); kept on disk, skipped by Next until Retry.
	Quarantined State = "quarantined"
	// Discarded: a technician deleted the file without a receipt
	// (Discard); the record is kept so the segment is never sent again.
	Discarded State = "discarded"
	// Empty: the segment was cut before any media reached the disk (only
	// its header was written); the file is removed, the record kept, and
	// nothing is uploaded. Reason says "empty after a crash" (or a write error).
	// The recording's end may later be sealed under its number (MarkSealed).
	Empty State = "empty"
)

// MaxFreshStarts is how many times a segment may be uploaded afresh after
// the receiver found its upload unusable before it is quarantined.
const MaxFreshStarts = 3

func (s State) String() string {
	if s == "" {
		return "absent"
	}
	return string(s)
}

// needsUpload reports whether Next may return a segment in state s.
func (s State) needsUpload() bool { return s == Sealed || s == Truncated || s == Uploading }

// onDisk reports whether a segment in state s is expected to hold a file.
func (s State) onDisk() bool {
	return s != Wiped && s != Missing && s != Discarded && s != Empty && s != ""
}

// gone reports whether a segment in state s has left the box for good.
func (s State) gone() bool { return s == Wiped || s == Discarded || s == Empty }

// Errors callers branch on.
var (
	ErrNoReceipt      = errors.New("no receipt stored: a segment is wiped only after the receiver confirmed it")
	ErrSpoolFull      = errors.New("spool full")
	ErrDiskReserve    = errors.New("disk reserve reached")
	ErrUnknownSegment = errors.New("unknown segment")
)

// TransitionError is an illegal state change of one segment.
type TransitionError struct {
	Name string
	From State
	To   State
	Err  error // optional cause, e.g. ErrNoReceipt
}

func (e *TransitionError) Error() string {
	msg := fmt.Sprintf("spool: segment %s: illegal transition %s → %s", e.Name, e.From, e.To)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *TransitionError) Unwrap() error { return e.Err }

// Record is the index entry of one segment.
type Record struct {
	Name        string   // key: "<recording-hex>-<seq>.ubx"
	File        string   // name on disk: Name, or Name+".partial" while recording or when a partial file was corrupt
	RecordingID [16]byte `json:"-"`
	Sequence    uint64
	Size        int64 // file size when sealed or reconciled
	// BLAKE3 is the segment hash, BLAKE3-256 of the whole file
	// (docs/format.md §6), from the verification: the segment's upload
	// announces it and its commit carries it. A record an older release
	// wrote has SHA256 instead (and a zero BLAKE3): its segment keeps that
	// protocol (a commit with sha256 and a v1 receipt) until it is
	// verified again.
	BLAKE3 [32]byte `json:"-"`
	SHA256 [32]byte `json:"-"`
	// Commitment is the segment's key commitment (the next segment's
	// link), and Last its trailer's last flag, from verification; zero
	// and false in records written before they were kept.
	Commitment  [crypto.CommitmentSize]byte `json:"-"`
	Last        bool                        `json:",omitempty"`
	State       State
	Before      State  `json:",omitempty"` // the state before Missing
	Reason      string `json:",omitempty"` // why a segment is truncated, corrupt or missing
	UploadURL   string `json:",omitempty"`
	Offset      int64  // bytes the receiver confirmed
	Receipt     []byte `json:",omitempty"`
	Attempts    int    // StartUpload calls
	FreshStarts int    `json:",omitempty"` // FreshStart calls since the last Retry
	// Refusal is the receiver's answer that quarantined the segment.
	Refusal     *Refusal `json:",omitempty"`
	CreatedAt   time.Time
	SealedAt    time.Time `json:",omitzero"`
	CommittedAt time.Time `json:",omitzero"`
	WipedAt     time.Time `json:",omitzero"`
	// DiscardedAt is when a technician discarded the quarantined file.
	DiscardedAt time.Time `json:",omitzero"`
}

// Hash is the hash of the segment's file its upload announces and its
// commit and receipt carry: the BLAKE3 segment hash, or SHA-256 for a
// record an older release wrote.
func (r Record) Hash() (wire.HashAlg, [32]byte) {
	if r.BLAKE3 != ([32]byte{}) {
		return wire.HashBLAKE3, r.BLAKE3
	}
	return wire.HashSHA256, r.SHA256
}

// Refusal is what the receiver said when it refused a segment for good.
type Refusal struct {
	Status  int    // HTTP status
	Reason  string `json:",omitempty"` // the receiver's machine-readable reason, if it sent one
	Message string // the receiver's message, or the box's own when it gave up
	At      time.Time
}

// String reads "HTTP 409 exists: message" ("HTTP 409: message" without a
// reason), on one line.
func (r Refusal) String() string {
	s := fmt.Sprintf("HTTP %d", r.Status)
	if r.Reason != "" {
		s += " " + r.Reason
	}
	return s + ": " + strings.Join(strings.Fields(r.Message), " ")
}

// recordJSON stores the byte arrays as hex, readable with bbolt tools.
type recordJSON struct {
	Record
	RecordingID string
	BLAKE3      string `json:",omitempty"`
	SHA256      string `json:",omitempty"`
	Commitment  string `json:",omitempty"`
}

func (r Record) encode() ([]byte, error) {
	j := recordJSON{Record: r, RecordingID: hex.EncodeToString(r.RecordingID[:])}
	if r.BLAKE3 != ([32]byte{}) {
		j.BLAKE3 = hex.EncodeToString(r.BLAKE3[:])
	}
	if r.SHA256 != ([32]byte{}) {
		j.SHA256 = hex.EncodeToString(r.SHA256[:])
	}
	if r.Commitment != ([crypto.CommitmentSize]byte{}) {
		j.Commitment = hex.EncodeToString(r.Commitment[:])
	}
	return json.Marshal(j)
}

func decodeRecord(b []byte) (Record, error) {
	var j recordJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return Record{}, err
	}
	r := j.Record
	if err := decodeHex(r.RecordingID[:], j.RecordingID); err != nil {
		return Record{}, fmt.Errorf("recording id: %w", err)
	}
	if j.BLAKE3 != "" {
		if err := decodeHex(r.BLAKE3[:], j.BLAKE3); err != nil {
			return Record{}, fmt.Errorf("blake3: %w", err)
		}
	}
	if j.SHA256 != "" {
		if err := decodeHex(r.SHA256[:], j.SHA256); err != nil {
			return Record{}, fmt.Errorf("sha256: %w", err)
		}
	}
	if j.Commitment != "" {
		if err := decodeHex(r.Commitment[:], j.Commitment); err != nil {
			return Record{}, fmt.Errorf("commitment: %w", err)
		}
	}
	return r, nil
}

// fileHash is BLAKE3-256 of all of f, read again from its start.
func fileHash(f *os.File) ([32]byte, error) {
	var sum [32]byte
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return sum, err
	}
	h := blake3.New()
	if _, err := io.Copy(h, f); err != nil {
		return sum, err
	}
	h.Sum(sum[:0])
	return sum, nil
}

func decodeHex(dst []byte, s string) error {
	b, err := hex.DecodeString(s)
	if err != nil {
		return err
	}
	if len(b) != len(dst) {
		return fmt.Errorf("%d bytes, want %d", len(b), len(dst))
	}
	copy(dst, b)
	return nil
}

// Options configures a Spool.
type Options struct {
	// MaxBytes caps the total size of the segment files not yet wiped; 0 means no cap.
	MaxBytes int64
	// MinFree is the free space the filesystem must keep; 0 means no reserve.
	MinFree int64
	// Device, if set, is the only device key accepted during verification.
	Device *crypto.DevicePublicKey
	Logger *slog.Logger

	// freeSpace reports the bytes available to the service; nil means statfs.
	freeSpace func(dir string) (int64, error)
	// now is the clock; nil means time.Now.
	now func() time.Time
}

// Spool is an open spool directory. Its methods are safe for concurrent use.
type Spool struct {
	dir      string
	db       *bbolt.DB
	opts     Options
	limitsMu sync.Mutex // guards opts.MaxBytes and opts.MinFree
	log      *slog.Logger

	mu sync.Mutex // serialises transitions that touch files as well as the index

	reconciled []Decision // what Open's reconcile decided
}

var bucketSegments = []byte("segments")

// Open opens (creating if needed) the spool in dir and reconciles the
// index with the files (see Reconcile). No recorder may write into dir
// while Open runs. A second Open of the same dir fails after 2 s.
func Open(dir string, opts Options) (*Spool, error) {
	if opts.MaxBytes < 0 || opts.MinFree < 0 {
		return nil, fmt.Errorf("open spool %s: MaxBytes and MinFree must not be negative", dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open spool %s: %w", dir, err)
	}
	if opts.freeSpace == nil {
		opts.freeSpace = statfsFree
	}
	if opts.now == nil {
		opts.now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	path := filepath.Join(dir, IndexFile)
	// The timeout turns a second opener (another daemon) into an error
	// instead of a hang on the file lock.
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open spool index %s: %w (is another uploadbox daemon using it?)", path, err)
	}
	if err := db.Update(func(tx *bbolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketSegments)
		return err
	}); err != nil {
		db.Close()
		return nil, fmt.Errorf("open spool index %s: %w", path, err)
	}
	s := &Spool{dir: dir, db: db, opts: opts, log: log.With("component", "spool", "dir", dir)}
	// A segment that cannot be reconciled now (logged at error level)
	// keeps its state and is retried at the next Open; it must not keep
	// the daemon from recording and uploading everything else.
	d, _, err := s.reconcile()
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open spool %s: %w", dir, err)
	}
	s.reconciled = d
	return s, nil
}

// Reconciled returns what the reconcile that Open ran decided, for the
// daemon's audit log.
func (s *Spool) Reconciled() []Decision {
	return slices.Clone(s.reconciled)
}

// Close closes the index.
func (s *Spool) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close spool %s: %w", s.dir, err)
	}
	return nil
}

// Dir returns the spool directory.
func (s *Spool) Dir() string { return s.dir }

// Path returns the path of a segment's file.
func (s *Spool) Path(r Record) string { return filepath.Join(s.dir, r.File) }

// parseName returns the key of a segment file name and its parts.
func parseName(name string) (key string, id [16]byte, seq uint64, partial bool, ok bool) {
	m := segmentName.FindStringSubmatch(name)
	if m == nil {
		return "", id, 0, false, false
	}
	if _, err := hex.Decode(id[:], []byte(m[1])); err != nil {
		return "", id, 0, false, false
	}
	seq, err := strconv.ParseUint(m[2], 10, 64)
	if err != nil {
		return "", id, 0, false, false
	}
	return strings.TrimSuffix(name, ".partial"), id, seq, m[3] != "", true
}

// key validates a name given by a caller and returns its index key.
func keyOf(name string) (string, error) {
	k, _, _, _, ok := parseName(filepath.Base(name))
	if !ok || filepath.Base(name) != name {
		return "", fmt.Errorf("%w: %q is not a segment file name (<recording-hex>-<seq>.ubx)", ErrUnknownSegment, name)
	}
	return k, nil
}

func getRecord(b *bbolt.Bucket, key string) (Record, bool, error) {
	v := b.Get([]byte(key))
	if v == nil {
		return Record{}, false, nil
	}
	r, err := decodeRecord(v)
	if err != nil {
		return Record{}, false, fmt.Errorf("spool index entry %s is damaged: %w", key, err)
	}
	return r, true, nil
}

func putRecord(b *bbolt.Bucket, r Record) error {
	v, err := r.encode()
	if err != nil {
		return err
	}
	return b.Put([]byte(r.Name), v)
}

// update runs fn on the record of name inside one transaction and stores
// the record fn returns. fn sees ok=false for a segment not in the index.
func (s *Spool) update(name string, fn func(r Record, ok bool) (Record, error)) (Record, error) {
	key, err := keyOf(name)
	if err != nil {
		return Record{}, err
	}
	var out Record
	err = s.db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket(bucketSegments)
		r, ok, err := getRecord(b, key)
		if err != nil {
			return err
		}
		if !ok {
			r = Record{Name: key}
		}
		r, err = fn(r, ok)
		if err != nil {
			return err
		}
		out = r
		return putRecord(b, r)
	})
	return out, err
}

// existing wraps fn so that a segment not in the index is ErrUnknownSegment.
func existing(name string, fn func(r Record) (Record, error)) func(Record, bool) (Record, error) {
	return func(r Record, ok bool) (Record, error) {
		if !ok {
			return r, fmt.Errorf("%w: %s is not in the spool index", ErrUnknownSegment, name)
		}
		return fn(r)
	}
}

// MarkRecording records that the recorder started writing segment name
// (either the .ubx or the .ubx.partial name).
func (s *Spool) MarkRecording(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.update(name, func(r Record, ok bool) (Record, error) {
		if ok {
			return r, &TransitionError{Name: r.Name, From: r.State, To: Recording}
		}
		_, id, seq, _, _ := parseName(r.Name)
		r.RecordingID, r.Sequence = id, seq
		r.File = r.Name[:len(r.Name)-len(SealedSuffix)] + PartialSuffix
		r.State = Recording
		r.CreatedAt = s.opts.now()
		return r, nil
	})
	if err != nil {
		return err
	}
	s.log.Info("segment recording", "segment", r.Name)
	return nil
}

// MarkSealed records that segment name was sealed and renamed to its .ubx
// name. It verifies the file keylessly, which gives its size and segment hash;
// a file that does not verify as complete is refused and left as it was.
func (s *Spool) MarkSealed(name string) error {
	key, err := keyOf(name)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// Check the state before the expensive verification, again after it.
	if cur, ok, err := s.get(key); err != nil {
		return err
	} else if ok && cur.State != Recording && cur.State != Empty {
		return &TransitionError{Name: key, From: cur.State, To: Sealed}
	}
	v, err := s.verify(key, false)
	if err != nil {
		return fmt.Errorf("mark %s sealed: %w", key, err)
	}
	if v.outcome != crypto.OK {
		return fmt.Errorf("mark %s sealed: the file is %s, not a complete segment: %w", key, v.outcome, v.err)
	}
	end := v.info != nil && v.info.Trailer != nil && v.info.Trailer.Last()
	r, err := s.update(key, func(r Record, ok bool) (Record, error) {
		switch {
		case !ok:
			r.CreatedAt = s.opts.now()
		case r.State == Empty && end:
			// The recording's end takes the number of the empty segment
			// it replaces, so that it links to the last one uploaded.
			r.UploadURL, r.Offset, r.Receipt, r.WipedAt = "", 0, nil, time.Time{}
		case r.State != Recording:
			return r, &TransitionError{Name: key, From: r.State, To: Sealed}
		}
		v.apply(&r)
		r.File = key
		r.State = Sealed
		r.SealedAt = s.opts.now()
		return r, nil
	})
	if err != nil {
		return err
	}
	s.log.Info("segment sealed", "segment", r.Name, "bytes", r.Size)
	return nil
}

// StartUpload records the upload URL of segment name. From sealed or
// truncated it starts at offset 0; from uploading it resumes: the same URL
// keeps the confirmed offset, another URL (the receiver forgot the upload)
// restarts at 0. Every call counts as an attempt.
func (s *Spool) StartUpload(name, url string) error {
	if url == "" {
		return fmt.Errorf("start upload of %s: empty upload URL", name)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.update(name, existing(name, func(r Record) (Record, error) {
		if !r.State.needsUpload() {
			return r, &TransitionError{Name: r.Name, From: r.State, To: Uploading}
		}
		if r.State != Uploading || r.UploadURL != url {
			r.Offset = 0
		}
		r.State = Uploading
		r.UploadURL = url
		r.Attempts++
		return r, nil
	}))
	if err != nil {
		return err
	}
	s.log.Info("segment uploading", "segment", r.Name, "offset", r.Offset, "attempt", r.Attempts)
	return nil
}

// SetOffset records the offset the receiver confirmed for an uploading
// segment. The offset may go down: the receiver's word (HEAD) wins.
func (s *Spool) SetOffset(name string, off int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.update(name, existing(name, func(r Record) (Record, error) {
		if r.State != Uploading {
			return r, &TransitionError{Name: r.Name, From: r.State, To: Uploading}
		}
		if off < 0 || off > r.Size {
			return r, fmt.Errorf("set offset of %s: %d is outside the file's %d bytes", r.Name, off, r.Size)
		}
		r.Offset = off
		return r, nil
	}))
	return err
}

// Commit stores the receiver's receipt for an uploading segment. Calling
// it again with the same receipt is a no-op, so a retried commit is safe.
func (s *Spool) Commit(name string, receipt []byte) error {
	if len(receipt) == 0 {
		return fmt.Errorf("commit %s: %w (empty receipt)", name, ErrNoReceipt)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	same := false
	r, err := s.update(name, existing(name, func(r Record) (Record, error) {
		if r.State == Committed && bytes.Equal(r.Receipt, receipt) {
			same = true
			return r, nil
		}
		if r.State != Uploading {
			return r, &TransitionError{Name: r.Name, From: r.State, To: Committed}
		}
		r.State = Committed
		r.Receipt = bytes.Clone(receipt)
		r.Offset = r.Size
		r.CommittedAt = s.opts.now()
		return r, nil
	}))
	if err != nil {
		return err
	}
	if !same {
		s.log.Info("segment committed", "segment", r.Name, "bytes", r.Size)
	}
	return nil
}

// Wipe removes the file of a committed segment: unlink, fsync the
// directory, then record the wipe. Without a stored receipt it refuses
// with ErrNoReceipt (inside a *TransitionError) and keeps the file. Wiping
// a wiped segment is a no-op.
func (s *Spool) Wipe(name string) error {
	key, err := keyOf(name)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok, err := s.get(key)
	switch {
	case err != nil:
		return err
	case !ok:
		return fmt.Errorf("%w: %s is not in the spool index", ErrUnknownSegment, key)
	case r.State == Wiped:
		return nil
	case r.State != Committed || len(r.Receipt) == 0:
		return &TransitionError{Name: key, From: r.State, To: Wiped, Err: ErrNoReceipt}
	}
	return s.wipeLocked(r)
}

// wipeLocked finishes the wipe of a committed record; s.mu is held.
func (s *Spool) wipeLocked(r Record) error {
	if err := os.Remove(s.Path(r)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("wipe %s: %w", r.Name, err)
	}
	if err := atomicfile.SyncDir(s.dir); err != nil {
		return fmt.Errorf("wipe %s: sync directory: %w", r.Name, err)
	}
	_, err := s.update(r.Name, existing(r.Name, func(r Record) (Record, error) {
		if r.State != Committed {
			return r, &TransitionError{Name: r.Name, From: r.State, To: Wiped, Err: ErrNoReceipt}
		}
		r.State = Wiped
		r.WipedAt = s.opts.now()
		return r, nil
	}))
	if err != nil {
		return err
	}
	s.log.Info("segment wiped", "segment", r.Name)
	return nil
}

// FreshStart forgets the upload URL of an uploading segment so that the
// next attempt creates a new upload from offset 0, and counts the fresh
// start. The receiver found the old upload unusable (gone, or its bytes are
// not the segment's); the local file is not touched. It returns the count
// since the last Retry; the caller quarantines past MaxFreshStarts.
func (s *Spool) FreshStart(name string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.update(name, existing(name, func(r Record) (Record, error) {
		if r.State != Uploading {
			return r, &TransitionError{Name: r.Name, From: r.State, To: Uploading}
		}
		r.UploadURL, r.Offset = "", 0
		r.FreshStarts++
		return r, nil
	}))
	if err != nil {
		return 0, err
	}
	s.log.Info("segment upload starts afresh", "segment", r.Name, "fresh_starts", r.FreshStarts)
	return r.FreshStarts, nil
}

// Quarantine records that the receiver refused segment name for good. The
// file stays on disk and the refusal is stored; Next skips the segment
// until Retry.
func (s *Spool) Quarantine(name string, why Refusal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if why.At.IsZero() {
		why.At = s.opts.now()
	}
	r, err := s.update(name, existing(name, func(r Record) (Record, error) {
		if !r.State.needsUpload() {
			return r, &TransitionError{Name: r.Name, From: r.State, To: Quarantined}
		}
		r.State = Quarantined
		r.UploadURL, r.Offset = "", 0
		r.Refusal = &why
		return r, nil
	}))
	if err != nil {
		return err
	}
	s.log.Warn("segment quarantined: the receiver refused it; kept on disk until `uploadbox queue retry` or `discard`",
		"segment", r.Name, "status", why.Status, "reason", why.Reason, "message", why.Message)
	return nil
}

// Retry puts a quarantined segment back in the queue. The file is verified
// again, as Reconcile would: a file that still verifies becomes sealed or
// truncated (and is uploaded afresh), one that no longer does becomes
// corrupt. The refusal and the fresh-start count are cleared.
func (s *Spool) Retry(name string) (Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, err := s.getFor(name, Sealed, "only a quarantined segment can be retried", Quarantined)
	if err != nil {
		return cur, err
	}
	key := cur.Name
	v, err := s.verify(cur.File, false)
	if err != nil {
		return Record{}, fmt.Errorf("retry %s: %w", key, err)
	}
	r, err := s.update(key, existing(key, func(r Record) (Record, error) {
		if r.State != Quarantined {
			return r, &TransitionError{Name: key, From: r.State, To: Sealed}
		}
		r = s.applyOutcome(r, v)
		r.UploadURL, r.Offset, r.FreshStarts, r.Refusal = "", 0, 0, nil
		return r, nil
	}))
	if err != nil {
		return Record{}, err
	}
	s.log.Info("quarantined segment retried", "segment", r.Name, "state", r.State)
	return r, nil
}

// Discard deletes the file of a quarantined or corrupt segment without a
// receipt: unlink, fsync the directory, record the discard. It is a
// technician's decision (`uploadbox queue discard ID --yes`) and the only
// way a sealed segment leaves the box unconfirmed. It returns the record
// as it was before the discard.
func (s *Spool) Discard(name string) (Record, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, err := s.getFor(name, Discarded, "only a quarantined or corrupt segment can be discarded", Quarantined, Corrupt)
	if err != nil {
		return r, err
	}
	key := r.Name
	if err := os.Remove(s.Path(r)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return Record{}, fmt.Errorf("discard %s: %w", key, err)
	}
	if err := atomicfile.SyncDir(s.dir); err != nil {
		return Record{}, fmt.Errorf("discard %s: sync directory: %w", key, err)
	}
	if _, err := s.update(key, existing(key, func(cur Record) (Record, error) {
		cur.State = Discarded
		cur.DiscardedAt = s.opts.now()
		return cur, nil
	})); err != nil {
		return Record{}, err
	}
	s.log.Warn("segment discarded without a receipt", "segment", key, "bytes", r.Size)
	return r, nil
}

// getFor returns the record of name for a technician's transition to
// state to, which only the states in from allow (why says so otherwise).
func (s *Spool) getFor(name string, to State, why string, from ...State) (Record, error) {
	key, err := keyOf(name)
	if err != nil {
		return Record{}, err
	}
	r, ok, err := s.get(key)
	switch {
	case err != nil:
		return Record{}, err
	case !ok:
		return Record{}, fmt.Errorf("%w: %s is not in the spool index", ErrUnknownSegment, key)
	case !slices.Contains(from, r.State):
		return r, &TransitionError{Name: key, From: r.State, To: to, Err: errors.New(why)}
	}
	return r, nil
}

func (s *Spool) get(key string) (Record, bool, error) {
	var r Record
	var ok bool
	err := s.db.View(func(tx *bbolt.Tx) error {
		var err error
		r, ok, err = getRecord(tx.Bucket(bucketSegments), key)
		return err
	})
	return r, ok, err
}

// Get returns the record of segment name.
func (s *Spool) Get(name string) (Record, error) {
	key, err := keyOf(name)
	if err != nil {
		return Record{}, err
	}
	r, ok, err := s.get(key)
	if err != nil {
		return Record{}, err
	}
	if !ok {
		return Record{}, fmt.Errorf("%w: %s is not in the spool index", ErrUnknownSegment, key)
	}
	return r, nil
}

// All returns every record in the index, in queue order.
func (s *Spool) All() ([]Record, error) {
	var all []Record
	err := s.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketSegments).ForEach(func(k, v []byte) error {
			r, err := decodeRecord(v)
			if err != nil {
				return fmt.Errorf("spool index entry %s is damaged: %w", k, err)
			}
			all = append(all, r)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(all, queueOrder)
	return all, nil
}

// queueOrder sorts by sealed time, then recording id and sequence.
func queueOrder(a, b Record) int {
	if c := a.SealedAt.Compare(b.SealedAt); c != 0 {
		return c
	}
	if c := bytes.Compare(a.RecordingID[:], b.RecordingID[:]); c != 0 {
		return c
	}
	switch {
	case a.Sequence < b.Sequence:
		return -1
	case a.Sequence > b.Sequence:
		return 1
	}
	return strings.Compare(a.Name, b.Name)
}

// Pending lists the segments that need upload (sealed, truncated and
// uploading), oldest first. Committed and wiped segments are never listed.
func (s *Spool) Pending() ([]Record, error) {
	all, err := s.All()
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(all, func(r Record) bool { return !r.State.needsUpload() }), nil
}

// Next returns the oldest segment that needs upload; ok is false when none
// does. An uploading segment carries its URL and offset for the resume.
func (s *Spool) Next() (r Record, ok bool, err error) {
	p, err := s.Pending()
	if err != nil || len(p) == 0 {
		return Record{}, false, err
	}
	return p[0], true, nil
}

// Stats summarises the segments not yet wiped.
type Stats struct {
	Count   int           // segments not wiped or discarded, whatever their state
	Bytes   int64         // their size on disk (missing ones count 0)
	Oldest  time.Time     // sealed (or, while recording, created) time of the oldest
	Age     time.Duration // now - Oldest; 0 when Count is 0
	ByState map[State]int // every state, wiped included
}

// Stats returns counts, bytes and the age of the oldest segment not yet
// wiped, for `uploadbox queue` and the metrics.
func (s *Spool) Stats() (Stats, error) {
	all, err := s.All()
	if err != nil {
		return Stats{}, err
	}
	st := Stats{ByState: map[State]int{}}
	for _, r := range all {
		st.ByState[r.State]++
		if r.State.gone() {
			continue
		}
		st.Count++
		st.Bytes += s.diskBytes(r)
		t := r.SealedAt
		if t.IsZero() {
			t = r.CreatedAt
		}
		if st.Oldest.IsZero() || t.Before(st.Oldest) {
			st.Oldest = t
		}
	}
	if st.Count > 0 {
		st.Age = s.opts.now().Sub(st.Oldest)
	}
	return st, nil
}

// diskBytes is what a record occupies; a file being recorded is stat'ed.
func (s *Spool) diskBytes(r Record) int64 {
	switch {
	case !r.State.onDisk():
		return 0
	case r.State == Recording:
		if fi, err := os.Stat(s.Path(r)); err == nil {
			return fi.Size()
		}
		return 0
	default:
		return r.Size
	}
}

// Admit tells the recorder whether it may add size more bytes to the
// spool. It fails with ErrSpoolFull when the segments not yet wiped would
// exceed MaxBytes and with ErrDiskReserve when the filesystem would drop
// below MinFree. Nothing is ever deleted to make room.
func (s *Spool) Admit(size int64) error {
	if size < 0 {
		size = 0
	}
	s.limitsMu.Lock()
	maxBytes, minFree := s.opts.MaxBytes, s.opts.MinFree
	s.limitsMu.Unlock()
	if maxBytes > 0 {
		st, err := s.Stats()
		if err != nil {
			return err
		}
		if st.Bytes+size > maxBytes {
			return fmt.Errorf("%w: %d bytes in %d segments + %d requested exceeds the limit of %d bytes",
				ErrSpoolFull, st.Bytes, st.Count, size, maxBytes)
		}
	}
	if minFree > 0 {
		free, err := s.opts.freeSpace(s.dir)
		if err != nil {
			return fmt.Errorf("check free space in %s: %w", s.dir, err)
		}
		if free-size < minFree {
			return fmt.Errorf("%w: %d bytes free - %d requested is below the reserve of %d bytes on %s",
				ErrDiskReserve, free, size, minFree, s.dir)
		}
	}
	return nil
}

// SetLimits changes MaxBytes and MinFree (a reloaded config); negative
// values are treated as 0 (no limit).
func (s *Spool) SetLimits(maxBytes, minFree int64) {
	s.limitsMu.Lock()
	s.opts.MaxBytes, s.opts.MinFree = max(maxBytes, 0), max(minFree, 0)
	s.limitsMu.Unlock()
}

func statfsFree(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}

// verified is the keyless verification of one file.
type verified struct {
	outcome crypto.Outcome
	err     error
	info    *crypto.Info
	size    int64
	blake3  [32]byte // the segment hash
	sha256  [32]byte // when verify was asked for it
	modTime time.Time
}

// apply records the verification in r, whose segment then uses the
// BLAKE3 segment hash (its upload, if any, was dropped before).
func (v *verified) apply(r *Record) {
	r.Size = v.size
	r.BLAKE3, r.SHA256 = v.blake3, [32]byte{}
	if v.info != nil && v.info.Header != nil {
		r.RecordingID = v.info.Header.RecordingID
		r.Sequence = v.info.Header.Sequence
	}
	r.Commitment, r.Last = [crypto.CommitmentSize]byte{}, false
	if v.info != nil && v.outcome != crypto.Corrupt {
		r.Commitment = v.info.Commitment
		r.Last = v.info.Trailer != nil && v.info.Trailer.Last()
	}
	r.Reason = ""
	if v.err != nil {
		r.Reason = v.err.Error()
	}
}

// verify reads the file once: keyless verification, which gives the
// segment hash, and SHA-256 too if withSHA (a record an older release
// wrote is compared by it). A file whose header does not parse or names
// another device is read once more for its segment hash. An I/O error is
// returned; a bad segment is reported in the outcome.
func (s *Spool) verify(file string, withSHA bool) (*verified, error) {
	f, err := os.Open(filepath.Join(s.dir, file))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	var r io.Reader = f
	h := sha256.New()
	if withSHA {
		r = io.TeeReader(f, h)
	}
	info, verr := crypto.Verify(r, s.opts.Device)
	// Verify reads to the end; make sure of it for the SHA-256.
	if _, err := io.Copy(io.Discard, r); err != nil {
		return nil, err
	}
	v := &verified{outcome: crypto.OutcomeOf(verr), err: verr, info: info, size: fi.Size(), modTime: fi.ModTime()}
	if withSHA {
		h.Sum(v.sha256[:0])
	}
	if info != nil && info.Size == v.size {
		v.blake3 = info.FileHash
	} else if v.blake3, err = fileHash(f); err != nil {
		return nil, err
	}
	// The header must match the file name, or the file was misplaced.
	if info != nil && info.Header != nil && v.outcome != crypto.Corrupt {
		_, id, seq, _, _ := parseName(file)
		if info.Header.RecordingID != id || info.Header.Sequence != seq {
			v.outcome = crypto.Corrupt
			v.err = fmt.Errorf("%w: header names recording %x sequence %d, not the file name's", crypto.ErrCorrupt, info.Header.RecordingID, info.Header.Sequence)
		}
	}
	return v, nil
}
