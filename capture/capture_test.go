package capture

import (
	"context"
	"errors"
	"image"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/uploadbox/uploadbox/capture/internal/annexb"
)

// run starts c.Run and returns a function that stops it and returns its
// error.
func run(t *testing.T, c *Capture) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	return func() error {
		cancel()
		return <-errc
	}
}

// collect reads a subscription until its channel closes.
func collect(s *Subscription) <-chan []Frame {
	out := make(chan []Frame, 1)
	go func() {
		var fs []Frame
		for f := range s.Frames() {
			fs = append(fs, f)
		}
		out <- fs
	}()
	return out
}

func split(fs []Frame) (video, audio []Frame) {
	for _, f := range fs {
		if f.Kind == Video {
			video = append(video, f)
		} else {
			audio = append(audio, f)
		}
	}
	return video, audio
}

// checkVideo checks what every video frame must be: one Annex-B access
// unit, IDRs with SPS and PPS in front, increasing times and the nominal
// duration.
func checkVideo(t *testing.T, video []Frame, fps int) {
	t.Helper()
	if len(video) == 0 {
		t.Fatal("no video frames")
	}
	if !video[0].Key {
		t.Errorf("first video frame is not an IDR: NAL types %v", annexb.Types(video[0].Data))
	}
	for i, f := range video {
		if !annexb.HasStartCode(f.Data) {
			t.Fatalf("video frame %d is not Annex-B: % x", i, f.Data[:min(8, len(f.Data))])
		}
		types := annexb.Types(f.Data)
		if f.Key != slices.Contains(types, annexb.TypeIDR) {
			t.Errorf("video frame %d: Key %v with NAL types %v", i, f.Key, types)
		}
		if f.Key && (len(types) < 3 || types[0] != annexb.TypeSPS || types[1] != annexb.TypePPS) {
			t.Errorf("IDR frame %d has NAL types %v, want SPS, PPS, IDR...", i, types)
		}
		if f.Duration != time.Second/time.Duration(fps) {
			t.Errorf("video frame %d: duration %v", i, f.Duration)
		}
		if i > 0 && f.Time <= video[i-1].Time {
			t.Fatalf("video frame %d at %v, not after %v", i, f.Time, video[i-1].Time)
		}
	}
}

func checkAudio(t *testing.T, audio []Frame) {
	t.Helper()
	for i, f := range audio {
		if !f.Key || f.Duration != AudioPacket || len(f.Data) == 0 || f.Kind != Audio {
			t.Fatalf("audio frame %d: %+v", i, f)
		}
		if i > 0 && f.Time != audio[i-1].Time+AudioPacket {
			t.Fatalf("audio frame %d at %v, want %v", i, f.Time, audio[i-1].Time+AudioPacket)
		}
	}
}

func keyTimes(video []Frame) []time.Duration {
	var ts []time.Duration
	for _, f := range video {
		if f.Key {
			ts = append(ts, f.Time)
		}
	}
	return ts
}

