package capture

import (
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/pion/mediadevices/pkg/wave"
)

// TestMicrophoneOpenErrors: a microphone that does not exist gives an
// error that names it and says what to check, whether or not this machine
// has an audio system at all.
func TestMicrophoneOpenErrors(t *testing.T) {
	t.Run("default device", func(t *testing.T) {
		m, err := openMicrophone("", 1, &clock{})
		if err == nil {
			t.Log("this machine has a microphone")
			m.Close()
			return
		}
		if !errors.Is(err, ErrNoDevice) && !errors.Is(err, ErrNoAudioSystem) {
			t.Errorf("error %v is neither ErrNoDevice nor ErrNoAudioSystem", err)
		}
		if !strings.HasPrefix(err.Error(), "microphone (default): ") || !strings.Contains(err.Error(), "group audio") {
			t.Errorf("error %q does not name the default microphone or say what to check", err)
		}
		t.Logf("error: %v", err)
	})

	const name = "uploadbox-test-no-such-microphone"
	m, err := openMicrophone(name, 1, &clock{})
	if err == nil {
		m.Close()
		t.Fatal("opened a microphone that does not exist")
	}
	var de *DeviceError
	if !errors.As(err, &de) || de.Kind != "microphone" || de.Device != name {
		t.Fatalf("error %#v is not a microphone DeviceError naming %q", err, name)
	}
	if !errors.Is(err, ErrNoDevice) && !errors.Is(err, ErrNoAudioSystem) {
		t.Errorf("error %v is neither ErrNoDevice nor ErrNoAudioSystem", err)
	}
	for _, s := range []string{"microphone " + name + ": ", "group audio"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not say %q", err, s)
		}
	}
	t.Logf("error: %v", err)

	_, err = Open(Config{Source: SourceCamera, Device: "/dev/video-uploadbox-test-missing", Audio: true, AudioDevice: name})
	if !errors.Is(err, ErrNoDevice) || !strings.HasPrefix(err.Error(), "camera ") {
		t.Errorf("Open reports %v, want the camera's error first", err)
	}
}

// pcm is frames of 16-bit samples, every channel the same value.
func pcm(frames, channels int, v int16) []byte {
	b := make([]byte, 0, frames*channels*2)
	for range frames * channels {
		b = binary.LittleEndian.AppendUint16(b, uint16(v))
	}
	return b
}

// TestMicrophoneTiming feeds device callbacks to the microphone's reader
// and checks the 20 ms chunks it makes: times by sample count, gaps filled
// with silence, a device running ahead trimmed.
func TestMicrophoneTiming(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	type cb struct {
		at     time.Duration // when the callback ran
		frames int
	}
	regular := func(from, n, period int) []cb {
		var cbs []cb
		for i := range n {
			cbs = append(cbs, cb{ms(from + (i+1)*period), period * 48})
		}
		return cbs
	}
	tests := []struct {
		name     string
		channels int
		cbs      []cb
		times    []time.Duration // of the chunks read
		lost     uint64
	}{
		{"10 ms callbacks", 1, regular(0, 8, 10), []time.Duration{0, ms(20), ms(40), ms(60)}, 0},
		{"stereo, 25 ms callbacks with jitter", 2,
			[]cb{{ms(25), 1200}, {ms(52), 1200}, {ms(74), 1200}, {ms(100), 1200}},
			[]time.Duration{0, ms(20), ms(40), ms(60), ms(80)}, 0},
		{"late start", 1, regular(1000, 4, 20), []time.Duration{ms(1000), ms(1020), ms(1040)}, 0},
		{"gap filled with silence", 1, append(regular(0, 2, 20), regular(340, 3, 20)...),
			[]time.Duration{0, ms(20), ms(40), ms(60), ms(80), ms(100)}, 15},
		{"small jitter tolerated", 1, []cb{{ms(20), 960}, {ms(120), 960}, {ms(130), 960}, {ms(140), 960}},
			[]time.Duration{0, ms(20), ms(40), ms(60)}, 0},
		{"device ahead trimmed", 1, []cb{{ms(20), 960}, {ms(21), 9600}, {ms(40), 960}},
			[]time.Duration{0, ms(20)}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &microphone{channels: tt.channels, in: make(chan micChunk, len(tt.cbs)), done: make(chan struct{})}
			for i, c := range tt.cbs {
				v := int16(1000 + i)
				m.in <- micChunk{b: pcm(c.frames, tt.channels, v), t: c.at}
			}
			for i, want := range tt.times {
				chunk, _, err := m.Read()
				if err != nil {
					t.Fatalf("chunk %d: %v", i, err)
				}
				c := chunk.(*wave.Int16Interleaved)
				if c.Size.Len != 960 || c.Size.Channels != tt.channels || c.Size.SamplingRate != SampleRate {
					t.Fatalf("chunk %d is %+v", i, c.Size)
				}
				if m.frameTime() != want {
					t.Errorf("chunk %d at %v, want %v", i, m.frameTime(), want)
				}
			}
			if tt.name == "gap filled with silence" {
				// chunk 2 (40 ms) is the first of the silence
				if m.lost() != tt.lost {
					t.Errorf("lost = %d, want %d", m.lost(), tt.lost)
				}
			}
			if tt.name == "device ahead trimmed" && m.lost() == 0 {
				t.Error("trimmed samples not counted")
			}
			close(m.done)
			for {
				if _, _, err := m.Read(); err == io.EOF {
					break
				} else if err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
