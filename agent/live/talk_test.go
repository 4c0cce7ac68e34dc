package live

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/pion/sdp/v3"

	"github.com/uploadbox/uploadbox/agent/live/livetest"
)

// fakeTalker counts each voice's packets and records how it was closed.
type fakeTalker struct {
	mu     sync.Mutex
	voices map[string]*fakeVoice // by viewer
}

type fakeVoice struct {
	t       *fakeTalker
	packets int
	closed  string
}

func (f *fakeTalker) Speak(viewer, _ string) Voice {
	f.mu.Lock()
	defer f.mu.Unlock()
	v := &fakeVoice{t: f}
	f.voices[viewer] = v
	return v
}

func (v *fakeVoice) Packet([]byte) {
	v.t.mu.Lock()
	defer v.t.mu.Unlock()
	if v.closed == "" {
		v.packets++
	}
}

func (v *fakeVoice) Close(reason string) {
	v.t.mu.Lock()
	defer v.t.mu.Unlock()
	if v.closed == "" {
		v.closed = reason
	}
}

func (v *fakeVoice) Floor() string { return "yours" }

// voice returns viewer's voice: whether it exists, its packets and how it
// was closed.
func (f *fakeTalker) voice(viewer string) (bool, int, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	v := f.voices[viewer]
	if v == nil {
		return false, 0, ""
	}
	return true, v.packets, v.closed
}

// answerAudio is the direction of the answer's audio section, or
// "rejected".
func answerAudio(t *testing.T, answer string) string {
	t.Helper()
	var d sdp.SessionDescription
	if err := d.UnmarshalString(answer); err != nil {
		t.Fatal(err)
	}
	for _, m := range d.MediaDescriptions {
		if m.MediaName.Media != "audio" {
			continue
		}
		if m.MediaName.Port.Value == 0 {
			return "rejected"
		}
		for _, a := range m.Attributes {
			if slices.Contains([]string{"sendrecv", "sendonly", "recvonly", "inactive"}, a.Key) {
				return a.Key
			}
		}
	}
	return "none"
}

// TestTalk: only a viewer whose grant lets it speak has its audio taken
// (the answer receives it, Talk: allowed, the packets reach its voice);
// another viewer's audio section is answered as not sending and nothing it
// sends is read; the voice is closed with the grant; a server without a
// talk-back output says so.
func TestTalk(t *testing.T) {
	talker := &fakeTalker{voices: map[string]*fakeVoice{}}
	r := newRig(t, func(c *Config) { c.Talk = talker })
	r.gate.grant("alice", true)
	r.gate.talk["alice"] = true
	r.gate.grant("bob", true)
	r.gate.grant("carol", false)
	r.gate.talk["carol"] = true

	talk := func(token string, audio bool) *livetest.Response {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		resp, err := livetest.Offer(ctx, r.client, r.ts.URL+"/whep", token, livetest.Options{Audio: audio, Talk: true, Loopback: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Viewer.Close() })
		if resp.Status != http.StatusCreated {
			t.Fatalf("offer of %s: %d %s", token, resp.Status, resp.Body)
		}
		if _, err := resp.Viewer.WaitPackets(ctx, "video"); err != nil {
			t.Fatal(err)
		}
		return resp
	}
	tests := []struct {
		token, viewer string
		audio         bool
		header, dir   string
	}{
		{"tok-alice", "alice", true, TalkAllowed, "sendrecv"},
		{"tok-bob", "bob", true, TalkNotGranted, "sendonly"},
		{"tok-carol", "carol", false, TalkAllowed, "recvonly"}, // video only, may speak
	}
	viewers := map[string]*livetest.Viewer{}
	for _, tt := range tests {
		resp := talk(tt.token, tt.audio)
		if h, dir := resp.Header.Get("Talk"), answerAudio(t, resp.Viewer.Answer); h != tt.header || dir != tt.dir {
			t.Errorf("%s: Talk %q, answer audio %s; want %q, %s", tt.viewer, h, dir, tt.header, tt.dir)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		if _, err := resp.Viewer.Speak(ctx, 440, time.Second); err != nil {
			t.Fatal(err)
		}
		cancel()
		viewers[tt.viewer] = resp.Viewer
	}
	for _, v := range []string{"alice", "carol"} {
		ok, packets, _ := talker.voice(v)
		if !ok || packets < 10 {
			t.Errorf("%s may speak: voice %t with %d packets, want most of 50", v, ok, packets)
		}
		if code, body := r.do(t, http.MethodGet, viewers[v].Location, "tok-"+v); code != http.StatusOK || body["talk"] != true || body["floor"] != "yours" {
			t.Errorf("%s's status: %d %v", v, code, body)
		}
	}
	if ok, _, _ := talker.voice("bob"); ok {
		t.Error("bob, granted without talk, got a voice")
	}
	if code, body := r.do(t, http.MethodGet, viewers["bob"].Location, "tok-bob"); code != http.StatusOK || body["talk"] != nil {
		t.Errorf("bob's status: %d %v, want no talk", code, body)
	}

	r.gate.revoke("alice", "revoked")
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, _, closed := talker.voice("alice"); closed == "revoked" {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("alice's voice after revoke: closed %q, want revoked", closed)
		}
		time.Sleep(10 * time.Millisecond)
	}

	// No talk-back output: the viewer is told, nothing is taken.
	r2 := newRig(t, nil)
	r2.gate.grant("alice", true)
	r2.gate.talk["alice"] = true
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	resp, err := livetest.Offer(ctx, r2.client, r2.ts.URL+"/whep", "tok-alice", livetest.Options{Audio: true, Talk: true, Loopback: true})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Viewer.Close()
	if h, dir := resp.Header.Get("Talk"), answerAudio(t, resp.Viewer.Answer); resp.Status != http.StatusCreated || h != TalkUnavailable || dir != "sendonly" {
		t.Errorf("without a talk-back output: %d, Talk %q, answer audio %s", resp.Status, h, dir)
	}
}
