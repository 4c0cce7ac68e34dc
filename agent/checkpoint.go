package agent

import (
	"context"
	"errors"
	"time"

	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/uploader"
)

// checkpointFlushTimeout bounds sending the last checkpoint at stop, so
// the daemon still stops within StopTimeout when the receiver is away.
const checkpointFlushTimeout = 2 * time.Second

// checkpointLoop signs the audit log's head with the device key every
// audit.checkpoint_every once the box is enrolled, and once more when ctx
// ends; each new checkpoint is queued for the receiver. Before
// enrollment there is no device key and nothing is signed.
func (a *Agent) checkpointLoop(ctx context.Context) {
	every := a.Config().Audit.CheckpointEvery.D()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if st, err := a.enrolled(); err == nil {
			a.queueCheckpoint(nil) // the last one written, in case it never reached the receiver
			a.audit.RunCheckpoints(ctx, every, st.Device.Signer(), func(c audit.Checkpoint, written bool, err error) {
				switch {
				case err != nil:
					a.log.Error("audit checkpoint not written: run uploadbox consent audit --verify", "err", err)
				case written:
					a.queueCheckpoint(&c)
				}
			})
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// queueCheckpoint marks c (nil: the newest in the checkpoints file) to be
// sent to the receiver and wakes the upload loop.
func (a *Agent) queueCheckpoint(c *audit.Checkpoint) {
	if c == nil {
		cps, err := audit.ReadCheckpoints(audit.CheckpointPath(a.audit.Path()))
		if err != nil {
			a.log.Error("audit checkpoints unreadable: run uploadbox consent audit --verify", "err", err)
			return
		}
		if len(cps) == 0 {
			return
		}
		c = &cps[len(cps)-1]
	}
	a.mu.Lock()
	a.checkpoint = c
	a.mu.Unlock()
	a.kickUpload()
}

// sendCheckpoint sends the queued checkpoint, if any, with up. It stays
// queued while the receiver cannot be reached; a refusal is final.
func (a *Agent) sendCheckpoint(ctx context.Context, up *uploader.Uploader) {
	a.mu.Lock()
	c := a.checkpoint
	a.mu.Unlock()
	if c == nil {
		return
	}
	err := up.SendCheckpoint(ctx, *c)
	if err != nil && !errors.Is(err, uploader.ErrCheckpointRefused) {
		a.log.Warn("audit checkpoint not sent yet; retrying with the next upload", "seq", c.Seq, "err", err)
		return
	}
	if err != nil {
		a.log.Error("the receiver refused the box's audit checkpoint: the box's audit log may have been rewritten", "seq", c.Seq, "err", err)
	} else {
		a.log.Debug("audit checkpoint sent", "seq", c.Seq)
	}
	a.mu.Lock()
	if a.checkpoint == c {
		a.checkpoint = nil
	}
	a.mu.Unlock()
}

// flushCheckpoint sends the last checkpoint at stop, briefly; what does
// not arrive is sent after the next start.
func (a *Agent) flushCheckpoint() {
	if !a.Config().UploadOn() {
		return
	}
	st, err := a.enrolled()
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), checkpointFlushTimeout)
	defer cancel()
	a.sendCheckpoint(ctx, uploader.New(st, a.spool, a.log))
}
