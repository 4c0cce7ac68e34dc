package agent

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/uploadbox/uploadbox/agent/config"
	"github.com/uploadbox/uploadbox/capture"
	"github.com/uploadbox/uploadbox/capture/anon"
	"github.com/uploadbox/uploadbox/capture/recorder"
	"github.com/uploadbox/uploadbox/capture/segment"
	"github.com/uploadbox/uploadbox/consent"
)

var errNoSession = errors.New("no session is running")

// SessionStatus is what `uploadbox session status` shows.
type SessionStatus struct {
	Active    bool   `json:"active"`
	Recording string `json:"recording,omitempty"` // recording id (hex)
	// Anonymise is the filter applied to every frame before the encoder:
	// off, whole or masks.
	Anonymise string    `json:"anonymise,omitempty"`
	Started   time.Time `json:"started,omitzero"`
	Until     time.Time `json:"until,omitzero"`
	Ended     time.Time `json:"ended,omitzero"`
	Segments  int       `json:"segments"` // sealed so far
	Bytes     int64     `json:"bytes"`
	// StopReason says why an ended session stopped: one of the Stop*
	// constants.
	StopReason string `json:"stop_reason,omitempty"`
	Error      string `json:"error,omitempty"`
	// Alert is set when recording stopped on its own (spool full, disk
	// reserve) and stays until the next session starts.
	Alert string `json:"alert,omitempty"`
}

type session struct {
	rs       *recorder.Session
	mode     anon.Mode
	started  time.Time
	until    time.Time
	cancel   context.CancelCauseFunc
	done     chan struct{}
	segments atomic.Int64
	bytes    atomic.Int64
	status   SessionStatus // set when done is closed
	// stoppedBy is who stopped the session (a control-socket caller or
	// consent.ByDaemon), set under Agent.mu before cancel; empty when it
	// stopped by itself (time up, capture ended, an error).
	stoppedBy string
	// partial is the spool name of the segment the recorder started
	// last; written by the recorder's goroutine, read after Run returned.
	partial string
}

// Why a session ended: SessionStatus.StopReason and the audit log's
// session.stop reason. These words are stable; the receiver shows them as
// the recording's end reason.
const (
	StopStopped        = "stopped"         // someone stopped it
	StopTimeUp         = "session time up" // the session's length ran out
	StopSpoolFull      = "spool full"      // no room for the next segment
	StopDiskError      = "disk error"      // writing the spool failed
	StopDaemonStopping = "daemon stopping" // the daemon was asked to stop
	StopCaptureEnded   = "capture ended"   // the source ended by itself
	StopError          = "error"           // any other failure
	// StopCrashed: the daemon did not end the session itself (killed, a
	// power cut); the next start says so.
	StopCrashed = "box crashed"
)

var errStopped = errors.New(StopStopped)
var errTimeUp = errors.New(StopTimeUp)

// captureConfig maps the daemon config to the capture's, with the
// session's anonymisation mode.
func captureConfig(c *config.Config, mode anon.Mode) capture.Config {
	cp := c.Capture
	return capture.Config{
		Source: cp.Source, Device: cp.Device, Width: cp.Width, Height: cp.Height, FPS: cp.FPS,
		Bitrate: int(cp.Bitrate), KeyInterval: cp.KeyInterval.D(), Audio: c.AudioOn(),
		AudioDevice: cp.AudioDevice, Channels: cp.Channels, AudioBitrate: int(cp.AudioBitrate),
		Anonymise: mode, Masks: c.AnonMasks(),
	}
}

// segmentEstimate is the room a segment is expected to need, with margin.
func segmentEstimate(c *config.Config) int64 {
	bps := int64(c.Capture.Bitrate)
	if c.AudioOn() {
		bps += int64(c.Capture.AudioBitrate) * int64(c.Capture.Channels)
	}
	return bps / 8 * int64(c.Recording.Segment.D()/time.Second) * 3 / 2
}

