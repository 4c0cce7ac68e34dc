package recorder

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/internal/atomicfile"
)

// endReasoner is an error (a session's stop cause, a spool refusal) that
// names the end reason itself.
type endReasoner interface{ EndReason() crypto.EndReason }

// EndReasonOf maps why a recording stopped to the end reason its last
// segment carries: an error with an EndReason method says it itself; a
// deadline is "session time up"; the daemon's stop causes are matched by
// their words ("time is up" / "session time up"); any other cancellation
// (a stop command, a signal, "daemon stopping") is "stopped". A nil cause
// (capture ended by itself) is "unknown".
func EndReasonOf(cause error) crypto.EndReason {
	var er endReasoner
	switch {
	case cause == nil:
		return crypto.EndUnknown
	case errors.As(cause, &er):
		return er.EndReason()
	case errors.Is(cause, context.DeadlineExceeded):
		return crypto.EndTimeUp
	}
	switch msg := cause.Error(); {
	case strings.Contains(msg, "time is up"), strings.Contains(msg, "session time up"):
		return crypto.EndTimeUp
	case strings.Contains(msg, "spool full"), strings.Contains(msg, "disk reserve"):
		return crypto.EndSpoolFull
	}
	return crypto.EndStopped
}

// endReason is the reason the last segment of a clean end carries.
func (r *Recorder) endReason() crypto.EndReason {
	if r.end == nil {
		return crypto.EndUnknown
	}
	return r.end()
}

// admitNext asks BeforeSegment for the room of segment seq before the
// segment before it is sealed; open's own call then gets the same answer.
func (r *Recorder) admitNext(seq uint64) error {
	if r.before == nil {
		return nil
	}
	r.asked = r.segmentName(seq) + PartialSuffix
	r.answer = r.before(r.asked)
	return r.answer
}

// admission is cfg.BeforeSegment once New wrapped it: a segment
// admitNext asked about is not asked twice.
func (r *Recorder) admission(partialPath string) error {
	if partialPath == r.asked {
		r.asked = ""
		return r.answer
	}
	return r.before(partialPath)
}

// closeAfterError ends a recording that a write error stopped: the segment
// being written stays partial (TRUNCATED), and an empty last segment after
// it says "disk error". Nothing is done when the recording already has its
// last segment or has no segment at all; a failure is logged (the disk may
// be full): the daemon then closes the recording at its next start.
//
// A segment cut before its first full payload chunk holds no media: the
// spool records it as empty and never uploads it, so an end linked to it
// would point at a segment the receiver never gets. Its partial file is
// left for the spool (Settle), and the daemon seals the end under its
// number, linked to the segment before it (spool.Unclosed).
func (r *Recorder) closeAfterError(cause error) {
	if r.ended {
		return
	}
	seq, prev := r.seq, r.prev
	if r.cur != nil && !r.cur.sealed {
		if noMedia(r.cur.base + PartialSuffix) {
			r.log.Warn("the segment cut by the write error holds no media; the daemon seals the recording's end in its place",
				"sequence", r.cur.seq)
			return
		}
		seq, prev = r.cur.seq+1, r.cur.w.Commitment()
	}
	if seq == 0 {
		return
	}
	reason := crypto.EndDiskError
	var er endReasoner
	if errors.As(cause, &er) {
		reason = er.EndReason()
	}
	s, err := SealEnd(r.cfg, r.recordingID, seq, prev, reason)
	if err != nil {
		r.log.Error("the recording's end could not be sealed; the daemon seals it with its uploads once there is room", "sequence", seq, "err", err)
		return
	}
	r.ended = true
	r.mu.Lock()
	r.sealed = append(r.sealed, s)
	r.mu.Unlock()
}

// SealEnd seals segment seq of recording id as an empty last segment (no
// media) linked to prev, the commitment of segment seq-1, whose trailer
// says why the recording ended. The recorder calls it after a write error;
// the daemon calls it at start for a recording the box never closed (a
// crash). It writes into cfg.Dir under the usual names and calls
// cfg.OnSealed; BeforeSegment is not asked (the segment is ~1.3 KB and
// ends a recording the spool already holds). If segment seq is already
// sealed (an earlier call whose caller failed after it), the error wraps
// fs.ErrExist and the Sealed holds its path.
func SealEnd(cfg Config, id [16]byte, seq uint64, prev [crypto.CommitmentSize]byte, reason crypto.EndReason) (Sealed, error) {
	if seq == 0 {
		return Sealed{}, errors.New("seal end: a recording's end follows at least one segment")
	}
	base := fmt.Sprintf("%s-%06d", cfgBase(cfg, id), seq)
	if _, err := os.Stat(base + SealedSuffix); err == nil {
		return Sealed{Path: base + SealedSuffix}, fmt.Errorf("seal end of recording %x: segment %d: %w", id, seq, fs.ErrExist)
	}
	f, err := os.OpenFile(base+PartialSuffix, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return Sealed{}, fmt.Errorf("seal end of recording %x: %w", id, err)
	}
	w, err := crypto.NewWriter(f, cfg.Recipients, cfg.Device, crypto.Params{
		RecordingID: id, Sequence: seq, Prev: prev, Start: time.Now(), Codec: Codec,
	})
	if err == nil {
		w.SetEnd(reason)
		err = w.Close()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(base+PartialSuffix, base+SealedSuffix)
	}
	if err == nil {
		err = atomicfile.SyncDir(cfg.Dir)
	}
	if err != nil {
		os.Remove(base + PartialSuffix)
		return Sealed{}, fmt.Errorf("seal end of recording %x segment %d: %w", id, seq, err)
	}
	st, err := os.Stat(base + SealedSuffix)
	if err != nil {
		return Sealed{}, err
	}
	s := Sealed{Path: base + SealedSuffix, RecordingID: id, Sequence: seq, Commitment: w.Commitment(), Last: true, End: reason, Bytes: st.Size()}
	if cfg.Logger != nil {
		cfg.Logger.Info("recording end sealed", "component", "recorder", "recording", fmt.Sprintf("%x", id), "sequence", seq, "end", reason.String())
	}
	if cfg.OnSealed != nil {
		cfg.OnSealed(s)
	}
	return s, nil
}

// noMedia reports whether the partial file at path ends before its first
// full payload chunk (or inside its header), as the spool judges a segment
// empty. A file that cannot be read is not judged empty.
func noMedia(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	info, err := crypto.Verify(f, nil)
	return crypto.OutcomeOf(err) == crypto.Truncated && (info == nil || info.Header == nil || info.NoMedia())
}
