package agent

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/uploadbox/uploadbox/internal/netfail"
	"github.com/uploadbox/uploadbox/uploader"
)

// uploadLoop drains the spool whenever a segment is sealed, and retries
// with exponential backoff (up to upload.retry_max) while the receiver
// cannot be reached. Cancelling ctx parks the upload in flight: the spool
// keeps its URL and the receiver its offset, so the next start resumes.
func (a *Agent) uploadLoop(ctx context.Context) error {
	wait := time.Duration(0)
	failures := 0
	for {
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-a.kick:
				t.Stop()
				if failures > 0 {
					// still backing off: a new segment does not cut the wait short
					continue
				}
			case <-t.C:
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		a.settlePending()
		cfg := a.Config()
		retryMax := cfg.Upload.RetryMax.D()
		if !cfg.UploadOn() {
			wait = retryMax
			continue
		}
		st, err := a.enrolled()
		if err != nil {
			wait = retryMax
			continue
		}
		a.closeEnded()
		up := uploader.New(st, a.spool, a.log, uploader.WithBackoffMax(retryMax),
			uploader.WithCommitObserver(func(d time.Duration) { a.m.commitLatency.Observe(d.Seconds()) }))
		_, err = up.Drain(ctx, func(r uploader.Result) {
			if r.Quarantined != nil {
				a.auditEvent("queue.quarantine", "", "refused", fmt.Sprintf("segment=%s bytes=%d status=%d reason=%s message=%q",
					r.Name, r.Size, r.Quarantined.Status, r.Quarantined.Reason, r.Quarantined.Message))
				return
			}
			a.m.uploadedBytes.Add(float64(r.Size))
			a.m.wipes.Inc()
			a.mu.Lock()
			a.lastCommit = time.Now()
			a.mu.Unlock()
		}, nil)
		ts := up.Stats()
		a.m.retries.Add(float64(ts.Retries))
		a.m.sentBytes.Add(float64(ts.BytesSent))
		if ctx.Err() != nil {
			return nil
		}
		refused := errors.Is(err, uploader.ErrDeviceRefused)
		a.mu.Lock()
		if refused {
			// The receiver refuses the box itself: every segment stays
			// queued (none is quarantined for it) until the enrollment
			// is fixed, and the alert says so.
			a.upAlert = err.Error()
		} else if err == nil {
			a.upAlert = ""
		}
		a.mu.Unlock()
		if refused {
			a.m.deviceRefused.Set(1)
		} else if err == nil {
			a.m.deviceRefused.Set(0)
		}
		if err != nil {
			failures++
			backoff := min(retryMax, time.Second<<min(failures, 16))
			wait = backoff/2 + rand.N(backoff/2+1)
			a.mu.Lock()
			a.upErr = netfail.Text(err)
			a.mu.Unlock()
			a.log.Warn("upload paused; retrying", append([]any{"in", wait.Round(time.Second)}, netfail.Attrs(err)...)...)
			continue
		}
		a.sendCheckpoint(ctx, up)
		failures = 0
		a.mu.Lock()
		a.upErr = ""
		a.uploadOK = time.Now()
		a.mu.Unlock()
		// Nothing pending: sleep until a segment is sealed (or a periodic
		// look, for segments reconciled or left by a failed commit).
		wait = retryMax
	}
}
