package button_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/uploadbox/uploadbox/agent/button"
	"github.com/uploadbox/uploadbox/agent/button/buttontest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const ms = time.Millisecond

// runner runs button.Run on a fake line and clock and collects actions.
type runner struct {
	t     *testing.T
	line  *buttontest.Line
	clock *buttontest.Clock
	acts  chan button.Action
	done  chan error
}

func start(t *testing.T, o button.Options) *runner {
	t.Helper()
	r := &runner{t: t, line: buttontest.NewLine(), clock: &buttontest.Clock{},
		acts: make(chan button.Action, 16), done: make(chan error, 1)}
	o.Clock = r.clock
	ctx, cancel := context.WithCancel(t.Context())
	go func() { r.done <- button.Run(ctx, r.line, o, func(a button.Action) { r.acts <- a }) }()
	t.Cleanup(func() {
		cancel()
		<-r.done
		r.line.Close()
	})
	return r
}

// at moves the clock to t and sends an edge there.
func (r *runner) at(t time.Duration, rising bool) {
	r.t.Helper()
	r.clock.Set(t)
	if err := r.line.Send(r.t.Context(), button.Edge{Rising: rising, Time: t}); err != nil {
		r.t.Fatal(err)
	}
}

// next waits for the next action.
func (r *runner) next() button.Action {
	r.t.Helper()
	select {
	case a := <-r.acts:
		return a
	case err := <-r.done:
		r.t.Fatalf("Run returned %v while an action was expected", err)
	case <-r.t.Context().Done():
	}
	return 0
}

// TestPressLongPressBounce drives the fake line through a press, a long
// press and bounce, and sees accept, end-all and nothing, in that order.
// The long press acts while held: its end-all arrives before the release
// is sent. A last long press is the marker after the bounce: had the
// bounce meant anything, its action would come first.
func TestPressLongPressBounce(t *testing.T) {
	r := start(t, button.Options{})

	// Short press: 150 ms, with contact bounce on the way down.
	r.at(1000*ms, true)
	r.at(1004*ms, false)
	r.at(1007*ms, true)
	r.at(1157*ms, false)
	r.clock.Set(1200 * ms)
	if a := r.next(); a != button.Accept {
		t.Fatalf("short press: %v, want accept", a)
	}

	// Long press: end-all at 2 s held, before any release.
	r.at(3000*ms, true)
	r.clock.Set(5000 * ms)
	if a := r.next(); a != button.EndAll {
		t.Fatalf("long press: %v, want end-all", a)
	}
	r.at(6000*ms, false) // releasing a long press does nothing more

	// Bounce: a 10 ms glitch, and a 20 ms one, nothing else.
	r.at(8000*ms, true)
	r.at(8010*ms, false)
	r.at(8100*ms, true)
	r.at(8120*ms, false)
	r.clock.Set(9000 * ms)

	r.at(10000*ms, true)
	r.clock.Set(12000 * ms)
	if a := r.next(); a != button.EndAll {
		t.Fatalf("after the bounce: %v, want only the marker long press's end-all", a)
	}
	select {
	case a := <-r.acts:
		t.Fatalf("extra action %v", a)
	default:
	}
}

// TestSecondLongPressStopsSession: with a stop window, the second long
// press within it stops the session; one after it ends viewing again.
func TestSecondLongPressStopsSession(t *testing.T) {
	r := start(t, button.Options{StopWindow: 10 * time.Second})
	hold := func(from time.Duration) button.Action {
		r.at(from, true)
		r.clock.Set(from + 2*time.Second)
		a := r.next()
		r.at(from+2500*ms, false)
		return a
	}
	got := []button.Action{hold(1 * time.Second), hold(5 * time.Second), hold(8 * time.Second), hold(30 * time.Second)}
	want := []button.Action{button.EndAll, button.StopSession, button.EndAll, button.EndAll}
	if !slices.Equal(got, want) {
		t.Errorf("long presses: %v, want %v", got, want)
	}
}

func TestRunEnds(t *testing.T) {
	t.Run("line fails", func(t *testing.T) {
		line := buttontest.NewLine()
		boom := errors.New("read /dev/gpiochip0 line 17: input/output error")
		line.Fail(boom)
		err := button.Run(t.Context(), line, button.Options{Clock: &buttontest.Clock{}}, func(button.Action) {})
		if !errors.Is(err, boom) {
			t.Errorf("Run = %v, want the line's error", err)
		}
	})
	t.Run("context ends", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if err := button.Run(ctx, buttontest.NewLine(), button.Options{Clock: &buttontest.Clock{}}, func(button.Action) {}); err != nil {
			t.Errorf("Run = %v, want nil", err)
		}
	})
}
