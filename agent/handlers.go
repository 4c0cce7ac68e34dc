package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/uploadbox/uploadbox/agent/config"
	"github.com/uploadbox/uploadbox/agent/control"
	"github.com/uploadbox/uploadbox/agent/link"
	"github.com/uploadbox/uploadbox/capture/anon"
	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/internal/cli"
	"github.com/uploadbox/uploadbox/uploader/spool"
)

// Status is the answer to the "status" call.
type Status struct {
	PID      int       `json:"pid"`
	Version  string    `json:"version"`
	Started  time.Time `json:"started"`
	Uptime   float64   `json:"uptime_seconds"`
	Enrolled bool      `json:"enrolled"`
	Receiver string    `json:"receiver,omitempty"`
	// StateProblem, while the box is not enrolled, names the state files
	// the daemon's user cannot use and the commands that fix them.
	StateProblem string        `json:"state_problem,omitempty"`
	Session      SessionStatus `json:"session"`
	Queue        Queue         `json:"queue"`
	// UploadError is the last upload failure while the uploader backs off.
	UploadError string `json:"upload_error,omitempty"`
	// UploadAlert is set while the receiver refuses this box's enrollment.
	UploadAlert  string    `json:"upload_alert,omitempty"`
	LastUploadOK time.Time `json:"last_upload_ok,omitzero"`
	Reloads      int       `json:"reloads"`
	// Control is the control connection to the receiver; absent when it
	// does not run (not enrolled, or link.enabled is false).
	Control *link.State `json:"control,omitempty"`
	// LiveDTLS is the live view's DTLS certificate fingerprint, as the SDP
	// answers carry it ("sha-256 AB:CD:…"); LiveDTLSError says why there
	// is none.
	LiveDTLS      string `json:"live_dtls_fingerprint,omitempty"`
	LiveDTLSError string `json:"live_dtls_error,omitempty"`
	// Talkback is live.talkback_device while live view and talk-back are
	// on; TalkbackSpeaking the viewer whose voice it plays now.
	Talkback         string `json:"talkback,omitempty"`
	TalkbackSpeaking string `json:"talkback_speaking,omitempty"`
}

// Queue is the upload backlog (`uploadbox queue`).
type Queue struct {
	Count   int            `json:"count"`
	Bytes   int64          `json:"bytes"`
	Oldest  time.Time      `json:"oldest,omitzero"`
	Age     float64        `json:"oldest_age_seconds"`
	ByState map[string]int `json:"by_state"`
	// EndsPending counts the stopped recordings whose last segment (the
	// one that says how they ended) is not sealed yet: the daemon seals
	// it with the next upload round, once the spool has room. The queue
	// is drained only when this is 0 too.
	EndsPending int `json:"ends_pending"`
	// Held are the segments that wait for a technician: quarantined (the
	// receiver refused them for good), corrupt and missing ones.
	Held []HeldSegment `json:"held,omitempty"`
}

// HeldSegment is a segment that is not uploaded until a technician acts.
type HeldSegment struct {
	ID     string    `json:"id"` // the segment's name, for queue retry and discard
	State  string    `json:"state"`
	File   string    `json:"file"`
	Bytes  int64     `json:"bytes"`
	Sealed time.Time `json:"sealed,omitzero"`
	// Status, Reason and Message are the receiver's refusal of a
	// quarantined segment; Message is the box's reason for the others.
	Status  int       `json:"status,omitempty"`
	Reason  string    `json:"reason,omitempty"`
	Message string    `json:"message,omitempty"`
	Since   time.Time `json:"since,omitzero"`
}

// QueueID names a segment ("queue.retry").
type QueueID struct {
	ID string `json:"id"`
}

// QueueDiscard are the parameters of "queue.discard": without Yes nothing
// is deleted and the answer says what would be.
type QueueDiscard struct {
	ID  string `json:"id"`
	Yes bool   `json:"yes,omitempty"`
}

// SessionStart are the parameters of "session.start".
type SessionStart struct {
	For string `json:"for,omitempty"` // a duration; empty: recording.session_default
	// Anonymise is off, whole or masks; empty: recording.anonymise.
	Anonymise string `json:"anonymise,omitempty"`
}

// AuditAppend are the parameters of "audit.append" (diag records its runs).
type AuditAppend struct {
	Event   string `json:"event"`
	Outcome string `json:"outcome"`
	Detail  string `json:"detail,omitempty"`
}