// TestCaptureRealTime runs the test pattern and tone through the real
// encoders on the real clock for 3 s at 640x360, 15 fps, with a recorder
// (lossless) and a live viewer that never reads: nothing is skipped, the
// recorder gets every frame, and the stalled viewer blocks nothing.
func TestCaptureRealTime(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for 3 s of real time; skipped under -short")
	}
	const (
		fps = 15
		d   = 3 * time.Second
	)
	c, err := Open(Config{Source: SourceTest, Width: 640, Height: 360, FPS: fps, KeyInterval: time.Second, Audio: true})
	if err != nil {
		t.Fatal(err)
	}
	rec := collect(c.Subscribe(SubscribeOptions{}))
	stalled := c.Subscribe(SubscribeOptions{Mode: Live, Queue: 8})
	stop := run(t, c)
	time.Sleep(d)
	if err := stop(); err != nil {
		t.Fatalf("Run = %v", err)
	}
	frames := <-rec
	video, audio := split(frames)
	st := c.Stats()
	t.Logf("%d video frames (%d bytes, %d IDR), %d audio packets in %v; stats %+v; live %+v",
		len(video), st.Video.Bytes, st.Video.Keyframes, len(audio), d, st, stalled.Stats())

	checkVideo(t, video, fps)
	checkAudio(t, audio)
	// fps × d frames, give or take the frames in flight at the start and stop.
	if want := int(fps * d / time.Second); len(video) < want-2 || len(video) > want+1 {
		t.Errorf("%d video frames in %v at %d fps, want %d ± 2", len(video), d, fps, want)
	}
	if want := int(d / AudioPacket); len(audio) < want-3 || len(audio) > want+1 {
		t.Errorf("%d audio packets in %v, want %d (50/s) ± 3", len(audio), d, want)
	}
	if st.Video.Dropped != 0 || st.Audio.Dropped != 0 {
		t.Errorf("dropped frames: video %d, audio %d", st.Video.Dropped, st.Audio.Dropped)
	}
	if st.Video.Captured != st.Video.Encoded || st.Audio.Captured != st.Audio.Encoded {
		t.Errorf("captured %d/%d but encoded %d/%d", st.Video.Captured, st.Audio.Captured, st.Video.Encoded, st.Audio.Encoded)
	}
	if uint64(len(video)) != st.Video.Encoded || uint64(len(audio)) != st.Audio.Encoded {
		t.Errorf("recorder got %d+%d frames, encoders made %d+%d", len(video), len(audio), st.Video.Encoded, st.Audio.Encoded)
	}
	// An IDR every second (15 frames), from the first frame.
	for i, f := range video {
		if f.Key != (i%fps == 0) {
			t.Errorf("video frame %d: Key = %v with a 15-frame IDR period", i, f.Key)
		}
	}
	// 2.5 Mbit/s is the default; the stream must not be starved at
	// openh264's own default of 100 kbit/s.
	if bps := float64(st.Video.Bytes*8) / d.Seconds(); bps < 500_000 {
		t.Errorf("video at %.0f bit/s: the bitrate setting was not applied", bps)
	}
	ls := stalled.Stats()
	if ls.Delivered != 8 || ls.Dropped == 0 {
		t.Errorf("stalled live subscriber: %+v, want 8 delivered and the rest dropped", ls)
	}
	var got []Frame
	for f := range stalled.Frames() {
		got = append(got, f)
	}
	if len(got) != 8 || !got[0].Key {
		t.Errorf("stalled live subscriber holds %d frames, first key %v", len(got), len(got) > 0 && got[0].Key)
	}
}

// TestKeyframes checks IDR placement on the synctest clock, with the real
// encoder: at the configured interval, and on request, rate-limited.
func TestKeyframes(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	tests := []struct {
		name     string
		requests []time.Duration
		want     []time.Duration // IDR times in the first 4 s (40 frames)
	}{
		// A forced IDR restarts openh264's IDR period.
		{"interval only", nil, []time.Duration{0, ms(2000)}},
		{"one request", []time.Duration{ms(1050)}, []time.Duration{0, ms(1100), ms(3100)}},
		{"burst merged", []time.Duration{ms(1050), ms(1051), ms(1060), ms(1070)}, []time.Duration{0, ms(1100), ms(3100)}},
		{"second request waits 500 ms", []time.Duration{ms(550), ms(650)}, []time.Duration{0, ms(600), ms(1100), ms(3100)}},
		{"request served by the interval IDR", []time.Duration{ms(1950)}, []time.Duration{0, ms(2000)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const fps = 10
				c, err := Open(Config{Source: SourceTest, Width: 320, Height: 180, FPS: fps, KeyInterval: 2 * time.Second})
				if err != nil {
					t.Fatal(err)
				}
				rec := collect(c.Subscribe(SubscribeOptions{}))
				stop := run(t, c)
				start := time.Now()
				for _, at := range tt.requests {
					time.Sleep(at - time.Since(start))
					c.RequestKeyframe()
				}
				time.Sleep(ms(3950) - time.Since(start))
				if err := stop(); err != nil {
					t.Fatal(err)
				}
				video, _ := split(<-rec)
				checkVideo(t, video, fps)
				if len(video) != 40 {
					t.Errorf("%d frames in 4 s at 10 fps, want 40", len(video))
				}
				if got := keyTimes(video); !slices.Equal(got, tt.want) {
					t.Errorf("IDR frames at %v, want %v", got, tt.want)
				}
				st := c.Stats()
				if st.KeyframeRequests != uint64(len(tt.requests)) {
					t.Errorf("%d requests counted, want %d", st.KeyframeRequests, len(tt.requests))
				}
			})
		})
	}
}

// TestKeyframesAfterForced: after a forced IDR the encoder keeps an IDR
// at most KeyInterval apart, so segments can still be cut in time.
func TestKeyframesAfterForced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const fps = 10
		c, err := Open(Config{Source: SourceTest, Width: 320, Height: 180, FPS: fps, KeyInterval: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		rec := collect(c.Subscribe(SubscribeOptions{}))
		stop := run(t, c)
		time.Sleep(1350 * time.Millisecond)
		c.RequestKeyframe()
		time.Sleep(3 * time.Second)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		video, _ := split(<-rec)
		keys := keyTimes(video)
		t.Logf("IDR frames at %v", keys)
		if !slices.Contains(keys, 1400*time.Millisecond) {
			t.Errorf("no IDR at 1.4 s after the request at 1.35 s: %v", keys)
		}
		for i := 1; i < len(keys); i++ {
			if keys[i]-keys[i-1] > time.Second {
				t.Errorf("IDR frames %v apart: %v", keys[i]-keys[i-1], keys)
			}
		}
	})
}

