package recorder

import (
	"context"
	"errors"

	"github.com/uploadbox/uploadbox/capture"
	"github.com/uploadbox/uploadbox/crypto"
)

// Session is one recording: a capture and the recorder that consumes its
// lossless subscription. The daemon keeps the capture to serve live
// viewers from the same encoder.
type Session struct {
	Capture  *capture.Capture
	Recorder *Recorder
	sub      *capture.Subscription
}

// Start opens capture with capCfg and a recorder into cfg.Dir. Nothing runs
// until Run.
func Start(capCfg capture.Config, cfg Config) (*Session, error) {
	c, err := capture.Open(capCfg, capture.WithLogger(cfg.Logger))
	if err != nil {
		return nil, err
	}
	cfg.Segment.Audio = capCfg.Audio
	cfg.Anonymise = c.Config().Anonymise
	cfg.Segment.AudioChannels = c.Config().Channels
	rec, err := New(cfg)
	if err != nil {
		c.Close()
		return nil, err
	}
	sub := c.Subscribe(capture.SubscribeOptions{Mode: capture.Lossless})
	return &Session{Capture: c, Recorder: rec, sub: sub}, nil
}

// Run records until ctx is done, then drains the encoders and seals the
// last segment with the last flag. A recorder failure (disk full, spool
// full) stops capture too.
func (s *Session) Run(ctx context.Context) ([]Sealed, error) {
	// The recorder is not stopped by ctx: it ends when capture has closed
	// the subscription after its last frame, so nothing captured is lost.
	capCtx, stopCapture := context.WithCancel(ctx)
	defer stopCapture()
	recDone := make(chan error, 1)
	// The last segment is sealed after ctx is done (capture drains first),
	// so its end reason is ctx's cause, read then.
	s.Recorder.end = func() crypto.EndReason {
		if ctx.Err() == nil {
			return crypto.EndUnknown // capture ended by itself
		}
		return EndReasonOf(context.Cause(ctx))
	}
	go func() {
		err := s.Recorder.Run(context.WithoutCancel(ctx), s.sub.Frames())
		if err != nil {
			// The subscription must go, or capture would wait for it.
			s.sub.Unsubscribe()
			stopCapture()
		}
		recDone <- err
	}()
	capErr := s.Capture.Run(capCtx)
	if errors.Is(capErr, context.Canceled) || errors.Is(capErr, context.DeadlineExceeded) {
		capErr = nil
	}
	recErr := <-recDone
	if err := errors.Join(recErr, capErr); err != nil {
		return s.Recorder.Sealed(), err
	}
	return s.Recorder.Sealed(), nil
}

// Record captures with capCfg and records into cfg.Dir until ctx is done,
// then drains the encoders and seals the last segment with the last flag.
// started, if set, is called once capture is open, with the recording id.
func Record(ctx context.Context, capCfg capture.Config, cfg Config, started func(id [16]byte)) ([]Sealed, error) {
	s, err := Start(capCfg, cfg)
	if err != nil {
		return nil, err
	}
	if started != nil {
		started(s.Recorder.RecordingID())
	}
	return s.Run(ctx)
}