// startSession starts recording for d (0: the configured default), its
// frames anonymised by mode (empty: the configured default).
func (a *Agent) startSession(d time.Duration, mode anon.Mode, who string) (SessionStatus, error) {
	st, err := a.enrolled()
	if err != nil {
		return SessionStatus{}, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	cfg := a.cfg
	if a.sess != nil {
		return SessionStatus{}, fmt.Errorf("a session is already running until %s: stop it first (`uploadbox session stop`)", a.sess.until.Format(time.TimeOnly))
	}
	if d == 0 {
		d = cfg.Recording.SessionDefault.D()
	}
	if d < time.Second || d > cfg.Recording.SessionMax.D() {
		return SessionStatus{}, fmt.Errorf("session length %s: use 1s to recording.session_max (%s)", d, cfg.Recording.SessionMax)
	}
	if mode == "" {
		mode = anon.Mode(cfg.Recording.Anonymise)
	}
	if mode == "" {
		mode = anon.Off
	}
	if mode == anon.Masks && len(cfg.Capture.Masks) == 0 {
		return SessionStatus{}, fmt.Errorf("anonymise masks: no rectangle in capture.masks: add one to the config, or choose whole")
	}
	s := &session{started: time.Now(), done: make(chan struct{}), mode: mode}
	s.until = s.started.Add(d)
	estimate := segmentEstimate(cfg)
	rs, err := recorder.Start(captureConfig(cfg, mode), recorder.Config{
		Dir:        cfg.Spool.Dir,
		Recipients: st.Recipients,
		Device:     st.Device,
		Segment:    segment.Config{SegmentLength: cfg.Recording.Segment.D()},
		Logger:     a.log,
		BeforeSegment: func(partial string) error {
			if err := a.spool.Admit(estimate); err != nil {
				return err
			}
			if err := a.spool.MarkRecording(filepath.Base(partial)); err != nil {
				return err
			}
			s.partial = filepath.Base(partial)
			return nil
		},
		OnSealed: func(sl recorder.Sealed) {
			if err := a.spool.MarkSealed(filepath.Base(sl.Path)); err != nil {
				// A full disk can refuse the index write: the upload
				// loop settles the segment again, no restart needed.
				a.log.Error("sealed segment not queued yet; retrying with the uploads", "segment", sl.Path, "err", err)
				a.mu.Lock()
				a.unsettled = append(a.unsettled, filepath.Base(sl.Path))
				a.mu.Unlock()
			}
			s.segments.Add(1)
			s.bytes.Add(sl.Bytes)
			a.m.segmentsSealed.Inc()
			a.kickUpload()
		},
	})
	if err != nil {
		a.auditEvent("session.start", who, "failed", fmt.Sprintf("anonymise=%s: %v", mode, err))
		return SessionStatus{}, fmt.Errorf("session not started: %w", err)
	}
	s.rs = rs
	ctx, cancel := context.WithCancelCause(context.Background())
	ctx, cancelTimer := context.WithDeadlineCause(ctx, s.until, errTimeUp)
	s.cancel = cancel
	a.sess = s
	a.alert = ""
	a.ledger.SessionStarted(s.until)
	id := rs.Recorder.RecordingID()
	a.m.session(true)
	a.auditEvent("session.start", who, "ok", fmt.Sprintf("recording=%s until=%s anonymise=%s", hex.EncodeToString(id[:]), s.until.UTC().Format(time.RFC3339), mode))
	a.log.Info("session started", "recording", hex.EncodeToString(id[:]), "until", s.until, "anonymise", mode)
	notify("STATUS=recording until " + s.until.Format(time.TimeOnly))
	go a.updateIndicator() // a.mu is held here
	go func() {
		defer cancelTimer()
		_, err := rs.Run(ctx)
		a.sessionEnded(s, context.Cause(ctx), err)
	}()
	return a.statusOf(s), nil
}

func (a *Agent) sessionEnded(s *session, cause, err error) {
	st := a.statusOf(s)
	st.Active = false
	st.Ended = time.Now()
	outcome := "ok"
	// The segment being written when the recorder failed is classified
	// now (truncated and uploaded, or empty), not at the next start.
	seg, pending := a.settle(s.partial)
	alert := ""
	switch {
	case err != nil:
		st.StopReason, alert = stopAlert(err, a.Config(), seg, pending)
		st.Error, outcome = err.Error(), "failed"
	case cause != nil:
		st.StopReason = cause.Error()
	default:
		st.StopReason = StopCaptureEnded
	}
	a.mu.Lock()
	a.m.sessionDone(s.rs.Capture)
	if alert != "" {
		a.alert = alert
		a.m.alert.Set(1)
	}
	st.Alert = a.alert
	s.status = st
	a.last = &st
	a.sess = nil
	by := s.stoppedBy
	a.mu.Unlock()
	// A recording a write error left without its end (the recorder could
	// not seal it, or the cut segment was empty) is closed by the next
	// upload round, now that it is no longer the running one.
	a.kickUpload()
	if by == "" {
		by = consent.ByDaemon
	}
	a.m.session(false)
	// Every grant ends with the session: the live view closes at once.
	a.ledger.SessionEnded(by)
	a.updateIndicator()
	id := st.Recording
	if err != nil {
		a.log.Error("recording stopped on its own", "recording", id, "reason", st.StopReason, "alert", st.Alert, "err", err)
	} else {
		a.log.Info("session ended", "recording", id, "reason", st.StopReason, "segments", st.Segments)
	}
	a.auditEvent("session.stop", by, outcome, fmt.Sprintf("recording=%s reason=%s segments=%d", id, strings.ReplaceAll(st.StopReason, " ", "_"), st.Segments))
	notify("STATUS=idle: no session")
	close(s.done)
}

// stopSession ends the running session and waits until its last segment
// is sealed; by is who stopped it, for the audit log.
func (a *Agent) stopSession(reason, by string) error {
	a.mu.Lock()
	s := a.sess
	if s != nil && s.stoppedBy == "" {
		s.stoppedBy = by
	}
	a.mu.Unlock()
	if s == nil {
		return errNoSession
	}
	cause := errStopped
	if reason != "" && reason != StopStopped {
		cause = errors.New(reason)
	}
	s.cancel(cause)
	select {
	case <-s.done:
		return nil
	case <-time.After(StopTimeout):
		return fmt.Errorf("session did not stop within %s", StopTimeout)
	}
}

func (a *Agent) statusOf(s *session) SessionStatus {
	id := s.rs.Recorder.RecordingID()
	return SessionStatus{
		Active: true, Recording: hex.EncodeToString(id[:]), Anonymise: string(s.mode), Started: s.started, Until: s.until,
		Segments: int(s.segments.Load()), Bytes: s.bytes.Load(),
	}
}

// SessionStatus returns the running session, or the last one that ended.
func (a *Agent) SessionStatus() SessionStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sess != nil {
		return a.statusOf(a.sess)
	}
	if a.last != nil {
		st := *a.last
		st.Alert = a.alert
		return st
	}
	return SessionStatus{Alert: a.alert}
}

// Capture returns the running session's capture (for live view), or nil.
func (a *Agent) Capture() *capture.Capture {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sess == nil {
		return nil
	}
	return a.sess.rs.Capture
}
