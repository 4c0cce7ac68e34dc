package capture

import (
	"sync"
	"sync/atomic"
)

// Mode is how a subscription copes with a consumer slower than capture.
type Mode uint8

const (
	// Lossless never drops a frame: the queue grows without bound while
	// the consumer lags (the recorder). A lossless consumer must read its
	// channel until it is closed, or Unsubscribe: Run waits for it.
	Lossless Mode = iota
	// Live keeps a bounded queue. When it is full, frames are dropped until
	// the next video keyframe, which the consumer can decode from (a live
	// viewer). A live subscription starts at the first keyframe after it
	// joined and asks the encoder for one.
	Live
)

func (m Mode) String() string {
	switch m {
	case Lossless:
		return "lossless"
	case Live:
		return "live"
	default:
		return "unknown"
	}
}

// DefaultLiveQueue is the queue length of a live subscription, in frames
// of either kind (about a second of 30 fps video with audio).
const DefaultLiveQueue = 80

// SubscribeOptions configures a subscription; the zero value is lossless.
type SubscribeOptions struct {
	Mode Mode
	// Queue is the length of a live subscription's queue in frames; zero
	// is DefaultLiveQueue. Lossless queues are unbounded.
	Queue int
}

// SubscriptionStats are a subscription's counters.
type SubscriptionStats struct {
	Delivered uint64 // frames handed to the consumer's channel
	Dropped   uint64 // live: frames dropped because the consumer fell behind
	// QueuedFrames and QueuedBytes are the frames waiting for the consumer
	// (lossless: the unbounded queue; live: the channel's buffer, whose
	// bytes are not counted).
	QueuedFrames int
	QueuedBytes  int64
}

// Subscription receives the frames of every stream of a Capture, each
// stream in order; frames of different streams interleave in about the
// order they were encoded. Every subscriber sees the same interleaving.
type Subscription struct {
	hub    *hub
	mode   Mode
	ch     chan Frame
	frames <-chan Frame

	dropped   atomic.Uint64
	delivered atomic.Uint64

	// Live state, guarded by hub.mu.
	waitKey  bool // skipping frames until a video keyframe
	dropping bool // ... because the consumer fell behind (count them)

	// Lossless state.
	mu     sync.Mutex
	queue  []Frame
	bytes  int64
	ended  bool          // capture finished: drain, then close
	notify chan struct{} // a frame was queued or the capture ended
	quit   chan struct{} // Unsubscribe
	exited chan struct{} // the forwarder returned
	once   sync.Once
}

// Frames is the subscription's channel. It is closed after the last frame
// when the capture stops, or by Unsubscribe.
func (s *Subscription) Frames() <-chan Frame { return s.frames }

// Mode is the subscription's mode.
func (s *Subscription) Mode() Mode { return s.mode }

// RequestKeyframe asks the video encoder for an IDR frame soon; requests
// are rate-limited (KeyframeMinInterval) but never lost.
func (s *Subscription) RequestKeyframe() {
	if s.hub.keys != nil {
		s.hub.keys.request(s.hub.clk.now())
	}
}

// Unsubscribe stops the subscription: queued frames are discarded and the
// channel is closed when Unsubscribe returns. It is safe to call more than
// once and after the capture stopped.
func (s *Subscription) Unsubscribe() {
	s.hub.unsubscribe(s)
	if s.mode == Lossless {
		s.once.Do(func() { close(s.quit) })
		<-s.exited
	}
}

// Stats returns the subscription's counters.
func (s *Subscription) Stats() SubscriptionStats {
	st := SubscriptionStats{Delivered: s.delivered.Load(), Dropped: s.dropped.Load()}
	if s.mode == Lossless {
		s.mu.Lock()
		st.QueuedFrames, st.QueuedBytes = len(s.queue), s.bytes
		s.mu.Unlock()
	} else {
		st.QueuedFrames = len(s.ch)
	}
	return st
}

