package capture

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
)

// StreamStats are the counters of one stream.
type StreamStats struct {
	// Captured counts the frames (video) or 20 ms chunks (audio) the source
	// handed to the encoder.
	Captured uint64
	// Dropped counts frames lost before encoding: a source that fell
	// behind or lost frames (camera gaps, microphone overruns filled with
	// silence), and frames the encoder skipped (never with this
	// configuration).
	Dropped uint64
	// Encoded counts the frames that left the encoder, and Bytes their size.
	Encoded uint64
	Bytes   uint64
	// Keyframes counts IDR frames (video) or packets (audio).
	Keyframes uint64
}

// Stats are the counters of a Capture.
type Stats struct {
	Video, Audio StreamStats
	// KeyframeRequests counts requests for an IDR frame, and
	// ForcedKeyframes the IDR frames they caused after merging.
	KeyframeRequests uint64
	ForcedKeyframes  uint64
}

// Capture runs the sources and the single encoder of each stream and fans
// the encoded frames out to its subscriptions.
type Capture struct {
	cfg   Config
	log   *slog.Logger
	clk   *clock
	keys  *keyframeLimiter
	hub   *hub
	video *stream
	audio *stream // nil when audio is off

	mu     sync.Mutex
	state  runState
	cancel context.CancelFunc // of the running Run
}

type runState uint8

const (
	idle runState = iota
	running
	finished
)

// Option adjusts a Capture.
type Option func(*Capture)

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option {
	return func(c *Capture) { c.log = l }
}

// openers opens the sources; tests substitute counting or fake ones.
type openers struct {
	video func(cfg Config, clk *clock) (videoSource, error)
	audio func(cfg Config, clk *clock) (audioSource, error)
}

var defaultOpeners = openers{video: openVideoSource, audio: openAudioSource}

func openVideoSource(cfg Config, clk *clock) (videoSource, error) {
	switch cfg.Source {
	case SourceCamera:
		return openCamera(cfg.Device, cfg.Width, cfg.Height, cfg.FPS, clk, openWebcam)
	case SourceImage:
		return newPicturePattern(cfg.Image, cfg.Width, cfg.Height, cfg.FPS, clk)
	}
	return newTestPattern(cfg.Width, cfg.Height, cfg.FPS, clk), nil
}

func openAudioSource(cfg Config, clk *clock) (audioSource, error) {
	if cfg.Source == SourceCamera {
		return openMicrophone(cfg.AudioDevice, cfg.Channels, clk)
	}
	return newTestTone(cfg.Channels, clk), nil
}

// Open validates cfg, opens the sources (a camera or microphone is opened
// and checked now) and creates the encoders. Nothing runs until Run; a
// Capture that is never run must be closed.
func Open(cfg Config, opts ...Option) (*Capture, error) {
	return open(cfg, defaultOpeners, opts...)
}

