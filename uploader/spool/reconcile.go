package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"go.etcd.io/bbolt"

	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/internal/atomicfile"
)

// Decision is one change (or one finding) of Reconcile.
type Decision struct {
	Name   string
	From   State // the state before; "" for a file that was not in the index
	To     State
	Reason string
}

// Reconcile compares the index with the files in the spool directory and
// repairs the index. Open runs it; it assumes no recorder is writing, so
// every .partial file is a crash leftover. It is idempotent: a second run
// decides nothing. The rules, by what is found:
//
//   - a .partial file (absent or recording in the index) is verified:
//     TRUNCATED → truncated and OK → sealed, both renamed to the .ubx name
//     (fsync of the directory) so that every uploadable segment lives under
//     its key; CORRUPT → corrupt, left under its .partial name.
//   - a .partial file beside a .ubx file of the same segment, or of a
//     segment already past recording, is a stray: reported, left alone.
//   - a .ubx file not in the index (or recording in it) is verified and
//     added as sealed, truncated or corrupt; its sealed time is the file's
//     modification time, so that the queue keeps the recording order.
//   - an entry whose file vanished in a state that needs it (recording,
//     sealed, truncated, uploading, corrupt, quarantined) becomes missing: kept and
//     reported, never dropped.
//   - a missing entry whose file is back is verified: the same bytes
//     restore the state before; other bytes are classified afresh.
//   - a committed entry is wiped now (its receipt is durable): the file
//     is unlinked if it is still there, then the wipe is recorded.
//   - a wiped or discarded entry whose file exists again is reported and
//     left alone: nothing is uploaded twice, nothing discarded comes back.
//   - a quarantined entry keeps its state while its file is there.
//   - a .partial or .ubx file that ends inside its header or before its first full payload
//     chunk holds no media (crypto.Info.NoMedia): it becomes empty with
//     the reason "empty after a crash", and the file is removed.
//   - other file names (the index itself, temp files) are ignored.
//
// Every decision is logged and returned. An error on one segment (an
// unreadable file) leaves that segment as it was and is returned, joined,
// after all other segments were reconciled.
func (s *Spool) Reconcile() ([]Decision, error) {
	d, segErrs, err := s.reconcile()
	if err != nil {
		return d, err
	}
	return d, errors.Join(segErrs...)
}

// reconcile returns the per-segment errors apart from the errors that
// concern the whole spool (the directory or the index cannot be read).
func (s *Spool) reconcile() ([]Decision, []error, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, nil, fmt.Errorf("reconcile: %w", err)
	}
	sealedFiles := map[string]bool{}
	partialFiles := map[string]bool{}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		key, _, _, partial, ok := parseName(e.Name())
		if !ok {
			continue
		}
		if partial {
			partialFiles[key] = true
		} else {
			sealedFiles[key] = true
		}
	}
	index := map[string]Record{}
	err = s.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketSegments).ForEach(func(k, v []byte) error {
			r, err := decodeRecord(v)
			if err != nil {
				return fmt.Errorf("spool index entry %s is damaged: %w", k, err)
			}
			index[string(k)] = r
			return nil
		})
	})
	if err != nil {
		return nil, nil, fmt.Errorf("reconcile: %w", err)
	}

	keys := map[string]bool{}
	for k := range sealedFiles {
		keys[k] = true
	}
	for k := range partialFiles {
		keys[k] = true
	}
	for k := range index {
		keys[k] = true
	}
	sorted := make([]string, 0, len(keys))
	for k := range keys {
		sorted = append(sorted, k)
	}
	slices.Sort(sorted)

	var decisions []Decision
	var errs []error
	for _, k := range sorted {
		r, inIndex := index[k]
		d, err := s.reconcileOne(k, r, inIndex, sealedFiles[k], partialFiles[k], "a crash")
		if err != nil {
			s.log.Error("reconcile failed", "segment", k, "err", err)
			errs = append(errs, fmt.Errorf("reconcile %s: %w", k, err))
			continue
		}
		s.logDecisions("reconcile", d)
		decisions = append(decisions, d...)
	}
	s.log.Info("reconcile done", "decisions", len(decisions), "segments", len(sorted), "errors", len(errs))
	return decisions, errs, nil
}

func (s *Spool) logDecisions(msg string, d []Decision) {
	for _, x := range d {
		attrs := []any{"segment", x.Name, "from", x.From, "to", x.To, "reason", x.Reason}
		switch x.To {
		case Corrupt, Missing, Truncated, Empty:
			s.log.Warn(msg, attrs...)
		default:
			s.log.Info(msg, attrs...)
		}
	}
}