// hub fans the frames of the encoders out to the subscriptions. publish
// never blocks: a lossless subscription queues without bound and has its
// own forwarding goroutine; a live one has a bounded channel it drops
// from.
type hub struct {
	clk  *clock
	keys *keyframeLimiter // nil: no video stream to ask

	mu     sync.Mutex
	subs   map[*Subscription]struct{}
	closed bool
	wg     sync.WaitGroup // lossless forwarders
}

func newHub(clk *clock, keys *keyframeLimiter) *hub {
	return &hub{clk: clk, keys: keys, subs: make(map[*Subscription]struct{})}
}

func (h *hub) subscribe(opts SubscribeOptions) *Subscription {
	s := &Subscription{hub: h, mode: opts.Mode}
	h.mu.Lock()
	defer h.mu.Unlock()
	switch opts.Mode {
	case Live:
		q := opts.Queue
		if q <= 0 {
			q = DefaultLiveQueue
		}
		s.ch = make(chan Frame, q)
		s.frames = s.ch
		s.waitKey = true
		if h.closed {
			close(s.ch)
			return s
		}
	default:
		s.mode = Lossless
		out := make(chan Frame)
		s.frames = out
		s.notify = make(chan struct{}, 1)
		s.quit = make(chan struct{})
		s.exited = make(chan struct{})
		if h.closed {
			close(out)
			close(s.exited)
			return s
		}
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			defer close(s.exited)
			defer close(out)
			s.forward(out)
		}()
	}
	h.subs[s] = struct{}{}
	if s.mode == Live && h.keys != nil {
		h.keys.request(h.clk.now())
	}
	return s
}

func (h *hub) unsubscribe(s *Subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[s]; !ok {
		return
	}
	delete(h.subs, s)
	if s.mode == Live {
		close(s.ch)
	}
}

// publish hands f to every subscription without blocking.
func (h *hub) publish(f Frame) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		if s.mode == Live {
			s.offerLive(f)
		} else {
			s.enqueue(f)
		}
	}
}

// close ends every subscription after the frames already published:
// live channels close now (their buffer still holds the last frames), and
// lossless forwarders close theirs once their queue is drained. wait
// waits for the forwarders.
func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return
	}
	h.closed = true
	for s := range h.subs {
		delete(h.subs, s)
		if s.mode == Live {
			close(s.ch)
			continue
		}
		s.mu.Lock()
		s.ended = true
		s.mu.Unlock()
		s.signal()
	}
}

func (h *hub) wait() { h.wg.Wait() }

// offerLive is publish for a live subscription; hub.mu is held.
func (s *Subscription) offerLive(f Frame) {
	if s.waitKey {
		if f.Kind != Video || !f.Key {
			if s.dropping {
				s.dropped.Add(1)
			}
			return
		}
		s.waitKey, s.dropping = false, false
	}
	select {
	case s.ch <- f:
		s.delivered.Add(1)
	default:
		s.dropped.Add(1)
		s.waitKey, s.dropping = true, true
	}
}

// enqueue is publish for a lossless subscription.
func (s *Subscription) enqueue(f Frame) {
	s.mu.Lock()
	s.queue = append(s.queue, f)
	s.bytes += int64(len(f.Data))
	s.mu.Unlock()
	s.signal()
}

func (s *Subscription) signal() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// forward moves queued frames to out until the capture ended and the
// queue is empty, or the subscription is cancelled.
func (s *Subscription) forward(out chan<- Frame) {
	for {
		s.mu.Lock()
		if len(s.queue) == 0 {
			ended := s.ended
			s.queue = nil // let a grown backing array go
			s.mu.Unlock()
			if ended {
				return
			}
			select {
			case <-s.notify:
				continue
			case <-s.quit:
				return
			}
		}
		// The head stays queued (and counted) until the consumer took it.
		f := s.queue[0]
		s.mu.Unlock()
		select {
		case out <- f:
			s.delivered.Add(1)
			s.mu.Lock()
			s.queue[0] = Frame{}
			s.queue = s.queue[1:]
			s.bytes -= int64(len(f.Data))
			s.mu.Unlock()
		case <-s.quit:
			s.mu.Lock()
			s.queue, s.bytes = nil, 0
			s.mu.Unlock()
			return
		}
	}
}
