package receiver

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/receiver/devices"
	"github.com/uploadbox/uploadbox/receiver/store"
)

// adoption is how a commit moves a staged upload into the fs store
// instead of copying it: when the uploads are staged in a directory on the
// same filesystem as the store, the finished, verified upload file is
// fsynced and renamed to the segment's key (store.FS.Adopt).
//
// Crash safety: before the rename the commit leaves a note beside the
// upload, ID.adopt, a symbolic link to the key, durable before the file
// moves. A crash after the rename and before the database records the
// segment leaves the object stored, the upload file gone and the note: the
// box's retried commit finds the note, reads the stored object once
// (size, SHA-256, signature), records it and answers with the receipt.
type adoption struct {
	fs atomic.Pointer[store.FS] // nil: commits copy
	// off: a rename crossed filesystems after all (a mount point between
	// the two directories): commits copy from then on.
	off atomic.Bool
	// crash, in tests, is called at each crash point; an error stops the
	// commit there as a crash would.
	crash atomic.Pointer[func(point string) error]
}

// The commit's crash points, in order: the note written, the file renamed
// into the store, the segment recorded in the database (the upload not yet
// removed).
const (
	crashNoted    = "noted"
	crashAdopted  = "adopted"
	crashRecorded = "recorded"
)

// adoptSuffix names an upload's note of the key its file is adopted as.
const adoptSuffix = ".adopt"

// openAdoption lets commits adopt uploads staged in s.uploads if the store
// is the fs store on the same filesystem.
func (s *Server) openAdoption() {
	fs, ok := s.store.(*store.FS)
	if ok && sameFilesystem(s.uploads, fs.Dir()) {
		s.adoption.fs.Store(fs)
	}
}

func sameFilesystem(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	if err != nil {
		return false
	}
	sa, ok := fa.Sys().(*syscall.Stat_t)
	sb, ok2 := fb.Sys().(*syscall.Stat_t)
	return ok && ok2 && sa.Dev == sb.Dev
}

func (s *Server) canAdopt() bool { return s.adoption.fs.Load() != nil && !s.adoption.off.Load() }

func (s *Server) crashPoint(point string) error {
	if crash := s.adoption.crash.Load(); crash != nil {
		return (*crash)(point)
	}
	return nil
}

// adoptSegment moves upload id's file into the store under rec.Key (or
// finds the same bytes stored there). adopted is false, with no error,
// when the file must be copied instead (another filesystem). The caller
// holds the upload's lock and vouches for the file's bytes: size, SHA-256
// sum and the verification were checked over exactly these bytes.
func (s *Server) adoptSegment(ctx context.Context, id string, rec *SegmentRecord, sum [32]byte) (adopted bool, err error) {
	note := filepath.Join(s.uploads, id+adoptSuffix)
	if err := os.Remove(note); err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("commit: %w", err)
	}
	if err := os.Symlink(rec.Key, note); err != nil {
		return false, fmt.Errorf("commit: %w", err)
	}
	if err := s.crashPoint(crashNoted); err != nil {
		return false, err
	}
	err = s.adoption.fs.Load().Adopt(ctx, rec.Key, filepath.Join(s.uploads, id), rec.Size, sum)
	if errors.Is(err, store.ErrNotAdopted) {
		os.Remove(note)
		if !s.adoption.off.Swap(true) {
			s.log.Warn("uploads cannot be renamed into the store (another filesystem): commits copy them", "uploads", s.uploads)
		}
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("commit: store %s: %w", rec.Key, err)
	}
	if err := s.crashPoint(crashAdopted); err != nil {
		return false, err
	}
	return true, nil
}

// recoverAdopted finishes the commit of upload id that a crash interrupted
// after its file was adopted into the store and before the segment was
// recorded: the note names the key, and the stored object, read once,
// must be the bytes the box announces and verify. ok is false when there
// is nothing to recover.
func (s *Server) recoverAdopted(ctx context.Context, d *devices.Device, req CommitRequest) (resp *CommitResponse, ok bool, err error) {
	key, ok := s.adoptNote(req.UploadID)
	if !ok {
		return nil, false, nil
	}
	return s.recordAdopted(ctx, d, req.UploadID, key, func(w wholeRead) bool {
		return w.size == req.Size && hex.EncodeToString(w.sum[:]) == req.SHA256
	})
}

// adoptNote is the key upload id's note names, if it has one (fs store
// adoption only).
func (s *Server) adoptNote(id string) (key string, ok bool) {
	if s.adoption.fs.Load() == nil {
		return "", false
	}
	key, err := os.Readlink(filepath.Join(s.uploads, id+adoptSuffix))
	if err != nil || store.ValidateKey(key) != nil {
		return "", false
	}
	return key, true
}

