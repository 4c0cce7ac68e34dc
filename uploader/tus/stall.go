package tus

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// DefaultStallTimeout is the default of Options.StallTimeout.
const DefaultStallTimeout = 15 * time.Second

// ErrStalled is the cause of a request given up because it made no
// progress for Options.StallTimeout: the receiver took no byte of its body
// (PATCH) and did not answer. A receiver that froze (a stopped process, a paused VM) keeps
// its connections open, so without this the box would wait for it to come
// back; the retry asks the offset again, on a new connection (through a
// load balancer, another receiver).
var ErrStalled = errors.New("tus: the receiver stopped taking bytes and did not answer")

// stallWatch cancels a request's context with ErrStalled when touch has
// not been called for d.
type stallWatch struct {
	d      time.Duration
	t      *time.Timer
	cancel context.CancelCauseFunc
}

// watchStall returns ctx with a stall watch of d (d <= 0: none).
func watchStall(ctx context.Context, d time.Duration) (context.Context, *stallWatch) {
	ctx, cancel := context.WithCancelCause(ctx)
	w := &stallWatch{d: d, cancel: cancel}
	if d > 0 {
		w.t = time.AfterFunc(d, func() { cancel(fmt.Errorf("%w for %s", ErrStalled, d)) })
	}
	return ctx, w
}

// touch records progress: the watch starts again.
func (w *stallWatch) touch() {
	if w.t != nil {
		w.t.Reset(w.d)
	}
}

// stop ends the watch and the request's context.
func (w *stallWatch) stop() {
	if w.t != nil {
		w.t.Stop()
	}
	w.cancel(nil)
}

// stalled is err, or the stall that caused it when ctx was ended by a
// stall watch.
func stalled(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); errors.Is(cause, ErrStalled) {
		return cause
	}
	return err
}