// Settle classifies segment name, which the recorder was writing when it
// failed (a write error, a full disk), at once instead of at the next
// Open: its file is verified as Reconcile does and the segment becomes
// truncated (renamed to its .ubx name when the rename works, uploaded as
// it is otherwise), sealed, corrupt, or empty ("empty after a write
// error", file removed). The recorder must no longer write the file. A
// segment past recording is left alone and no decision is returned. When
// the index cannot be written (a full disk) it returns the decision it
// could not record with the error; the segment stays recording and a
// later Settle (or Open) records it.
func (s *Spool) Settle(name string) ([]Decision, error) {
	key, err := keyOf(name)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok, err := s.get(key)
	if err != nil {
		return nil, err
	}
	if ok && r.State != Recording {
		return nil, nil
	}
	partialName := key[:len(key)-len(SealedSuffix)] + PartialSuffix
	d, err := s.reconcileOne(key, r, ok, fileExists(s.dir, key), fileExists(s.dir, partialName), "a write error")
	if err != nil {
		return d, fmt.Errorf("settle %s: %w", key, err)
	}
	s.logDecisions("segment settled", d)
	return d, nil
}

func fileExists(dir, name string) bool {
	fi, err := os.Stat(filepath.Join(dir, name))
	return err == nil && fi.Mode().IsRegular()
}

// EmptyReason is the Reason of an empty segment: cause is "a crash" or
// "a write error".
func EmptyReason(cause string) string {
	return "empty after " + cause + ": only the header was written, no media"
}

