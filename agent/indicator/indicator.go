// Package indicator drives the box's privacy indicator: an LED through a
// sysfs brightness file, or a plain file that holds the state's name (for
// a status display, and for tests). It shows idle, recording, consent
// pending and someone watching; when it cannot be driven, the live view is
// refused (the teacher must be able to see that someone watches).
package indicator

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// State is what the indicator shows, in rising order of precedence.
type State int

// The states. Watching outranks pending, which outranks recording.
const (
	Idle State = iota
	Recording
	Pending
	Watching
)

func (s State) String() string {
	return [...]string{"idle", "recording", "pending", "watching"}[s]
}

// Blink periods of an LED: steady on while recording, slow blink while a
// request waits for the teacher, fast blink while someone watches.
const (
	SlowBlink = 500 * time.Millisecond
	FastBlink = 150 * time.Millisecond
)

// Indicator is a configured indicator, or none (path "").
type Indicator struct {
	path       string
	brightness bool // a sysfs LED: write 0/1, blink for pending and watching

	mu    sync.Mutex
	state State
	err   error // the last write failure; nil when the indicator works
	kick  chan struct{}
}

// New makes an indicator for path ("" for none). A path whose base name is
// "brightness" is driven as an LED; any other file gets the state's name.
// New writes Idle once, so a path that cannot be written fails here.
func New(path string) (*Indicator, error) {
	ind := &Indicator{path: path, brightness: filepath.Base(path) == "brightness", kick: make(chan struct{}, 1)}
	if path == "" {
		return ind, nil
	}
	if err := ind.write(Idle, true); err != nil {
		return ind, err
	}
	return ind, nil
}

// Configured reports whether there is an indicator at all.
func (i *Indicator) Configured() bool { return i.path != "" }

// Err is the last failure to drive a configured indicator, or nil.
func (i *Indicator) Err() error {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.err
}

// Set shows s. The error says the indicator could not be driven.
func (i *Indicator) Set(s State) error {
	i.mu.Lock()
	i.state = s
	i.mu.Unlock()
	select {
	case i.kick <- struct{}{}:
	default:
	}
	if i.path == "" {
		return nil
	}
	return i.write(s, true)
}

// State is what the indicator shows now.
func (i *Indicator) State() State {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.state
}

func (i *Indicator) write(s State, on bool) error {
	val := s.String() + "\n"
	if i.brightness {
		val = "0\n"
		if s != Idle && on {
			val = "1\n"
		}
	}
	// A sysfs attribute is written in place, never replaced.
	f, err := os.OpenFile(i.path, os.O_WRONLY|os.O_TRUNC, 0)
	if err == nil {
		_, err = f.WriteString(val)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		err = fmt.Errorf("privacy indicator %s cannot be driven: %w (check indicator.path and that the daemon may write it)", i.path, err)
	}
	i.mu.Lock()
	i.err = err
	i.mu.Unlock()
	return err
}

// Run blinks an LED while the state asks for it, until ctx ends; then it
// turns the LED off. For a plain file it only waits.
func (i *Indicator) Run(ctx context.Context) error {
	defer func() {
		if i.path != "" {
			i.write(Idle, false)
		}
	}()
	on := true
	for {
		period := time.Duration(0)
		if i.brightness {
			switch i.State() {
			case Pending:
				period = SlowBlink
			case Watching:
				period = FastBlink
			}
		}
		var tick <-chan time.Time
		var t *time.Timer
		if period > 0 {
			t = time.NewTimer(period)
			tick = t.C
		}
		select {
		case <-ctx.Done():
			return nil
		case <-i.kick:
			on = true
		case <-tick:
			on = !on
			i.write(i.State(), on)
		}
		if t != nil {
			t.Stop()
		}
	}
}