// TestCaptureSynctest runs a whole capture on the synctest clock: exact
// frame counts and times, and the fan-out with a live viewer that stalls
// and then reads again from a keyframe.
func TestCaptureSynctest(t *testing.T) {
	tests := []struct {
		name     string
		fps      int
		channels int
	}{
		{"15 fps mono", 15, 1},
		{"30 fps stereo", 30, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const d = 3 * time.Second
				c, err := Open(Config{Source: SourceTest, Width: 320, Height: 180, FPS: tt.fps, KeyInterval: time.Second,
					Audio: true, Channels: tt.channels})
				if err != nil {
					t.Fatal(err)
				}
				rec := collect(c.Subscribe(SubscribeOptions{}))
				live := c.Subscribe(SubscribeOptions{Mode: Live, Queue: 10})
				stop := run(t, c)

				time.Sleep(1500 * time.Millisecond) // the viewer stalls
				synctest.Wait()
				if st := live.Stats(); st.QueuedFrames != 10 || st.Dropped == 0 {
					t.Fatalf("stalled viewer: %+v, want a full queue and drops", st)
				}
				stalled := drain(live.Frames(), 10)
				resumed := make(chan []Frame, 1)
				go func() {
					var fs []Frame
					for f := range live.Frames() {
						fs = append(fs, f)
					}
					resumed <- fs
				}()
				time.Sleep(d - 1500*time.Millisecond - time.Millisecond)
				if err := stop(); err != nil {
					t.Fatal(err)
				}
				video, audio := split(<-rec)
				checkVideo(t, video, tt.fps)
				checkAudio(t, audio)
				if want := tt.fps * 3; len(video) != want {
					t.Errorf("%d video frames, want %d", len(video), want)
				}
				if len(audio) != 149 { // the packet ending at 3 s is not complete before the stop
					t.Errorf("%d audio packets, want 149", len(audio))
				}
				for i, f := range video {
					if want := time.Duration(i) * time.Second / time.Duration(tt.fps); f.Time != want {
						t.Fatalf("video frame %d at %v, want %v", i, f.Time, want)
					}
				}
				if audio[0].Time != 0 {
					t.Errorf("first audio packet at %v", audio[0].Time)
				}

				if !stalled[0].Key {
					t.Error("the live viewer did not start at a keyframe")
				}
				after := <-resumed
				if len(after) == 0 || after[0].Kind != Video || !after[0].Key {
					t.Fatalf("the live viewer resumed with %d frames, first %+v; want a keyframe first", len(after), after[:min(1, len(after))])
				}
				if after[0].Time <= stalled[len(stalled)-1].Time {
					t.Errorf("resumed at %v, before the stall at %v", after[0].Time, stalled[len(stalled)-1].Time)
				}
				lst := live.Stats()
				if total := lst.Delivered + lst.Dropped; total > uint64(len(video)+len(audio)) || lst.Dropped == 0 {
					t.Errorf("live stats %+v for %d frames", lst, len(video)+len(audio))
				}
			})
		})
	}
}

// countingOpeners wraps the real openers and counts what was opened and
// closed.
type countingOpeners struct {
	video, audio, closed atomic.Int32
	audioErr             error
}

func (o *countingOpeners) openers() openers {
	return openers{
		video: func(cfg Config, clk *clock) (videoSource, error) {
			o.video.Add(1)
			src, err := openVideoSource(cfg, clk)
			if err != nil {
				return nil, err
			}
			return &countedVideo{videoSource: src, closed: &o.closed}, nil
		},
		audio: func(cfg Config, clk *clock) (audioSource, error) {
			o.audio.Add(1)
			if o.audioErr != nil {
				return nil, o.audioErr
			}
			src, err := openAudioSource(cfg, clk)
			if err != nil {
				return nil, err
			}
			return &countedAudio{audioSource: src, closed: &o.closed}, nil
		},
	}
}

// countedVideo and countedAudio count sources closed (at least once).
type countedVideo struct {
	videoSource
	closed *atomic.Int32
	once   sync.Once
}

func (c *countedVideo) Close() error {
	c.once.Do(func() { c.closed.Add(1) })
	return c.videoSource.Close()
}

