package capture

import (
	"sync"
	"sync/atomic"
	"time"
)

// clock is the recording's monotonic clock: every capture time counts from
// its start, which Run sets before any source is read. Before that it
// reads zero.
type clock struct {
	start atomic.Pointer[time.Time]
}

func (c *clock) begin() {
	now := time.Now()
	c.start.Store(&now)
}

// now is the time since the clock's start.
func (c *clock) now() time.Duration {
	start := c.start.Load()
	if start == nil {
		return 0
	}
	return time.Since(*start)
}

// sleepUntil waits until the clock reads t or done is closed; it reports
// whether t was reached.
func (c *clock) sleepUntil(t time.Duration, done <-chan struct{}) bool {
	d := t - c.now()
	if d <= 0 {
		select {
		case <-done:
			return false
		default:
			return true
		}
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-done:
		return false
	}
}

// stamps carries capture times through an encoder: the reader in front of
// the encoder pushes the time and size of each chunk it hands over, and the
// loop behind the encoder pops the time of the first unit of each packet.
// A video frame is one unit; audio counts samples, so a 20 ms Opus packet
// pops 960 of them whatever the chunking of the source. Only the stream's
// encoder goroutine uses it.
type stamps struct {
	rate int // units per second (audio); 0 for video
	q    []stamp
	off  int // units of q[0] already popped
}

type stamp struct {
	t time.Duration
	n int
}

func (s *stamps) push(t time.Duration, n int) {
	s.q = append(s.q, stamp{t, n})
}

// pop consumes n units and returns the capture time of the first; ok is
// false if fewer than n units were pushed (the encoder emitted more than it
// read, which neither openh264 nor opus do).
func (s *stamps) pop(n int) (t time.Duration, ok bool) {
	if len(s.q) == 0 {
		return 0, false
	}
	t = s.q[0].t
	if s.off > 0 && s.rate > 0 {
		t += time.Duration(s.off) * time.Second / time.Duration(s.rate)
	}
	for n > 0 {
		if len(s.q) == 0 {
			return t, false
		}
		left := s.q[0].n - s.off
		if n < left {
			s.off += n
			return t, true
		}
		n -= left
		s.q[0] = stamp{}
		s.q = s.q[1:]
		s.off = 0
	}
	return t, true
}

// KeyframeMinInterval is the shortest time between two forced IDR frames.
// Requests that come sooner are merged and served when it has passed.
const KeyframeMinInterval = 500 * time.Millisecond

// keyframeLimiter rate-limits forced IDR frames. A request is never lost:
// it is served at once, or when KeyframeMinInterval has passed since the
// last forced IDR, or by the next IDR the encoder emits anyway.
type keyframeLimiter struct {
	mu       sync.Mutex
	interval time.Duration
	last     time.Duration // when the last IDR was forced; valid if forced
	forced   bool
	at       time.Duration // when the pending request was made; valid if pending
	due      time.Duration // when the pending request is served; valid if pending
	pending  bool
	requests uint64
	served   uint64
}

// request asks for an IDR frame at clock time now.
func (k *keyframeLimiter) request(now time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.requests++
	if k.pending {
		return // merged into the pending request
	}
	k.pending = true
	k.at = now
	k.due = now
	if k.forced && k.last+k.interval > now {
		k.due = k.last + k.interval
	}
}

// take reports whether the frame about to be encoded at clock time now
// must be forced to IDR, and records it if so.
func (k *keyframeLimiter) take(now time.Duration) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.pending || now < k.due {
		return false
	}
	k.pending = false
	k.forced = true
	k.last = now
	k.served++
	return true
}

// idr tells the limiter that the encoder emitted an IDR frame that was
// read at clock time t: a request made before it is served by it.
func (k *keyframeLimiter) idr(t time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.pending && t >= k.at {
		k.pending = false
	}
}

func (k *keyframeLimiter) counts() (requests, served uint64) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.requests, k.served
}
