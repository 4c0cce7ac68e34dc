package capture

import (
	"testing"
	"testing/synctest"
	"time"
)

func TestStamps(t *testing.T) {
	type push struct {
		t time.Duration
		n int
	}
	tests := []struct {
		name  string
		rate  int
		push  []push
		pop   int
		want  []time.Duration
		short bool // the last pop runs out
	}{
		{"video frames", 0, []push{{0, 1}, {33 * time.Millisecond, 1}, {66 * time.Millisecond, 1}}, 1,
			[]time.Duration{0, 33 * time.Millisecond, 66 * time.Millisecond}, false},
		{"audio chunks match packets", SampleRate, []push{{0, 960}, {20 * time.Millisecond, 960}}, 960,
			[]time.Duration{0, 20 * time.Millisecond}, false},
		{"audio chunks of 10 ms", SampleRate, []push{{0, 480}, {10 * time.Millisecond, 480}, {20 * time.Millisecond, 480}, {30 * time.Millisecond, 480}}, 960,
			[]time.Duration{0, 20 * time.Millisecond}, false},
		{"audio chunks of 30 ms", SampleRate, []push{{0, 1440}, {30 * time.Millisecond, 1440}}, 960,
			[]time.Duration{0, 20 * time.Millisecond, 40 * time.Millisecond}, false},
		{"chunk times win over counting", SampleRate, []push{{0, 1440}, {35 * time.Millisecond, 1440}}, 960,
			[]time.Duration{0, 20 * time.Millisecond, 45 * time.Millisecond}, false},
		{"runs out", 0, []push{{0, 1}}, 1, []time.Duration{0, 0}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &stamps{rate: tt.rate}
			for _, p := range tt.push {
				s.push(p.t, p.n)
			}
			for i, want := range tt.want {
				got, ok := s.pop(tt.pop)
				last := i == len(tt.want)-1
				if ok == (last && tt.short) {
					t.Fatalf("pop %d: ok = %v", i, ok)
				}
				if ok && got != want {
					t.Errorf("pop %d = %v, want %v", i, got, want)
				}
			}
		})
	}
}

func TestKeyframeLimiter(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	type step struct {
		at      time.Duration
		request bool // request at `at`; otherwise a frame is read at `at`
		idr     bool // the frame read at `at` came out as IDR anyway
		want    bool // the frame read is forced
	}
	tests := []struct {
		name  string
		steps []step
		// requests and forced IDRs at the end
		requests, served uint64
	}{
		{"no request", []step{{at: 0}, {at: ms(100)}}, 0, 0},
		{"request served by the next frame", []step{{at: ms(50), request: true}, {at: ms(100), want: true}, {at: ms(200)}}, 1, 1},
		{"burst merged", []step{{at: ms(50), request: true}, {at: ms(51), request: true}, {at: ms(52), request: true},
			{at: ms(100), want: true}, {at: ms(200)}}, 3, 1},
		{"second request waits for the interval", []step{{at: ms(50), request: true}, {at: ms(100), want: true},
			{at: ms(150), request: true}, {at: ms(200)}, {at: ms(500)}, {at: ms(600), want: true}, {at: ms(700)}}, 2, 2},
		{"request after the interval served at once", []step{{at: ms(50), request: true}, {at: ms(100), want: true},
			{at: ms(700), request: true}, {at: ms(800), want: true}}, 2, 2},
		{"natural IDR serves a waiting request", []step{{at: ms(50), request: true}, {at: ms(100), want: true},
			{at: ms(150), request: true}, {at: ms(300), idr: true}, {at: ms(600)}, {at: ms(700)}}, 2, 1},
		{"IDR read before the request does not serve it", []step{{at: ms(50), request: true}, {at: ms(100), want: true},
			{at: ms(200), request: true}, {at: ms(150), idr: true}, {at: ms(600), want: true}}, 2, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := &keyframeLimiter{interval: KeyframeMinInterval}
			for i, s := range tt.steps {
				if s.request {
					k.request(s.at)
					continue
				}
				if s.idr {
					k.idr(s.at)
					continue
				}
				if got := k.take(s.at); got != s.want {
					t.Errorf("step %d (frame at %v): forced = %v, want %v", i, s.at, got, s.want)
				}
			}
			if r, s := k.counts(); r != tt.requests || s != tt.served {
				t.Errorf("counts = %d requests, %d forced; want %d, %d", r, s, tt.requests, tt.served)
			}
		})
	}
}

func TestClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var c clock
		if c.now() != 0 {
			t.Fatalf("unstarted clock reads %v", c.now())
		}
		c.begin()
		time.Sleep(1500 * time.Millisecond)
		if c.now() != 1500*time.Millisecond {
			t.Fatalf("now = %v", c.now())
		}
		done := make(chan struct{})
		if !c.sleepUntil(2*time.Second, done) || c.now() != 2*time.Second {
			t.Fatalf("sleepUntil returned at %v", c.now())
		}
		if !c.sleepUntil(time.Second, done) || c.now() != 2*time.Second {
			t.Fatal("sleepUntil a past time waited")
		}
		go func() {
			time.Sleep(100 * time.Millisecond)
			close(done)
		}()
		if c.sleepUntil(time.Hour, done) {
			t.Fatal("sleepUntil ignored done")
		}
		if c.now() != 2100*time.Millisecond {
			t.Fatalf("sleepUntil returned at %v, want 2.1s", c.now())
		}
		if c.sleepUntil(0, done) {
			t.Fatal("sleepUntil ignored a closed done")
		}
	})
}