// handle answers the control socket.
func (a *Agent) handle(_ context.Context, r control.Request) (any, error) {
	switch r.Method {
	case "status":
		return a.Status()
	case "queue":
		return a.Queue()
	case "queue.retry", "queue.discard":
		return a.handleQueue(r)
	case "session.status":
		return a.SessionStatus(), nil
	case "session.start":
		var p SessionStart
		if err := r.Decode(&p); err != nil {
			return nil, err
		}
		var d time.Duration
		if p.For != "" {
			var err error
			if d, err = config.ParseDuration(p.For); err != nil {
				return nil, control.Errorf("bad-request", "--for: %v", err)
			}
		}
		var mode anon.Mode
		if p.Anonymise != "" {
			var err error
			if mode, err = anon.ParseMode(p.Anonymise); err != nil {
				return nil, control.Errorf("bad-request", "--anonymise: %v", err)
			}
		}
		st, err := a.startSession(d, mode, r.Caller())
		if err != nil {
			return nil, control.Errorf("refused", "%v", err)
		}
		return st, nil
	case "session.stop":
		if err := a.stopSession(StopStopped, r.Caller()); err != nil {
			if errors.Is(err, errNoSession) {
				return nil, control.Errorf("not-found", "%v", err)
			}
			return nil, err
		}
		return a.SessionStatus(), nil
	case "consent.list", "consent.accept", "consent.deny", "consent.revoke", "audit.verify", "audit.list":
		return a.handleConsent(r)
	case "audit.append":
		var p AuditAppend
		if err := r.Decode(&p); err != nil {
			return nil, err
		}
		if !strings.HasPrefix(p.Event, "diag.") || p.Outcome == "" || len(p.Detail) > 4096 {
			return nil, control.Errorf("bad-request", "audit.append takes diag.* events with an outcome and a detail under 4 KiB")
		}
		a.auditEvent(p.Event, r.Caller(), p.Outcome, p.Detail)
		a.noteDiag(audit.Entry{Time: time.Now(), Event: p.Event, Outcome: p.Outcome, Detail: p.Detail})
		return struct{}{}, nil
	}
	return nil, control.Errorf("unknown-method", "unknown control method %q (is the CLI newer than the daemon?)", r.Method)
}

// Status reports the daemon's state.
func (a *Agent) Status() (Status, error) {
	q, err := a.Queue()
	if err != nil {
		return Status{}, err
	}
	s := Status{
		PID: os.Getpid(), Version: cli.Version, Started: a.started, Uptime: time.Since(a.started).Seconds(),
		Session: a.SessionStatus(), Queue: q, Control: a.linkState(),
	}
	s.LiveDTLS, s.LiveDTLSError = a.dtlsFingerprint()
	if lv := a.Config().Live; lv.Enabled && lv.TalkbackDevice != "" {
		s.Talkback = lv.TalkbackDevice
		if snap, err := a.ledger.Snapshot(); err == nil {
			s.TalkbackSpeaking = snap.Speaking
		}
	}
	a.mu.Lock()
	if a.state != nil {
		s.Enrolled = true
		s.Receiver = a.state.Receiver.String()
	} else {
		s.StateProblem = stateProblems(a.cfg.StateDir)
	}
	s.UploadError, s.UploadAlert, s.LastUploadOK, s.Reloads = a.upErr, a.upAlert, a.uploadOK, a.reloads
	a.mu.Unlock()
	return s, nil
}

// Queue reports the upload backlog.
func (a *Agent) Queue() (Queue, error) {
	st, err := a.spool.Stats()
	if err != nil {
		return Queue{}, fmt.Errorf("spool: %w", err)
	}
	q := Queue{Count: st.Count, Bytes: st.Bytes, Oldest: st.Oldest, Age: st.Age.Seconds(), ByState: map[string]int{}}
	for k, v := range st.ByState {
		q.ByState[string(k)] = v
	}
	q.EndsPending = a.endsPending()
	if st.ByState[spool.Quarantined]+st.ByState[spool.Corrupt]+st.ByState[spool.Missing] == 0 {
		return q, nil
	}
	all, err := a.spool.All()
	if err != nil {
		return Queue{}, fmt.Errorf("spool: %w", err)
	}
	for _, r := range all {
		if r.State != spool.Quarantined && r.State != spool.Corrupt && r.State != spool.Missing {
			continue
		}
		h := HeldSegment{ID: r.Name, State: string(r.State), File: a.spool.Path(r), Bytes: r.Size, Sealed: r.SealedAt, Message: r.Reason}
		if r.Refusal != nil {
			h.Status, h.Reason, h.Message, h.Since = r.Refusal.Status, r.Refusal.Reason, r.Refusal.Message, r.Refusal.At
		}
		q.Held = append(q.Held, h)
	}
	return q, nil
}

// endsPending counts the recordings other than the running session's
// that still wait for their end to be sealed (see closeEnded).
func (a *Agent) endsPending() int {
	open, err := a.spool.Unclosed()
	if err != nil {
		return 0
	}
	a.mu.Lock()
	var live [16]byte
	if a.sess != nil {
		live = a.sess.rs.Recorder.RecordingID()
	}
	a.mu.Unlock()
	n := 0
	for _, u := range open {
		if u.RecordingID != live {
			n++
		}
	}
	return n
}
