package talkback

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// memSink keeps what was played.
type memSink struct {
	mu     sync.Mutex
	pcm    []int16
	closed bool
}

func (m *memSink) Write(pcm []int16) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pcm = append(m.pcm, pcm...)
	return nil
}

func (m *memSink) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	return nil
}

// played returns the samples played so far.
func (m *memSink) played() []int16 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]int16(nil), m.pcm...)
}

// speak sends d of a freq Hz tone on v, a packet every 20 ms.
func speak(t *testing.T, v *Voice, freq float64, d time.Duration) {
	t.Helper()
	enc, err := NewEncoder()
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	for i := range int(d / Frame) {
		pkt, err := enc.Encode(tone(freq, i*FrameSamples, FrameSamples))
		if err != nil {
			t.Fatal(err)
		}
		v.Packet(pkt)
		time.Sleep(Frame)
	}
}

// has says whether pcm holds freq clearly (far above the noise floor).
func has(pcm []int16, freq float64) bool { return Power(pcm, freq) > 1e5 }

// TestFloor: the first voice is played, a second one speaking at the same
// time is not; the floor is released after FloorIdle of silence (closing
// tone, Closed "silence") and the next voice takes it; a voice closed while
// it holds the floor is silent from the next frame.
func TestFloor(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sink := &memSink{}
		var mu sync.Mutex
		var events []string
		p := NewPlayer(sink, Options{
			Opened: func(viewer, session string) {
				mu.Lock()
				events = append(events, "open "+viewer)
				mu.Unlock()
			},
			Closed: func(viewer, session, reason string, held time.Duration) {
				mu.Lock()
				events = append(events, fmt.Sprintf("close %s %s", viewer, reason))
				mu.Unlock()
			},
		})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- p.Run(ctx) }()

		a, b := p.Speak("coach-a", "A"), p.Speak("coach-b", "B")
		at := len(sink.played())
		var wg sync.WaitGroup
		wg.Go(func() { speak(t, a, 440, time.Second) })
		time.Sleep(5 * time.Millisecond) // a's first packet is first
		wg.Go(func() { speak(t, b, 660, time.Second) })
		time.Sleep(500 * time.Millisecond)
		if f := b.Floor(); f != FloorTaken {
			t.Errorf("b's floor while a speaks: %s, want %s", f, FloorTaken)
		}
		if f := a.Floor(); f != FloorYours {
			t.Errorf("a's floor while a speaks: %s, want %s", f, FloorYours)
		}
		wg.Wait()
		turn := sink.played()[at:]
		if !has(turn, 440) || has(turn, 660) {
			t.Fatalf("during a's turn: 440 Hz %.3g, 660 Hz %.3g: want a's voice only", Power(turn, 440), Power(turn, 660))
		}
		if !has(turn[:FrameSamples*8], ToneHz) {
			t.Fatal("no opening tone")
		}

		time.Sleep(FloorIdle + 3*Frame)
		if f := b.Floor(); f != FloorFree {
			t.Fatalf("floor after a's silence: %s, want free", f)
		}
		at = len(sink.played())
		speak(t, b, 660, 600*time.Millisecond)
		if turn := sink.played()[at:]; !has(turn, 660) {
			t.Fatalf("b was not played once the floor was free: 660 Hz %.3g", Power(turn, 660))
		}

		// b speaks again at once (the floor is still b's) and is cut off
		// while it speaks: silent from the next frame on.
		wg.Go(func() { speak(t, b, 660, time.Second) })
		time.Sleep(300 * time.Millisecond)
		b.Close("revoked")
		at = len(sink.played()) + FrameSamples
		wg.Wait()
		if after := sink.played()[at:]; has(after, 660) {
			t.Fatalf("b's voice played after it was closed: 660 Hz %.3g", Power(after, 660))
		}
		cancel()
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		if !sink.closed {
			t.Fatal("sink not closed")
		}
		want := "open coach-a,close coach-a silence,open coach-b,close coach-b revoked"
		if got := strings.Join(events, ","); got != want {
			t.Fatalf("events:\n%s\nwant\n%s", got, want)
		}
	})
}

// TestWAV: the file is a WAV of what was written, its header finalised on
// close.
func TestWAV(t *testing.T) {
	path := filepath.Join(t.TempDir(), "talk.wav")
	w, err := CreateWAV(path)
	if err != nil {
		t.Fatal(err)
	}
	pcm := tone(440, 0, 3*FrameSamples)
	for i := range 3 {
		if err := w.Write(pcm[i*FrameSamples : (i+1)*FrameSamples]); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := ReadWAV(path); err != nil || len(got) != len(pcm) {
		t.Fatalf("while open: %d samples, %v", len(got), err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := ReadWAV(path)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	if riff, data := binary.LittleEndian.Uint32(raw[4:]), binary.LittleEndian.Uint32(raw[40:]); data != uint32(2*len(pcm)) || riff != data+36 {
		t.Fatalf("header after close: RIFF size %d, data size %d; want %d, %d", riff, data, 2*len(pcm)+36, 2*len(pcm))
	}
	for i := range pcm {
		if got[i] != pcm[i] {
			t.Fatalf("sample %d: %d, want %d", i, got[i], pcm[i])
		}
	}
}