func open(cfg Config, o openers, opts ...Option) (*Capture, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	c := &Capture{cfg: cfg, clk: &clock{}, keys: &keyframeLimiter{interval: KeyframeMinInterval}}
	for _, opt := range opts {
		opt(c)
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.log = c.log.With("component", "capture")
	c.hub = newHub(c.clk, c.keys)

	vsrc, err := o.video(cfg, c.clk)
	if err != nil {
		return nil, err
	}
	if c.video, err = newVideoStream(cfg, vsrc, c.clk, c.keys); err != nil {
		vsrc.Close()
		return nil, err
	}
	if cfg.Audio {
		asrc, err := o.audio(cfg, c.clk)
		if err != nil {
			c.video.close()
			return nil, err
		}
		if c.audio, err = newAudioStream(cfg, asrc); err != nil {
			asrc.Close()
			c.video.close()
			return nil, err
		}
	}
	return c, nil
}

// Config is the configuration in use, defaults filled in.
func (c *Capture) Config() Config { return c.cfg }

func (c *Capture) streams() []*stream {
	if c.audio == nil {
		return []*stream{c.video}
	}
	return []*stream{c.video, c.audio}
}

// Run starts the recording clock, captures and encodes until ctx is
// cancelled or a source or encoder fails, then closes the sources and
// encoders and ends every subscription after its last frame. It returns
// after all its goroutines exited, which includes lossless subscribers
// reading the rest of their queue. A cancelled ctx is a clean stop (nil).
// Run can be called once.
func (c *Capture) Run(ctx context.Context) error {
	c.mu.Lock()
	if c.state != idle {
		c.mu.Unlock()
		return errors.New("capture: Run called twice or after Close")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c.state, c.cancel = running, cancel
	c.clk.begin()
	c.mu.Unlock()

	c.log.Info("capture started", "source", c.cfg.Source, "size", fmt.Sprintf("%dx%d", c.cfg.Width, c.cfg.Height),
		"fps", c.cfg.FPS, "bitrate", c.cfg.Bitrate, "key_interval", c.cfg.KeyInterval, "audio", c.cfg.Audio)

	streams := c.streams()
	errs := make([]error, len(streams))
	var wg sync.WaitGroup
	wg.Go(func() {
		<-ctx.Done()
		for _, s := range streams {
			s.stop()
		}
	})
	for i, s := range streams {
		wg.Go(func() {
			defer cancel() // one stream failing stops the capture
			errs[i] = s.run(ctx.Done(), c.hub.publish)
		})
	}
	wg.Wait()

	var closeErrs []error
	for _, s := range streams {
		closeErrs = append(closeErrs, s.close())
	}
	c.hub.close()
	c.hub.wait()

	c.mu.Lock()
	c.state = finished
	c.mu.Unlock()

	err := errors.Join(errs...)
	if err != nil {
		c.log.Error("capture failed", "err", err)
		return fmt.Errorf("capture: %w", err)
	}
	if err := errors.Join(closeErrs...); err != nil {
		return fmt.Errorf("capture: close: %w", err)
	}
	st := c.Stats()
	c.log.Info("capture stopped", "video_frames", st.Video.Encoded, "video_dropped", st.Video.Dropped,
		"audio_packets", st.Audio.Encoded, "audio_dropped", st.Audio.Dropped)
	return nil
}

// Close releases the devices and encoders of a Capture that was never
// run, and ends its subscriptions. During Run it makes Run stop, like
// cancelling its context, without waiting: Run returns once lossless
// subscribers have read their last frame, so a subscriber may call Close
// from its read loop. After Run it does nothing.
func (c *Capture) Close() error {
	c.mu.Lock()
	switch c.state {
	case running:
		c.cancel()
		c.mu.Unlock()
		return nil
	case finished:
		c.mu.Unlock()
		return nil
	}
	c.state = finished
	c.mu.Unlock()

	var errs []error
	for _, s := range c.streams() {
		errs = append(errs, s.close())
	}
	c.hub.close()
	c.hub.wait()
	return errors.Join(errs...)
}

// Subscribe adds a consumer of the encoded frames. A subscription made
// after the capture stopped gets a closed channel. See Mode for how slow
// consumers are treated.
func (c *Capture) Subscribe(opts SubscribeOptions) *Subscription {
	return c.hub.subscribe(opts)
}

// RequestKeyframe asks the video encoder for an IDR frame soon, for a
// consumer that joined late. Requests are rate-limited: at most one forced
// IDR per KeyframeMinInterval; a request inside that interval is served at
// its end, or by an IDR that comes anyway.
func (c *Capture) RequestKeyframe() {
	c.keys.request(c.clk.now())
}

// Stats returns the capture's counters; safe to call at any time.
func (c *Capture) Stats() Stats {
	st := Stats{Video: c.video.stats()}
	if c.audio != nil {
		st.Audio = c.audio.stats()
	}
	st.KeyframeRequests, st.ForcedKeyframes = c.keys.counts()
	return st
}
