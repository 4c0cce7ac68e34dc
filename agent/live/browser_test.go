package live

import (
	"context"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/agent/live/livetest"
)

// TestBrowserViewer plays the live view in Debian's Chromium from the
// server's own viewer page: waiting while consent is pending, frames once
// granted, and a stop within 1 s of the revoke.
func TestBrowserViewer(t *testing.T) {
	if testing.Short() {
		t.Skip("Chromium live-view test skipped with -short")
	}
	r := newRig(t, nil)
	modules, err := filepath.Abs("../../.cache/npm/node_modules")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 40*time.Second)
	defer cancel()
	page, err := livetest.OpenPage(ctx, r.ts.URL+"/#token=tok-alice", livetest.BrowserOptions{NodeModules: modules})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := page.Close(); err != nil && ctx.Err() == nil {
			t.Errorf("browser: %v", err)
		}
	})

	waiting, err := page.Wait(ctx, func(s livetest.PageState) bool { return s.State == "waiting" && s.Reason == "pending" })
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(waiting.Text, "Waiting for the teacher") {
		t.Errorf("pending page says %q", waiting.Text)
	}
	// Let the page retry once while pending: still nothing decoded.
	if _, err := waitAsked(ctx, r.gate, "alice", 2); err != nil {
		t.Fatal(err)
	}
	if s := page.Last(); s.Frames != 0 || s.State != "waiting" {
		t.Fatalf("while pending the page shows %+v", s)
	}
	if n := r.srv.Viewers(); n != 0 {
		t.Fatalf("Viewers() = %d while pending", n)
	}

	granted := time.Now()
	r.gate.grant("alice", true)
	first, err := page.Wait(ctx, func(s livetest.PageState) bool { return s.Frames > 0 })
	if err != nil {
		t.Fatal(err)
	}
	shown, err := page.Wait(ctx, func(s livetest.PageState) bool { return !s.FirstFrame.IsZero() })
	if err != nil {
		t.Fatal(err)
	}
	r.gate.mu.Lock()
	joined, asked := r.gate.joinedAt, slices.Clone(r.gate.askedAt)
	r.gate.mu.Unlock()
	firstShown := livetest.FirstShown(shown, time.Second/30)
	t.Logf("grant → first frame shown in Chromium: %v (the page retries every 2 s while pending)", firstShown.Sub(granted).Round(time.Millisecond))
	t.Logf("201 → first frame shown: %v (%v to the first frame callback, %d frames later)",
		firstShown.Sub(joined).Round(time.Millisecond), shown.FirstFrame.Sub(joined).Round(time.Millisecond), shown.FramesBefore)
	for i := 1; i < len(asked); i++ {
		t.Logf("offer %d came %v after the previous", i+1, asked[i].Sub(asked[i-1]).Round(time.Millisecond))
	}
	if first.State != "playing" {
		t.Errorf("page state %q while frames are decoded, want playing", first.State)
	}
	playing, err := page.Wait(ctx, func(s livetest.PageState) bool { return s.Frames >= first.Frames+30 })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d frames decoded %v after the first", playing.Frames-first.Frames, playing.At.Sub(first.At).Round(time.Millisecond))

	revoked := time.Now()
	r.gate.revoke("alice", "revoked")
	ended, err := page.Wait(ctx, func(s livetest.PageState) bool { return s.State == "ended" })
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("page shows ended %v after the revoke", ended.At.Sub(revoked).Round(time.Millisecond))
	if d := ended.At.Sub(revoked); d > time.Second {
		t.Errorf("the page showed ended %v after the revoke, want < 1 s", d)
	}
	if ended.Reason != "revoked" || !strings.Contains(ended.Text, "The teacher ended the live view") {
		t.Errorf("ended page: %+v", ended)
	}

	// Watch the decoded-frame count until 2 s after the revoke: it must not
	// grow later than 1 s after it.
	maxFrames, lastGrowth := ended.Frames, time.Time{}
	if ended.Frames > playing.Frames {
		lastGrowth = ended.At
	}
	watch, stop := context.WithDeadline(ctx, revoked.Add(2*time.Second))
	defer stop()
	page.Wait(watch, func(s livetest.PageState) bool {
		if s.Frames > maxFrames {
			maxFrames, lastGrowth = s.Frames, s.At
		}
		return false
	})
	if ctx.Err() != nil {
		t.Fatal("the test ran out of time")
	}
	if !lastGrowth.IsZero() && lastGrowth.Sub(revoked) > time.Second {
		t.Errorf("framesDecoded still grew %v after the revoke (to %d)", lastGrowth.Sub(revoked), maxFrames)
	}
	t.Logf("framesDecoded stopped at %d; last growth %v after the revoke", maxFrames, max(lastGrowth.Sub(revoked), 0).Round(time.Millisecond))
	if n := r.srv.Viewers(); n != 0 {
		t.Errorf("Viewers() = %d after the revoke", n)
	}
}

// waitAsked waits until the gate was asked n times for viewer.
func waitAsked(ctx context.Context, g *fakeGate, viewer string, n int) (int, error) {
	for {
		g.mu.Lock()
		got := 0
		for _, v := range g.asked {
			if v == viewer {
				got++
			}
		}
		g.mu.Unlock()
		if got >= n {
			return got, nil
		}
		select {
		case <-ctx.Done():
			return got, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}
