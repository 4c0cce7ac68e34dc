package agent

import (
	"encoding/hex"
	"fmt"
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
	_, err = recorder.SealEnd(recorder.Config{
		Dir: a.Config().Spool.Dir, Recipients: st.Recipients, Device: st.Device, Logger: a.log,
		OnSealed: func(sl recorder.Sealed) {
			if err := a.spool.MarkSealed(filepath.Base(sl.Path)); err != nil {
				a.log.Error("recording end not queued; the spool reconciles it at the next start", "segment", sl.Path, "err", err)
			}
		},
	}, id, next, prev, reason)
	if err != nil {
		a.auditEvent("recording.end", "", "failed", fmt.Sprintf("recording=%s reason=%s: %v", rec, why, err))
		return err
	}
	a.auditEvent("recording.end", "", "ok", fmt.Sprintf("recording=%s segment=%d reason=%s", rec, next, why))
	a.kickUpload()
	return nil
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
