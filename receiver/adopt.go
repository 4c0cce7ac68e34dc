package receiver

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	tusd "github.com/tus/tusd/v2/pkg/handler"
	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/receiver/devices"
	"github.com/uploadbox/uploadbox/receiver/internal/hashing"
	"github.com/uploadbox/uploadbox/receiver/store"
	"github.com/uploadbox/uploadbox/wire"
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
// (size, the hash the commit carries, signature), records it and answers
// with the receipt.
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
// holds the upload's lock and vouches for the file's bytes: size, the
// record's hash and the verification were checked over exactly these bytes.
func (s *Server) adoptSegment(ctx context.Context, id string, rec *SegmentRecord) (adopted bool, err error) {
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
	err = s.adoption.fs.Load().Adopt(ctx, rec.Key, filepath.Join(s.uploads, id), rec.Size, rec.sum())
	if errors.Is(err, store.ErrNotAdopted) {
		os.Remove(note)
		s.hashing.SetCopying(true)
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
	alg, _ := req.Hash()
	return s.recordAdopted(ctx, d, req.UploadID, key, &req, alg == wire.HashSHA256)
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
// it must verify as d's segment under exactly this key and, with req, be
// the bytes req announces. Without req (the janitor) the segment is
// recorded with its SHA-256 if withSHA (an upload that did not announce the
// BLAKE3 segment hash), else with its segment hash. ok is false, with
// nothing recorded, when there is no such object or it is not that segment.
func (s *Server) recordAdopted(ctx context.Context, d *devices.Device, id, key string, req *CommitRequest, withSHA bool) (resp *CommitResponse, ok bool, err error) {
	rc, _, err := s.store.Get(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, true, err
	}
	defer rc.Close()
	w, err := readWhole(rc, withSHA)
	if err != nil {
		return nil, true, err
	}
	if w.outcome == crypto.Corrupt || w.info == nil || w.info.Header == nil {
		return nil, false, nil
	}
	if req == nil {
		req = &CommitRequest{UploadID: id, Size: w.size}
		if withSHA {
			req.SHA256 = hex.EncodeToString(w.sha[:])
		} else {
			req.BLAKE3 = hex.EncodeToString(w.info.FileHash[:])
		}
	}
	if w.matches(*req) != nil {
		return nil, false, nil
	}
	if d.CheckSigner(ed25519.PublicKey(w.info.Header.Device.Bytes()), time.Now()) != nil {
		return nil, false, nil
	}
	rec := newSegmentRecord(d, w.info, w.outcome, w.size, *req)
	if rec.Key != key {
		return nil, false, nil
	}
	s.log.Info("commit interrupted after the upload was stored: finished", "device", d.Name, "key", key)
	resp, err = s.recordSegment(d, id, &rec, w.info.Header.RecordingID)
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
		_, ok, err := s.recordAdopted(ctx, d, id, key, nil, !s.announced(ctx, id))
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
	sha     [32]byte // SHA-256, when hasSHA
	hasSHA  bool
	info    *crypto.Info // with the segment hash, when it has a header
	verr    error
	outcome crypto.Outcome
}

// readWhole reads r to its end once: the keyless verification, which
// gives the segment hash, and its SHA-256 if withSHA.
func readWhole(r io.Reader, withSHA bool) (wholeRead, error) {
	h := sha256.New()
	if withSHA {
		r = io.TeeReader(r, h)
	}
	cr := &countReader{r: r}
	w := wholeRead{hasSHA: withSHA}
	w.info, w.verr = crypto.Verify(cr, nil)
	if _, err := io.Copy(io.Discard, cr); err != nil { // whatever Verify left unread
		return w, err
	}
	w.size = cr.n
	h.Sum(w.sha[:0])
	w.outcome = crypto.OutcomeOf(w.verr)
	return w, nil
}

// matches refuses, for good, bytes that are not those the commit
// announced: its size and hash. A segment hash cannot be told without a
// header; the verification then refuses the segment.
func (w wholeRead) matches(req CommitRequest) error {
	alg, want := req.Hash()
	var got [32]byte
	switch {
	case alg == wire.HashSHA256:
		got = w.sha
	case w.info != nil && w.info.Header != nil:
		got = w.info.FileHash
	default:
		if w.size == req.Size {
			return nil
		}
	}
	if w.size != req.Size || hex.EncodeToString(got[:]) != want {
		return refuseForGood(http.StatusConflict, ReasonMismatch, "commit: the upload has %d bytes with %s %x…; the box announced %d bytes with %s %s: upload the segment again", w.size, alg, got[:8], req.Size, alg, want)
	}
	return nil
}

// announced reports whether upload id announced the BLAKE3 segment hash at
// creation, from its tus info file (the janitor reads it for an upload
// whose file an interrupted commit adopted). An info file that cannot be
// read counts as announced, as every box of this release does.
func (s *Server) announced(ctx context.Context, id string) bool {
	b, err := os.ReadFile(filepath.Join(s.uploads, id+".info"))
	if err != nil {
		return true
	}
	var info tusd.FileInfo
	if json.Unmarshal(b, &info) != nil {
		return true
	}
	return hashing.Announced(info.MetaData)
}
