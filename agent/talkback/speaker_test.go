package talkback

import (
	"encoding/binary"
	"strings"
	"testing"
	"time"
)

// TestSpeakerOpenErrors: a device that does not exist is refused, naming
// it and what to check.
func TestSpeakerOpenErrors(t *testing.T) {
	const name = "uploadbox-test-no-such-speaker"
	s, err := OpenSink(name)
	if err == nil {
		s.Close()
		t.Fatal("opened a playback device that does not exist")
	}
	if !strings.Contains(err.Error(), `talk-back device "`+name+`"`) ||
		!strings.Contains(err.Error(), "no such playback device") && !strings.Contains(err.Error(), "group audio") {
		t.Fatalf("error %q does not name the device or say what to check", err)
	}
	t.Logf("error: %v", err)
}

// TestSpeakerQueue: the sound card's callback plays what was written, in
// order, and silence after it; a card that lags loses the oldest samples,
// never more than maxSpeakerQueue waits.
func TestSpeakerQueue(t *testing.T) {
	s := &speaker{}
	in := tone(440, 0, maxSpeakerQueue+FrameSamples)
	for i := 0; i < len(in); i += FrameSamples {
		s.Write(in[i : i+FrameSamples])
	}
	if len(s.queue) != maxSpeakerQueue {
		t.Fatalf("%d samples wait, want at most %d", len(s.queue), maxSpeakerQueue)
	}
	out := make([]byte, 2*(maxSpeakerQueue+100))
	for i := range out {
		out[i] = 0xAA
	}
	s.onData(out, nil, 0)
	for i := range maxSpeakerQueue + 100 {
		want := int16(0)
		if i < maxSpeakerQueue {
			want = in[FrameSamples+i] // the oldest frame was dropped
		}
		if got := int16(binary.LittleEndian.Uint16(out[2*i:])); got != want {
			t.Fatalf("sample %d played %d, want %d", i, got, want)
		}
	}
}

// TestSpeakerPlays opens ALSA's "null" playback device (alsa-lib's
// default config has it wherever the library is installed) through
// miniaudio and plays a second through it: the device drains the queue.
func TestSpeakerPlays(t *testing.T) {
	if testing.Short() {
		t.Skip("plays through the machine's ALSA (absent for the arm64 build under qemu); skipped under -short")
	}
	sink, err := OpenSink("null")
	if err != nil {
		t.Fatal(err)
	}
	s := sink.(*speaker)
	pcm := tone(440, 0, FrameSamples)
	for range 10 {
		if err := s.Write(pcm); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		s.mu.Lock()
		n := len(s.queue)
		s.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the device played nothing: %d samples still wait", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
}
