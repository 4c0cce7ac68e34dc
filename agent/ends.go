package agent

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"

	"github.com/uploadbox/uploadbox/capture/recorder"
	"github.com/uploadbox/uploadbox/crypto"
)

// CloseRecording seals the end of recording id, segment next linked to
// prev, with reason, queues it for upload and audits it. It is the hook
// for a recording the box never closed.
func (a *Agent) CloseRecording(id [16]byte, next uint64, prev [crypto.CommitmentSize]byte, reason crypto.EndReason) error {
	st, err := a.enrolled()
	if err != nil {
		return err
	}
	rec := hex.EncodeToString(id[:])
	why := strings.ReplaceAll(reason.String(), " ", "_")
	s, err := recorder.SealEnd(recorder.Config{
		Dir: a.Config().Spool.Dir, Recipients: st.Recipients, Device: st.Device, Logger: a.log,
		OnSealed: func(sl recorder.Sealed) {
			if err := a.spool.MarkSealed(filepath.Base(sl.Path)); err != nil {
				a.log.Error("recording end not queued; the spool reconciles it at the next start", "segment", sl.Path, "err", err)
			}
		},
	}, id, next, prev, reason)
	if errors.Is(err, fs.ErrExist) {
		// Sealed before, but not queued (the index write failed): queue it.
		err = a.spool.MarkSealed(filepath.Base(s.Path))
	}
	if err != nil {
		a.auditEvent("recording.end", "", "failed", fmt.Sprintf("recording=%s reason=%s: %v", rec, why, err))
		return err
	}
	a.auditEvent("recording.end", "", "ok", fmt.Sprintf("recording=%s segment=%d reason=%s", rec, next, why))
	a.kickUpload()
	return nil
}

// closeEnded runs before every upload round: a recording without a last
// segment that is not the running session's was stopped by a write error
// whose own end (the recorder's "disk error" segment) could not be
// written, the disk being full; it is sealed now, once there is room.
// Crashes are closed at start, so nothing else leaves such a recording.
func (a *Agent) closeEnded() {
	open, err := a.spool.Unclosed()
	if err != nil || len(open) == 0 {
		return
	}
	a.mu.Lock()
	var live [16]byte
	if a.sess != nil {
		live = a.sess.rs.Recorder.RecordingID()
	}
	a.mu.Unlock()
	for _, u := range open {
		if u.RecordingID == live {
			continue
		}
		if err := a.CloseRecording(u.RecordingID, u.Next, u.Prev, crypto.EndDiskError); err != nil {
			a.log.Warn("the end of a recording stopped by a write error is not sealed yet; retrying with the uploads",
				"recording", hex.EncodeToString(u.RecordingID[:]), "err", err)
		}
	}
}

// closeCrashed runs at daemon start, before any session: every recording
// in the spool without a last segment was cut by a crash (a power cut, a
// kill, or a write error whose own end could not be sealed), so its end is
// sealed as "box crashed" and uploaded with the rest.
func (a *Agent) closeCrashed() {
	if _, err := a.enrolled(); err != nil {
		return // nothing can be sealed before enrollment; the next start tries again
	}
	open, err := a.spool.Unclosed()
	if err != nil {
		a.log.Error("recordings cut by a crash not closed", "err", err)
		return
	}
	for _, u := range open {
		if err := a.CloseRecording(u.RecordingID, u.Next, u.Prev, crypto.EndCrashed); err != nil {
			a.log.Error("the end of a recording cut by a crash could not be sealed; the next start tries again",
				"recording", hex.EncodeToString(u.RecordingID[:]), "err", err)
		}
	}
}
