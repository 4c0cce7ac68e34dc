// Package button reads the box's consent button: a push button on a GPIO
// line, read through the Linux GPIO character device (uAPI v2), debounced
// and classified into what the teacher meant.
//
// A short press (released before LongPress) accepts the oldest pending
// viewer request; a long press (held for LongPress) ends all viewing, at
// the moment it has been held that long, not at its release; with
// StopWindow set, a second long press within StopWindow of the first stops
// the recording session instead. Edges closer together than Debounce are
// bounce and mean nothing.
//
// The classifier decides on the line's own timestamps (the kernel's
// CLOCK_MONOTONIC for a real line) and uses the clock only to know when a
// deadline has come, so a test drives it with a fake Line and a fake Clock
// (package buttontest) without sleeping.
package button

import (
	"context"
	"time"
)

// Edge is one change of the line's level.
type Edge struct {
	// Rising: the line became active, the button went down (active_low
	// is applied by the line); false: it was released.
	Rising bool
	// Time is when, on the line's clock (the same as Clock.Now's).
	Time time.Duration
}

// Line is a source of edges: the GPIO line (Open) or a test's fake.
type Line interface {
	// Events delivers the edges in order. It is closed when the line
	// fails (Err says why) or is closed.
	Events() <-chan Edge
	// Err is why Events was closed; nil after Close.
	Err() error
	// Close releases the line and waits until Events is closed.
	Close() error
}

// Clock tells the time on the line's clock.
type Clock interface {
	// Now is the current time, on the same scale as Edge.Time.
	Now() time.Duration
	// At returns a channel that receives once Now() has reached t (at
	// once if it has already).
	At(t time.Duration) <-chan time.Time
}

// Action is what a press means.
type Action int

// The actions, in the order the docs list them.
const (
	Accept      Action = iota + 1 // short press: accept the oldest pending request
	EndAll                        // long press: end all viewing now
	StopSession                   // a second long press within StopWindow: stop recording
)

func (a Action) String() string {
	switch a {
	case Accept:
		return "accept"
	case EndAll:
		return "end-all"
	case StopSession:
		return "stop-session"
	}
	return "unknown"
}

// Defaults of Options.
const (
	DefaultDebounce  = 30 * time.Millisecond
	DefaultLongPress = 2 * time.Second
	// DefaultStopWindow is the StopWindow the daemon uses when
	// consent.button.long_press_stops_session is on.
	DefaultStopWindow = 10 * time.Second
)

// Options tune the classifier.
type Options struct {
	// Debounce is how long the line must stay at a level before it
	// counts (default DefaultDebounce).
	Debounce time.Duration
	// LongPress is how long a hold must last to be a long press (default
	// DefaultLongPress).
	LongPress time.Duration
	// StopWindow, if positive, makes a long press within StopWindow of
	// the previous long press a StopSession; 0: every long press is
	// EndAll.
	StopWindow time.Duration
	// Clock is the line's clock (default: CLOCK_MONOTONIC, the kernel's
	// clock of GPIO events).
	Clock Clock
}

func (o Options) withDefaults() Options {
	if o.Debounce <= 0 {
		o.Debounce = DefaultDebounce
	}
	if o.LongPress <= 0 {
		o.LongPress = DefaultLongPress
	}
	if o.Clock == nil {
		o.Clock = monotonic{}
	}
	return o
}

// Run reads line's edges and calls act with each press's meaning, in
// order, from Run's goroutine, until ctx ends (nil) or the line fails
// (its error). The caller closes line.
func Run(ctx context.Context, line Line, o Options, act func(Action)) error {
	o = o.withDefaults()
	c := newClassifier(o)
	do := func(as []Action) {
		for _, a := range as {
			act(a)
		}
	}
	for {
		var due <-chan time.Time
		if t, ok := c.next(); ok {
			due = o.Clock.At(t)
		}
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-line.Events():
			if !ok {
				return line.Err()
			}
			do(c.edge(e))
		case <-due:
			do(c.advance(o.Clock.Now()))
		}
	}
}

// classifier turns edges into actions. It decides on the edges' own
// times; advance only says that time has passed.
type classifier struct {
	debounce, long, window time.Duration

	stable   bool          // the settled level: pressed
	level    bool          // the level after the last edge
	edgeAt   time.Duration // when the last edge came
	settling bool          // the last edge waits out its debounce
	downAt   time.Duration // when the settled press began
	fired    bool          // this hold's long press has fired
	longAt   time.Duration // when the last long press fired
	longSeen bool          // a long press fired that a second one may follow
}

func newClassifier(o Options) *classifier {
	return &classifier{debounce: o.Debounce, long: o.LongPress, window: o.StopWindow}
}

// edge settles what was due before e, then takes e as the new level.
// An edge within the debounce of the previous one replaces it: a level
// counts only once it held for the debounce interval.
func (c *classifier) edge(e Edge) []Action {
	as := c.advance(e.Time)
	c.level, c.edgeAt, c.settling = e.Rising, e.Time, true
	return as
}

// advance settles the last edge and fires the long press when their time
// has come by now.
func (c *classifier) advance(now time.Duration) []Action {
	var as []Action
	if c.settling && now-c.edgeAt >= c.debounce {
		c.settling = false
		if c.level != c.stable {
			as = append(as, c.settle(c.edgeAt)...)
		}
	}
	if d, ok := c.longDeadline(); ok && now >= d {
		as = append(as, c.longPress(d))
	}
	return as
}

// longDeadline is when the held button's long press fires, if it may: a
// release that came before then waits out its debounce first.
func (c *classifier) longDeadline() (time.Duration, bool) {
	if !c.stable || c.fired {
		return 0, false
	}
	d := c.downAt + c.long
	if c.settling && !c.level && c.edgeAt < d {
		return 0, false
	}
	return d, true
}

// settle makes the settled level the last edge's, which came at at.
func (c *classifier) settle(at time.Duration) []Action {
	c.stable = c.level
	if c.stable {
		c.downAt, c.fired = at, false
		return nil
	}
	switch {
	case c.fired:
		return nil // the long press acted while held
	case at-c.downAt >= c.long:
		// Held long enough, but its deadline was not seen in time.
		return []Action{c.longPress(c.downAt + c.long)}
	}
	return []Action{Accept}
}

func (c *classifier) longPress(at time.Duration) Action {
	c.fired = true
	if c.window > 0 && c.longSeen && at-c.longAt <= c.window {
		c.longSeen = false
		return StopSession
	}
	c.longAt, c.longSeen = at, true
	return EndAll
}

// next is when advance has something to do, if anything.
func (c *classifier) next() (time.Duration, bool) {
	var t time.Duration
	ok := false
	if c.settling {
		t, ok = c.edgeAt+c.debounce, true
	}
	if l, lok := c.longDeadline(); lok && (!ok || l < t) {
		t, ok = l, true
	}
	return t, ok
}
