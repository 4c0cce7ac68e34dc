package button

import (
	"slices"
	"testing"
	"time"
)

const ms = time.Millisecond

// step is an edge (press or release) or a moment the clock reaches (tick).
type step struct {
	at   time.Duration
	kind byte // 'p' press, 'r' release, 't' tick
}

func TestClassifier(t *testing.T) {
	p := func(at time.Duration) step { return step{at, 'p'} }
	r := func(at time.Duration) step { return step{at, 'r'} }
	tick := func(at time.Duration) step { return step{at, 't'} }
	tests := []struct {
		name   string
		window time.Duration
		steps  []step
		want   []Action
	}{
		{"short press", 0, []step{p(0), r(100 * ms), tick(130 * ms)}, []Action{Accept}},
		{"release not settled yet", 0, []step{p(0), r(100 * ms), tick(129 * ms)}, nil},
		{"press shorter than the debounce", 0, []step{p(0), r(29 * ms), tick(time.Second)}, nil},
		{"press of exactly the debounce", 0, []step{p(0), r(30 * ms), tick(time.Second)}, []Action{Accept}},
		{"bounce on the way down and up", 0,
			[]step{p(0), r(3 * ms), p(5 * ms), r(200 * ms), p(210 * ms), r(215 * ms), tick(time.Second)}, []Action{Accept}},
		{"release glitch while held", 0, []step{p(0), r(500 * ms), p(510 * ms), tick(time.Second)}, nil},
		{"long press not yet", 0, []step{p(0), tick(1999 * ms)}, nil},
		{"long press fires while held", 0, []step{p(0), tick(2000 * ms)}, []Action{EndAll}},
		{"long press: release adds nothing", 0, []step{p(0), tick(2000 * ms), r(3 * time.Second), tick(4 * time.Second)}, []Action{EndAll}},
		{"long press seen only at release", 0, []step{p(0), r(2500 * ms), tick(3 * time.Second)}, []Action{EndAll}},
		{"release just before 2 s", 0, []step{p(0), r(1999 * ms), tick(3 * time.Second)}, []Action{Accept}},
		{"a bounce just before 2 s delays the long press", 0, []step{p(0), r(1999 * ms), p(2010 * ms), tick(2039 * ms), tick(3 * time.Second)}, []Action{EndAll}},
		{"bounce while held does not restart the hold", 0, []step{p(0), r(1000 * ms), p(1010 * ms), tick(2000 * ms)}, []Action{EndAll}},
		{"second long press without a window", 0,
			[]step{p(0), tick(2 * time.Second), r(2100 * ms), p(3 * time.Second), tick(5 * time.Second)}, []Action{EndAll, EndAll}},
		{"second long press within the window", 10 * time.Second,
			[]step{p(0), tick(2 * time.Second), r(2100 * ms), p(3 * time.Second), tick(5 * time.Second)}, []Action{EndAll, StopSession}},
		{"second long press after the window", 10 * time.Second,
			[]step{p(0), tick(2 * time.Second), r(2100 * ms), p(11 * time.Second), tick(13 * time.Second)}, []Action{EndAll, EndAll}},
		{"short press between long presses", 10 * time.Second,
			[]step{p(0), tick(2 * time.Second), r(2100 * ms), p(3 * time.Second), r(3100 * ms), p(4 * time.Second), tick(6 * time.Second)},
			[]Action{EndAll, Accept, StopSession}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newClassifier(Options{StopWindow: tc.window}.withDefaults())
			var got []Action
			for _, s := range tc.steps {
				switch s.kind {
				case 'p', 'r':
					got = append(got, c.edge(Edge{Rising: s.kind == 'p', Time: s.at})...)
				case 't':
					// Run ticks at every deadline up to now, as its timer does.
					for d, ok := c.next(); ok && d <= s.at; d, ok = c.next() {
						got = append(got, c.advance(d)...)
					}
					got = append(got, c.advance(s.at)...)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("actions %v, want %v", got, tc.want)
			}
		})
	}
}
