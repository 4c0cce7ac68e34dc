// Package talkback plays a viewer's voice on the box (talk-back: the
// coach speaks to the teacher). A Player owns the output (a sound card, or
// a WAV file for tests) and writes to it in real time, 20 ms at a time,
// silence when nobody speaks; viewers allowed to speak each get a Voice,
// and at most one of them holds the floor: the first whose packets arrive,
// until FloorIdle passes without a packet from it. Only the floor holder's
// packets are decoded (Opus, see opus.go); the others' are dropped unread.
// A short tone marks the floor being taken and released.
package talkback

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"sync"
	"time"
)

// Timing of the floor and the output.
const (
	// FloorIdle is how long the floor holder may be silent (no packet)
	// before the floor is released.
	FloorIdle = 500 * time.Millisecond
	// Frame is what the Player writes at a time.
	Frame = 20 * time.Millisecond
	// maxQueue bounds the decoded voice waiting to be played (200 ms): a
	// sender faster than the box's clock loses its oldest samples instead
	// of the voice lagging ever more.
	maxQueue = SampleRate / 5
)

// The tone mixed in when the floor is taken and when it is released.
const (
	ToneHz    = 880
	ToneLen   = 150 * time.Millisecond
	toneLevel = 6000
)

// Floor states a Voice reports (Voice.Floor).
const (
	FloorFree  = "free"  // nobody speaks
	FloorYours = "yours" // this voice is played
	FloorTaken = "taken" // another viewer holds the floor; this voice is not played
)

// Options configure a Player.
type Options struct {
	// Opened is called when viewer takes the floor in session (the box
	// starts playing the voice); Closed when the floor is released, why
	// ("silence", "revoked", "viewer left", …) and how long it was held.
	// Both are called outside the Player's lock, in order.
	Opened func(viewer, session string)
	Closed func(viewer, session, reason string, held time.Duration)
	Logger *slog.Logger
}

// Player writes the floor holder's voice to a Sink in real time.
type Player struct {
	sink Sink
	opts Options
	log  *slog.Logger

	hooks sync.Mutex // orders the Opened and Closed calls

	mu     sync.Mutex
	holder *Voice
	since  time.Time // when holder took the floor
	last   time.Time // holder's last packet
	queue  []int16   // holder's decoded voice not yet played
	tone   []int16   // tone samples still to be mixed in
	frame  []int16
	done   bool
}

// NewPlayer plays on sink; Run writes to it.
func NewPlayer(sink Sink, opts Options) *Player {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Player{sink: sink, opts: opts, log: log.With("component", "talkback"), frame: make([]int16, FrameSamples)}
}

// event is an Opened or Closed call to make once the lock is released.
type event struct {
	open            bool
	viewer, session string
	reason          string
	held            time.Duration
}

func (p *Player) fire(evs []event) {
	if len(evs) == 0 {
		return
	}
	p.hooks.Lock()
	defer p.hooks.Unlock()
	for _, e := range evs {
		if e.open {
			p.log.Info("talk-back opened", "viewer", e.viewer, "session", e.session)
			if p.opts.Opened != nil {
				p.opts.Opened(e.viewer, e.session)
			}
			continue
		}
		p.log.Info("talk-back closed", "viewer", e.viewer, "session", e.session, "reason", e.reason, "held", e.held.Round(time.Millisecond))
		if p.opts.Closed != nil {
			p.opts.Closed(e.viewer, e.session, e.reason, e.held)
		}
	}
}

// Run writes a frame to the sink every Frame until ctx ends (catching up
// after a stall, so that a file sink's length stays the time played), then
// releases the floor and closes the sink.
func (p *Player) Run(ctx context.Context) error {
	start := time.Now()
	written := 0
	timer := time.NewTimer(Frame)
	defer timer.Stop()
	var err error
	for err == nil {
		select {
		case <-ctx.Done():
			return p.stop()
		case <-timer.C:
		}
		now := time.Now()
		due := int(now.Sub(start) / Frame)
		for ; written < due && err == nil; written++ {
			err = p.sink.Write(p.next(now))
		}
		timer.Reset(start.Add(time.Duration(written+1) * Frame).Sub(time.Now()))
	}
	p.log.Error("talk-back output failed: no voice is played until the daemon restarts", "err", err)
	return errors.Join(err, p.stop())
}

