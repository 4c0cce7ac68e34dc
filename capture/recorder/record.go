package recorder

import (
	"context"
	"errors"
	"fmt"

	"github.com/uploadbox/uploadbox/capture"
)

// Record captures with capCfg and records into cfg.Dir until ctx is done,
// then drains the encoders and seals the last segment with the last flag.
// started, if set, is called once capture is open, with the recording id.
func Record(ctx context.Context, capCfg capture.Config, cfg Config, started func(id [16]byte)) ([]Sealed, error) {
	c, err := capture.Open(capCfg, capture.WithLogger(cfg.Logger))
	if err != nil {
		return nil, err
	}
	cfg.Segment.Audio = capCfg.Audio
	cfg.Segment.AudioChannels = c.Config().Channels
	rec, err := New(cfg)
	if err != nil {
		c.Close()
		return nil, err
	}
	sub := c.Subscribe(capture.SubscribeOptions{Mode: capture.Lossless})
	if started != nil {
		started(rec.RecordingID())
	}
	// The recorder is not stopped by ctx: it ends when capture has closed
	// the subscription after its last frame, so nothing captured is lost.
	capCtx, stopCapture := context.WithCancel(ctx)
	defer stopCapture()
	recDone := make(chan error, 1)
	go func() {
		err := rec.Run(context.WithoutCancel(ctx), sub.Frames())
		if err != nil {
			// A recorder failure (disk full) stops capture too; the
			// subscription must go, or capture would wait for it.
			sub.Unsubscribe()
			stopCapture()
		}
		recDone <- err
	}()
	capErr := c.Run(capCtx)
	if errors.Is(capErr, context.Canceled) || errors.Is(capErr, context.DeadlineExceeded) {
		capErr = nil
	}
	recErr := <-recDone
	if err := errors.Join(recErr, capErr); err != nil {
		return rec.Sealed(), fmt.Errorf("record: %w", err)
	}
	return rec.Sealed(), nil
}