type countedAudio struct {
	audioSource
	closed *atomic.Int32
	once   sync.Once
}

func (c *countedAudio) Close() error {
	c.once.Do(func() { c.closed.Add(1) })
	return c.audioSource.Close()
}

// TestAudioSwitch: with Audio false no audio source is opened at all, and
// no audio frame is made.
func TestAudioSwitch(t *testing.T) {
	for _, audio := range []bool{false, true} {
		t.Run(map[bool]string{false: "off", true: "on"}[audio], func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var o countingOpeners
				c, err := open(Config{Source: SourceTest, Width: 160, Height: 90, FPS: 10, Audio: audio}, o.openers())
				if err != nil {
					t.Fatal(err)
				}
				wantAudio := map[bool]int32{false: 0, true: 1}[audio]
				if o.video.Load() != 1 || o.audio.Load() != wantAudio {
					t.Fatalf("opened %d video and %d audio sources, want 1 and %d", o.video.Load(), o.audio.Load(), wantAudio)
				}
				rec := collect(c.Subscribe(SubscribeOptions{}))
				stop := run(t, c)
				time.Sleep(990 * time.Millisecond) // not on a frame's due time
				if err := stop(); err != nil {
					t.Fatal(err)
				}
				video, audioFrames := split(<-rec)
				if len(video) != 10 || (len(audioFrames) > 0) != audio {
					t.Errorf("%d video and %d audio frames with audio %v", len(video), len(audioFrames), audio)
				}
				if st := c.Stats(); (st.Audio.Encoded > 0) != audio {
					t.Errorf("audio stats %+v with audio %v", st.Audio, audio)
				}
				if o.closed.Load() != 1+wantAudio {
					t.Errorf("closed %d sources, want %d", o.closed.Load(), 1+wantAudio)
				}
			})
		})
	}
}

// TestLifecycle: Open failures release what was opened; Close without Run
// releases the sources; Run cannot be called twice; a subscription after
// the end is closed.
func TestLifecycle(t *testing.T) {
	t.Run("invalid config", func(t *testing.T) {
		var o countingOpeners
		_, err := open(Config{Source: "tv", Width: 7, Bitrate: -1}, o.openers())
		for _, field := range []string{"source", "width", "bitrate"} {
			if err == nil || !strings.Contains(err.Error(), field+":") {
				t.Errorf("error %v does not name %s", err, field)
			}
		}
		if o.video.Load() != 0 {
			t.Error("a source was opened for an invalid config")
		}
	})
	t.Run("audio source fails", func(t *testing.T) {
		o := countingOpeners{audioErr: errors.New("no tone today")}
		_, err := open(Config{Source: SourceTest, Width: 160, Height: 90, Audio: true}, o.openers())
		if err == nil || err.Error() != "no tone today" {
			t.Fatalf("open = %v", err)
		}
		if o.closed.Load() != 1 {
			t.Errorf("video source closed %d times after the audio source failed, want 1", o.closed.Load())
		}
	})
	t.Run("close without run", func(t *testing.T) {
		var o countingOpeners
		c, err := open(Config{Source: SourceTest, Width: 160, Height: 90, Audio: true}, o.openers())
		if err != nil {
			t.Fatal(err)
		}
		sub := c.Subscribe(SubscribeOptions{})
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		if o.closed.Load() != 2 {
			t.Errorf("closed %d sources, want 2", o.closed.Load())
		}
		if _, ok := <-sub.Frames(); ok {
			t.Error("subscription open after Close")
		}
		if err := c.Run(t.Context()); err == nil {
			t.Error("Run after Close succeeded")
		}
		if err := c.Close(); err != nil {
			t.Errorf("second Close = %v", err)
		}
	})
	t.Run("run twice, close during run", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c, err := Open(Config{Source: SourceTest, Width: 160, Height: 90, FPS: 10})
			if err != nil {
				t.Fatal(err)
			}
			rec := collect(c.Subscribe(SubscribeOptions{}))
			errc := make(chan error, 1)
			go func() { errc <- c.Run(t.Context()) }()
			time.Sleep(450 * time.Millisecond)
			if err := c.Run(t.Context()); err == nil {
				t.Error("second Run succeeded")
			}
			if err := c.Close(); err != nil {
				t.Errorf("Close during Run = %v", err)
			}
			if err := <-errc; err != nil {
				t.Errorf("Run = %v after Close", err)
			}
			if video, _ := split(<-rec); len(video) != 5 {
				t.Errorf("%d frames in 450 ms at 10 fps, want 5", len(video))
			}
			if _, ok := <-c.Subscribe(SubscribeOptions{Mode: Live}).Frames(); ok {
				t.Error("subscription after the end is open")
			}
		})
	})
	t.Run("close from a lossless consumer", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c, err := Open(Config{Source: SourceTest, Width: 160, Height: 90, FPS: 10, Audio: true})
			if err != nil {
				t.Fatal(err)
			}
			sub := c.Subscribe(SubscribeOptions{})
			errc := make(chan error, 1)
			go func() { errc <- c.Run(t.Context()) }()
			n := 0
			for range sub.Frames() {
				if n++; n == 20 {
					c.Close() // must not wait for this loop
				}
			}
			if err := <-errc; err != nil {
				t.Errorf("Run = %v", err)
			}
		})
	})
	t.Run("source fails", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			o := openers{
				video: func(cfg Config, clk *clock) (videoSource, error) {
					src, err := openVideoSource(cfg, clk)
					return &failingVideo{videoSource: src, after: 7}, err
				},
				audio: openAudioSource,
			}
			c, err := open(Config{Source: SourceTest, Width: 160, Height: 90, FPS: 10, Audio: true}, o)
			if err != nil {
				t.Fatal(err)
			}
			rec := collect(c.Subscribe(SubscribeOptions{}))
			live := collect(c.Subscribe(SubscribeOptions{Mode: Live}))
			err = c.Run(t.Context())
			if err == nil || !strings.Contains(err.Error(), "video: camera unplugged") {
				t.Fatalf("Run = %v, want the source's error", err)
			}
			video, audio := split(<-rec)
			if len(video) != 7 || len(audio) == 0 {
				t.Errorf("recorder got %d video and %d audio frames before the failure", len(video), len(audio))
			}
			<-live
		})
	})
	t.Run("parent context", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			c, err := Open(Config{Source: SourceTest, Width: 160, Height: 90, FPS: 10, Audio: true})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 1950*time.Millisecond)
			defer cancel()
			if err := c.Run(ctx); err != nil {
				t.Errorf("Run = %v when its context ended", err)
			}
			if st := c.Stats(); st.Video.Encoded != 20 {
				t.Errorf("%d frames in 1.95 s, want 20", st.Video.Encoded)
			}
		})
	})
}

