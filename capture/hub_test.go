package capture

import (
	"fmt"
	"slices"
	"testing"
	"testing/synctest"
	"time"
)

// seq builds frames from a pattern: K video keyframe, P video, A audio.
// Time counts frames in milliseconds; Data names the frame.
func seq(start int, pattern string) []Frame {
	var fs []Frame
	for i, c := range pattern {
		n := start + i
		f := Frame{Time: time.Duration(n) * time.Millisecond, Data: []byte(fmt.Sprintf("%c%d", c, n))}
		switch c {
		case 'K':
			f.Kind, f.Key = Video, true
		case 'P':
			f.Kind = Video
		case 'A':
			f.Kind, f.Key = Audio, true
		default:
			panic("bad pattern")
		}
		fs = append(fs, f)
	}
	return fs
}

func names(fs []Frame) []string {
	var s []string
	for _, f := range fs {
		s = append(s, string(f.Data))
	}
	return s
}

// drain reads n frames from ch, or fewer if it closes.
func drain(ch <-chan Frame, n int) []Frame {
	var fs []Frame
	for len(fs) < n {
		f, ok := <-ch
		if !ok {
			break
		}
		fs = append(fs, f)
	}
	return fs
}

func newTestHub() (*hub, *keyframeLimiter) {
	keys := &keyframeLimiter{interval: KeyframeMinInterval}
	return newHub(&clock{}, keys), keys
}

// TestHubStalledLive: a live subscriber that stops reading neither blocks
// publishing nor the lossless subscriber; it loses frames until the next
// video keyframe and then resumes from it.
func TestHubStalledLive(t *testing.T) {
	synctest.Test(t, testHubStalledLive)
}

func testHubStalledLive(t *testing.T) {
	h, _ := newTestHub()
	rec := h.subscribe(SubscribeOptions{})
	live := h.subscribe(SubscribeOptions{Mode: Live, Queue: 4})

	var all []Frame
	publish := func(fs []Frame) {
		for _, f := range fs {
			h.publish(f) // returns at once, or the test hangs
			all = append(all, f)
		}
	}
	publish(seq(0, "KAPAPAPAPA")) // live takes KAPA, then overflows at P3
	if got, want := names(drain(live.Frames(), 4)), []string{"K0", "A1", "P2", "A3"}; !slices.Equal(got, want) {
		t.Fatalf("live got %v before falling behind, want %v", got, want)
	}
	publish(seq(10, "PAPAKAPA")) // dropped until K14, which resumes
	if got, want := names(drain(live.Frames(), 4)), []string{"K14", "A15", "P16", "A17"}; !slices.Equal(got, want) {
		t.Fatalf("live resumed with %v, want %v", got, want)
	}
	st := live.Stats()
	// P4..A9 (6 frames) and P10..A13 (4 frames) were dropped.
	if st.Dropped != 10 || st.Delivered != 8 || st.QueuedFrames != 0 {
		t.Errorf("live stats = %+v, want 10 dropped, 8 delivered, 0 queued", st)
	}

	if st := rec.Stats(); st.QueuedFrames != len(all) || st.QueuedBytes == 0 {
		t.Errorf("lossless queue = %+v, want %d frames", st, len(all))
	}
	got := drain(rec.Frames(), len(all))
	if !slices.Equal(names(got), names(all)) {
		t.Fatalf("lossless got %v, want every frame in order %v", names(got), names(all))
	}
	synctest.Wait() // the forwarder counts a frame after handing it over
	if st := rec.Stats(); st.QueuedFrames != 0 || st.QueuedBytes != 0 || st.Delivered != uint64(len(all)) || st.Dropped != 0 {
		t.Errorf("lossless stats after draining = %+v", st)
	}

	h.close()
	h.wait()
	for _, s := range []*Subscription{rec, live} {
		if _, ok := <-s.Frames(); ok {
			t.Errorf("%v channel not closed after close", s.Mode())
		}
	}
}

// TestHubLiveJoin: a live subscriber starts at the next keyframe, asks for
// one, and what it skips before that is not counted as dropped.
func TestHubLiveJoin(t *testing.T) {
	h, keys := newTestHub()
	live := h.subscribe(SubscribeOptions{Mode: Live})
	if r, _ := keys.counts(); r != 1 {
		t.Errorf("live subscribe made %d keyframe requests, want 1", r)
	}
	for _, f := range seq(0, "PAPAKAP") {
		h.publish(f)
	}
	h.close()
	if got, want := names(drain(live.Frames(), 100)), []string{"K4", "A5", "P6"}; !slices.Equal(got, want) {
		t.Errorf("live got %v, want %v", got, want)
	}
	if st := live.Stats(); st.Dropped != 0 {
		t.Errorf("dropped = %d before the first keyframe, want 0", st.Dropped)
	}
	rec := h.subscribe(SubscribeOptions{})
	if r, _ := keys.counts(); r != 1 {
		t.Errorf("lossless subscribe requested a keyframe")
	}
	live.RequestKeyframe()
	if r, _ := keys.counts(); r != 2 {
		t.Errorf("RequestKeyframe made %d requests, want 2", r)
	}
	if _, ok := <-rec.Frames(); ok {
		t.Error("subscription after close has an open channel")
	}
	h.wait()
}

// TestHubLossless: a lossless subscriber behind by a large, unbounded
// backlog gets every frame in order, and the channel closes after the
// last one.
func TestHubLossless(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h, _ := newTestHub()
		rec := h.subscribe(SubscribeOptions{})
		const n = 5000
		var want []string
		go func() {
			for i := range n {
				f := Frame{Kind: Video, Key: i%30 == 0, Data: []byte(fmt.Sprint(i))}
				want = append(want, string(f.Data))
				h.publish(f)
				if i%1000 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
			h.close()
		}()
		time.Sleep(time.Second) // the consumer stalls; the producer finishes
		synctest.Wait()
		if st := rec.Stats(); st.QueuedFrames != n {
			t.Fatalf("queued %d frames while stalled, want %d", st.QueuedFrames, n)
		}
		var got []string
		for f := range rec.Frames() {
			got = append(got, string(f.Data))
		}
		if !slices.Equal(got, want) {
			t.Fatalf("got %d frames, want %d in order", len(got), len(want))
		}
		h.wait()
	})
}

func TestHubUnsubscribe(t *testing.T) {
	for _, mode := range []Mode{Lossless, Live} {
		for _, after := range []string{"publish", "close"} {
			t.Run(fmt.Sprintf("%v after %s", mode, after), func(t *testing.T) {
				h, _ := newTestHub()
				s := h.subscribe(SubscribeOptions{Mode: mode})
				other := h.subscribe(SubscribeOptions{Mode: Lossless})
				for _, f := range seq(0, "KAPA") {
					h.publish(f)
				}
				if after == "close" {
					h.close()
				}
				s.Unsubscribe()
				s.Unsubscribe() // twice is fine
				for range s.Frames() {
					// a live channel keeps its buffered frames; a lossless
					// one is closed at once
					if mode == Lossless {
						t.Fatal("lossless channel delivered after Unsubscribe")
					}
				}
				if st := s.Stats(); mode == Lossless && st.QueuedFrames != 0 {
					t.Errorf("queue not discarded: %+v", st)
				}
				h.publish(seq(4, "P")[0]) // not delivered to s, no panic
				if got := drain(other.Frames(), 5); after == "publish" && len(got) != 5 {
					t.Errorf("other subscriber got %d frames, want 5", len(got))
				}
				h.close()
				h.wait()
			})
		}
	}
}
