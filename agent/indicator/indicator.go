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

// Probe is how often Run rewrites the state, so that an indicator that
// stops working is noticed even when nothing changes.
const Probe = time.Second

// Indicator is a configured indicator, or none (path "").
type Indicator struct {
	path       string
	brightness bool // a sysfs LED: write 0/1, blink for pending and watching
	// OnFail, if set before Run, is called (from Run) when a working
	// indicator stops working, so that whoever relies on it can stop.
	OnFail func(error)

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

// Run blinks an LED while the state asks for it and rewrites the state
// every Probe, until ctx ends; then it turns the LED off. A write that
// fails after the indicator worked calls OnFail.
func (i *Indicator) Run(ctx context.Context) error {
	if i.path == "" {
		<-ctx.Done()
		return nil
	}
	defer i.write(Idle, false)
	on := true
	failed := i.Err() != nil
	for {
		period := Probe
		if i.brightness {
			switch i.State() {
			case Pending:
				period = SlowBlink
			case Watching:
				period = FastBlink
			}
		}
		t := time.NewTimer(period)
		tick := t.C
		select {
		case <-ctx.Done():
			return nil
		case <-i.kick:
			on = true
		case <-tick:
			if period != Probe {
				on = !on
			} else {
				on = true
			}
			i.write(i.State(), on)
		}
		t.Stop()
		err := i.Err()
		if err != nil && !failed && i.OnFail != nil {
			i.OnFail(err)
		}
		failed = err != nil
	}
}