// failingVideo fails after a number of frames, as an unplugged camera.
type failingVideo struct {
	videoSource
	after int
}

func (f *failingVideo) Read() (image.Image, func(), error) {
	if f.after == 0 {
		return nil, func() {}, errors.New("camera unplugged")
	}
	f.after--
	return f.videoSource.Read()
}

// TestLosslessSlowConsumer: a recorder far slower than capture for a while
// loses nothing and receives the frames in order; its queue is visible.
func TestLosslessSlowConsumer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, err := Open(Config{Source: SourceTest, Width: 160, Height: 90, FPS: 30, Audio: true})
		if err != nil {
			t.Fatal(err)
		}
		sub := c.Subscribe(SubscribeOptions{})
		stop := run(t, c)
		var got []Frame
		maxQueued := 0
		for f := range sub.Frames() {
			got = append(got, f)
			maxQueued = max(maxQueued, sub.Stats().QueuedFrames)
			if len(got) < 50 {
				time.Sleep(100 * time.Millisecond) // a slow disk
			}
			if len(got) == 50 {
				go stop()
			}
		}
		st := c.Stats()
		if uint64(len(got)) != st.Video.Encoded+st.Audio.Encoded {
			t.Fatalf("got %d frames, encoders made %d", len(got), st.Video.Encoded+st.Audio.Encoded)
		}
		if maxQueued < 100 {
			t.Errorf("queue peaked at %d frames while the consumer lagged", maxQueued)
		}
		video, audio := split(got)
		checkVideo(t, video, 30)
		checkAudio(t, audio)
		if ss := sub.Stats(); ss.QueuedFrames != 0 || ss.QueuedBytes != 0 || ss.Dropped != 0 {
			t.Errorf("after the end: %+v", ss)
		}
	})
}

func TestEncodeOnly(t *testing.T) {
	cfg := Config{Source: SourceTest, Width: 320, Height: 180, FPS: 15, Audio: true}
	n, err := EncodeOnly(t.Context(), cfg, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// 15 video frames and 50 audio packets, less what is in flight.
	if n < 55 || n > 66 {
		t.Errorf("EncodeOnly encoded %d frames in 1 s, want about 65", n)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := EncodeOnly(ctx, cfg, time.Second); !errors.Is(err, context.Canceled) {
		t.Errorf("EncodeOnly with a cancelled context = %v", err)
	}
	if _, err := EncodeOnly(t.Context(), Config{}, time.Second); err == nil {
		t.Error("EncodeOnly accepted an empty config")
	}
}