// stop releases the floor, refuses every voice from now on and closes the
// sink.
func (p *Player) stop() error {
	p.mu.Lock()
	p.done = true
	var evs []event
	if p.holder != nil {
		evs = p.releaseLocked("stopped", time.Now())
	}
	p.mu.Unlock()
	p.fire(evs)
	return p.sink.Close()
}

// next returns the frame to play at now: the holder's voice (or silence)
// with the tone mixed in. It releases a floor silent for FloorIdle.
func (p *Player) next(now time.Time) []int16 {
	p.mu.Lock()
	var evs []event
	if p.holder != nil && now.Sub(p.last) > FloorIdle {
		evs = p.releaseLocked("silence", now)
	}
	n := copy(p.frame, p.queue)
	p.queue = p.queue[n:]
	clear(p.frame[n:])
	m := min(len(p.tone), len(p.frame))
	for i := range m {
		p.frame[i] = clamp16(int(p.frame[i]) + int(p.tone[i]))
	}
	p.tone = p.tone[m:]
	p.mu.Unlock()
	p.fire(evs)
	return p.frame
}

func clamp16(v int) int16 { return int16(max(math.MinInt16, min(math.MaxInt16, v))) }

// releaseLocked ends the holder's turn at once: what is queued of its
// voice is dropped, the closing tone starts.
func (p *Player) releaseLocked(reason string, now time.Time) []event {
	v := p.holder
	p.holder = nil
	p.queue = p.queue[:0]
	p.tone = makeTone()
	if v.dec != nil {
		v.dec.Close()
		v.dec = nil
	}
	return []event{{viewer: v.viewer, session: v.session, reason: reason, held: now.Sub(p.since)}}
}

// makeTone is ToneHz for ToneLen with 5 ms ramps (no clicks).
func makeTone() []int16 {
	n := int(ToneLen * SampleRate / time.Second)
	ramp := SampleRate / 200
	out := make([]int16, n)
	for i := range out {
		g := min(1, float64(i)/float64(ramp), float64(n-1-i)/float64(ramp))
		out[i] = int16(toneLevel * g * math.Sin(2*math.Pi*ToneHz*float64(i)/SampleRate))
	}
	return out
}

// Voice is one viewer session's audio to the box.
type Voice struct {
	p               *Player
	viewer, session string
	dec             *Decoder // while holding the floor
	closed          bool
}

// Speak returns the voice of viewer's session session.
func (p *Player) Speak(viewer, session string) *Voice {
	return &Voice{p: p, viewer: viewer, session: session}
}

// Packet takes one Opus packet of the voice: it is decoded and queued for
// playing if the voice holds the floor or takes it (nobody held it), and
// dropped unread otherwise.
func (v *Voice) Packet(payload []byte) {
	p := v.p
	now := time.Now()
	p.mu.Lock()
	var evs []event
	defer func() {
		p.mu.Unlock()
		p.fire(evs)
	}()
	if v.closed || p.done || len(payload) == 0 {
		return
	}
	if p.holder == nil {
		dec, err := NewDecoder()
		if err != nil {
			p.log.Error("talk-back decoder", "viewer", v.viewer, "err", err)
			return
		}
		v.dec = dec
		p.holder, p.since = v, now
		p.tone = makeTone()
		evs = append(evs, event{open: true, viewer: v.viewer, session: v.session})
	}
	if p.holder != v {
		return
	}
	p.last = now
	pcm, err := v.dec.Decode(payload)
	if err != nil {
		p.log.Debug("talk-back packet dropped", "viewer", v.viewer, "err", err)
		return
	}
	p.queue = append(p.queue, pcm...)
	if over := len(p.queue) - maxQueue; over > 0 {
		p.queue = p.queue[over:]
	}
}

// Close ends the voice; if it holds the floor, its playing stops at once
// (the next frame is silent but for the closing tone). reason is audited.
// It may be called more than once.
func (v *Voice) Close(reason string) {
	p := v.p
	p.mu.Lock()
	var evs []event
	if !v.closed {
		v.closed = true
		if p.holder == v {
			evs = p.releaseLocked(reason, time.Now())
		}
	}
	p.mu.Unlock()
	p.fire(evs)
}

// Floor says whether this voice is played (FloorYours), another is
// (FloorTaken), or nobody speaks (FloorFree).
func (v *Voice) Floor() string {
	p := v.p
	p.mu.Lock()
	defer p.mu.Unlock()
	switch p.holder {
	case nil:
		return FloorFree
	case v:
		return FloorYours
	}
	return FloorTaken
}