// recordAdopted records the object key, adopted from upload id by a commit
// of device d that a crash cut short, as that commit would have: read once,
// it must verify as d's segment under exactly this key (and pass want).
// ok is false, with nothing recorded, when there is no such object or it
// is not that segment.
func (s *Server) recordAdopted(ctx context.Context, d *devices.Device, id, key string, want func(wholeRead) bool) (resp *CommitResponse, ok bool, err error) {
	rc, _, err := s.store.Get(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, true, err
	}
	defer rc.Close()
	w, err := readWhole(rc)
	if err != nil {
		return nil, true, err
	}
	if !want(w) || w.outcome == crypto.Corrupt || w.info == nil || w.info.Header == nil {
		return nil, false, nil
	}
	if d.CheckSigner(ed25519.PublicKey(w.info.Header.Device.Bytes()), time.Now()) != nil {
		return nil, false, nil
	}
	rec := newSegmentRecord(d, w.info, w.outcome, w.size, hex.EncodeToString(w.sum[:]))
	if rec.Key != key {
		return nil, false, nil
	}
	s.log.Info("commit interrupted after the upload was stored: finished", "device", d.Name, "key", key)
	resp, err = s.recordSegment(d, id, &rec, w.info.Header.RecordingID, w.sum)
	return resp, true, err
}

// settleAdopted is the janitor's part in an adopting commit a crash cut
// short, before it expires upload id (it holds the lock): when the
// upload's note names an object in the store that no segment record
// names, the commit is finished (the object verifies as the owning
// device's segment: recorded, so that the box's retried commit gets its
// receipt) or else the object is removed (nobody holds a receipt for it;
// the box keeps its copy until it has one). Both are audited.
func (s *Server) settleAdopted(ctx context.Context, id string) error {
	key, ok := s.adoptNote(id)
	if !ok {
		return nil
	}
	if _, err := s.lookup(key); err == nil {
		return nil // recorded: the upload's leftovers go
	}
	if _, err := s.store.Stat(ctx, key); errors.Is(err, store.ErrNotFound) {
		return nil // not adopted: the upload's file goes with the rest
	} else if err != nil {
		return fmt.Errorf("settle adopted upload: %w", err)
	}
	var d *devices.Device
	if o, open := s.owner(id); open {
		d, _ = s.devices.Authorized(o.Serial)
	}
	if d != nil {
		_, ok, err := s.recordAdopted(ctx, d, id, key, func(wholeRead) bool { return true })
		var refused *commitError // e.g. recorded meanwhile with other bytes
		if err != nil && !errors.As(err, &refused) {
			return fmt.Errorf("settle adopted upload: %w", err)
		}
		if ok && err == nil {
			s.auditAdopted(d.Name, "recorded", "commit of "+key+" interrupted after the upload was stored: finished by the janitor")
			return nil
		}
	}
	if _, err := s.lookup(key); err == nil {
		return nil
	}
	if err := s.adoption.fs.Load().Delete(ctx, key); err != nil {
		return fmt.Errorf("settle adopted upload: %w", err)
	}
	name := "unknown"
	if d != nil {
		name = d.Name
	}
	s.auditAdopted(name, "removed", "object "+key+" stored by an interrupted commit does not verify as the uploading device's segment and has no record: removed")
	return nil
}

func (s *Server) auditAdopted(device, outcome, detail string) {
	s.log.Warn("janitor: "+detail, "device", device)
	if _, err := s.audit.Append(audit.Entry{Event: "upload.adopted", Identity: device, Source: "local", Outcome: outcome, Detail: detail}); err != nil {
		s.log.Warn("audit upload.adopted", "err", err)
	}
}

// wholeRead is what one read of a segment's bytes says of them.
type wholeRead struct {
	size    int64
	sum     [32]byte
	info    *crypto.Info
	verr    error
	outcome crypto.Outcome
}

// readWhole reads r to its end once: its SHA-256 and the keyless
// verification.
func readWhole(r io.Reader) (wholeRead, error) {
	h := sha256.New()
	cr := &countReader{r: io.TeeReader(r, h)}
	var w wholeRead
	w.info, w.verr = crypto.Verify(cr, nil)
	if _, err := io.Copy(io.Discard, cr); err != nil { // whatever Verify left unread
		return w, err
	}
	w.size = cr.n
	h.Sum(w.sum[:0])
	w.outcome = crypto.OutcomeOf(w.verr)
	return w, nil
}