func (s *Spool) reconcileOne(key string, r Record, inIndex, hasSealed, hasPartial bool, cause string) ([]Decision, error) {
	partialName := key[:len(key)-len(SealedSuffix)] + PartialSuffix
	var out []Decision
	from := r.State

	stray := func(why string) {
		out = append(out, Decision{Name: key, From: from, To: from, Reason: why})
	}

	switch {
	case !inIndex || r.State == Recording:
		switch {
		case hasSealed:
			if hasPartial {
				stray("stray " + partialName + " beside the sealed file; left alone")
			}
			d, err := s.classify(key, r, inIndex, key, false, cause)
			if err != nil {
				return unrecorded(d), err
			}
			out = append(out, d)
		case hasPartial:
			d, err := s.classify(key, r, inIndex, partialName, true, cause)
			if err != nil {
				return unrecorded(d), err
			}
			out = append(out, d)
		case inIndex: // recording, and no file at all
			d, err := s.markMissing(r)
			if err != nil {
				return nil, err
			}
			out = append(out, d)
		}
		return out, nil

	case r.State == Committed:
		if hasPartial && r.File != partialName {
			stray("stray " + partialName + " beside a committed segment; left alone")
		}
		if err := s.wipeLocked(r); err != nil {
			return nil, err
		}
		reason := "committed with a stored receipt; the file was already gone, wipe recorded"
		if (r.File == key && hasSealed) || (r.File == partialName && hasPartial) {
			reason = "committed with a stored receipt; wipe finished"
		}
		out = append(out, Decision{Name: key, From: from, To: Wiped, Reason: reason})
		return out, nil

	case r.State == Empty:
		if (r.File == key && hasSealed) || (r.File == partialName && hasPartial) {
			if err := s.removeFile(r.File); err != nil {
				return nil, err
			}
			out = append(out, Decision{Name: key, From: Empty, To: Empty, Reason: "the file of an empty segment was still there; removed"})
		}
		return out, nil

	case r.State.gone():
		if hasSealed || hasPartial {
			stray("a file exists for a " + string(r.State) + " segment; it is not uploaded again and left alone")
		}
		return out, nil

	case r.State == Missing:
		file := ""
		switch {
		case hasSealed:
			file = key
		case hasPartial && r.Before == Corrupt:
			file = partialName
		}
		if file == "" {
			return out, nil // still missing: reported when it went missing
		}
		// A record an older release wrote has its SHA-256 only.
		old := r.BLAKE3 == [32]byte{}
		v, err := s.verify(file, old)
		if err != nil {
			return nil, err
		}
		var d Decision
		_, err = s.update(key, existing(key, func(r Record) (Record, error) {
			same := v.blake3 == r.BLAKE3
			if old {
				same = v.sha256 == r.SHA256
			}
			if same && r.Before != "" {
				r.State, r.File = r.Before, file
				r.Before = ""
				d = Decision{Name: key, From: Missing, To: r.State, Reason: "file is back with the same bytes"}
				return r, nil
			}
			r.Before, r.UploadURL, r.Offset = "", "", 0
			r.File = file
			r = s.applyOutcome(r, v)
			d = Decision{Name: key, From: Missing, To: r.State, Reason: "file is back with other bytes: " + reasonOf(v)}
			return r, nil
		}))
		if err != nil {
			return nil, err
		}
		return append(out, d), nil
	}

	// sealed, truncated, uploading, corrupt, quarantined: the file must be there.
	present := (r.File == key && hasSealed) || (r.File == partialName && hasPartial)
	if hasPartial && r.File != partialName {
		stray("stray " + partialName + " beside a " + string(r.State) + " segment; left alone")
	}
	if !present {
		d, err := s.markMissing(r)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, nil
}

// classify verifies an unindexed (or recording) file and records it. A
// partial that verifies OK or TRUNCATED is renamed to its sealed name.
func (s *Spool) classify(key string, r Record, inIndex bool, file string, partial bool, cause string) (Decision, error) {
	v, err := s.verify(file, false)
	if err != nil {
		return Decision{}, err
	}
	if v.noMedia() {
		return s.markEmpty(key, r, inIndex, file, v, cause)
	}
	if partial && v.outcome != crypto.Corrupt {
		if err := os.Rename(filepath.Join(s.dir, file), filepath.Join(s.dir, key)); err != nil {
			// A full directory cannot take the rename: the segment is
			// uploaded under its partial name (Record.File).
			if cause != "a write error" {
				return Decision{}, err
			}
			s.log.Warn("segment kept under its partial name", "segment", key, "err", err)
		} else {
			if err := atomicfile.SyncDir(s.dir); err != nil {
				return Decision{}, fmt.Errorf("sync directory: %w", err)
			}
			file = key
		}
	}
	var d Decision
	_, err = s.update(key, func(cur Record, ok bool) (Record, error) {
		if ok != inIndex || cur.State != r.State {
			return cur, fmt.Errorf("index changed during reconcile (now %s)", cur.State)
		}
		if !ok {
			_, id, seq, _, _ := parseName(key)
			cur.RecordingID, cur.Sequence = id, seq
			cur.CreatedAt = v.modTime
		}
		cur.File = file
		cur = s.applyOutcome(cur, v)
		if cur.State != Corrupt {
			cur.SealedAt = v.modTime
		}
		reason := reasonOf(v)
		if partial && cur.State != Corrupt {
			reason += "; renamed from " + key[:len(key)-len(SealedSuffix)] + PartialSuffix
		}
		d = Decision{Name: key, From: r.State, To: cur.State, Reason: reason}
		return cur, nil
	})
	return d, err
}

// markEmpty records a segment that holds no media as empty, so it is never
// uploaded, then removes its file (a crash in between leaves a file that
// the next reconcile removes).
func (s *Spool) markEmpty(key string, r Record, inIndex bool, file string, v *verified, cause string) (Decision, error) {
	reason := EmptyReason(cause)
	d := Decision{Name: key, From: r.State, To: Empty, Reason: fmt.Sprintf("%s (%d bytes); file removed", reason, v.size)}
	_, err := s.update(key, func(cur Record, ok bool) (Record, error) {
		if ok != inIndex || cur.State != r.State {
			return cur, fmt.Errorf("index changed during reconcile (now %s)", cur.State)
		}
		if !ok {
			_, id, seq, _, _ := parseName(key)
			cur.RecordingID, cur.Sequence = id, seq
			cur.CreatedAt = v.modTime
		}
		v.apply(&cur)
		cur.File = file
		cur.State = Empty
		cur.Reason = reason
		cur.WipedAt = s.opts.now()
		return cur, nil
	})
	if err != nil {
		return d, err
	}
	if err := s.removeFile(file); err != nil {
		return Decision{}, err
	}
	return d, nil
}

// unrecorded returns the decision classify made but could not record (the
// index write failed), for Settle's caller.
func unrecorded(d Decision) []Decision {
	if d.To == "" {
		return nil
	}
	return []Decision{d}
}

// noMedia reports whether a file cut short holds nothing to decrypt: it
// ends inside its header or before its first full payload chunk.
func (v *verified) noMedia() bool {
	return v.outcome == crypto.Truncated && (v.info == nil || v.info.Header == nil || v.info.NoMedia())
}

func (s *Spool) removeFile(file string) error {
	if err := os.Remove(filepath.Join(s.dir, file)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := atomicfile.SyncDir(s.dir); err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	return nil
}

func (s *Spool) applyOutcome(r Record, v *verified) Record {
	v.apply(&r)
	switch v.outcome {
	case crypto.OK:
		r.State = Sealed
	case crypto.Truncated:
		r.State = Truncated
	default:
		r.State = Corrupt
	}
	return r
}

func reasonOf(v *verified) string {
	if v.err == nil {
		return "verified OK"
	}
	return fmt.Sprintf("verified %s: %v", v.outcome, v.err)
}

func (s *Spool) markMissing(r Record) (Decision, error) {
	from := r.State
	_, err := s.update(r.Name, existing(r.Name, func(r Record) (Record, error) {
		r.Before = r.State
		r.State = Missing
		r.Reason = fmt.Sprintf("file %s vanished while %s", r.File, r.Before)
		return r, nil
	}))
	if err != nil {
		return Decision{}, err
	}
	return Decision{Name: r.Name, From: from, To: Missing, Reason: fmt.Sprintf("file %s vanished before its wipe; kept in the index", r.File)}, nil
}
