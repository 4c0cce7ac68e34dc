// Package buttontest has a fake button line and a fake clock for tests of
// package button and of what the daemon does with the button.
//
// A test moves the clock and sends edges from one goroutine; Send returns
// once button.Run has taken the edge, so the classifier has seen every
// edge sent before the test moves the clock again.
package buttontest

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/uploadbox/uploadbox/agent/button"
)

// ErrClosed is what Send returns once the line is closed.
var ErrClosed = errors.New("fake button line closed")

// Line is a fake button.Line.
type Line struct {
	events chan button.Edge
	done   chan struct{}

	mu     sync.Mutex
	err    error
	closed bool
}

var _ button.Line = (*Line)(nil)

// NewLine returns a line with nothing sent yet.
func NewLine() *Line {
	return &Line{events: make(chan button.Edge), done: make(chan struct{})}
}

// Send delivers e and returns once the reader took it, or ctx's error.
func (l *Line) Send(ctx context.Context, e button.Edge) error {
	select {
	case l.events <- e:
		return nil
	case <-l.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Press sends a rising edge at t.
func (l *Line) Press(ctx context.Context, t time.Duration) error {
	return l.Send(ctx, button.Edge{Rising: true, Time: t})
}

// Release sends a falling edge at t.
func (l *Line) Release(ctx context.Context, t time.Duration) error {
	return l.Send(ctx, button.Edge{Time: t})
}

// Fail ends the line with err, as a real line whose read fails.
func (l *Line) Fail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.closed, l.err = true, err
		close(l.done)
		close(l.events)
	}
}

// Events implements button.Line.
func (l *Line) Events() <-chan button.Edge { return l.events }

// Err implements button.Line.
func (l *Line) Err() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// Close implements button.Line.
func (l *Line) Close() error {
	l.Fail(nil)
	return nil
}

// Clock is a fake button.Clock that moves only when Set.
type Clock struct {
	mu    sync.Mutex
	now   time.Duration
	waits []wait
}

type wait struct {
	at time.Duration
	ch chan time.Time
}

var _ button.Clock = (*Clock)(nil)

// Now implements button.Clock.
func (c *Clock) Now() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// At implements button.Clock.
func (c *Clock) At(t time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if t <= c.now {
		ch <- time.Time{}
		return ch
	}
	c.waits = append(c.waits, wait{t, ch})
	return ch
}

// Set moves the clock to t (never back) and fires what is due.
func (c *Clock) Set(t time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = max(c.now, t)
	kept := c.waits[:0]
	for _, w := range c.waits {
		if w.at <= c.now {
			w.ch <- time.Time{}
			continue
		}
		kept = append(kept, w)
	}
	c.waits = kept
}
