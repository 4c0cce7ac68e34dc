package talkback

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"unsafe"

	"github.com/gen2brain/malgo"
)

// maxSpeakerQueue bounds what waits for the sound card (200 ms): a card
// that plays slower than the clock loses the oldest samples instead of the
// voice lagging ever more.
const maxSpeakerQueue = SampleRate / 5

// speaker plays through miniaudio (ALSA, or PulseAudio where it runs).
type speaker struct {
	mctx   *malgo.AllocatedContext
	dev    *malgo.Device
	pinner runtime.Pinner

	mu    sync.Mutex
	queue []int16
}

// DefaultDevice is the live.talkback_device that plays on the system's
// default output.
const DefaultDevice = "default"

func openSpeaker(name string) (Sink, error) {
	mctx, err := malgo.InitContext([]malgo.Backend{malgo.BackendAlsa, malgo.BackendPulseaudio}, malgo.ContextConfig{}, nil)
	if err != nil {
		return nil, fmt.Errorf("talk-back device %q: no audio system (check that ALSA works on this box, aplay -l, and that the uploadbox user is in group audio): %w", name, err)
	}
	s := &speaker{mctx: mctx}
	cfg := malgo.DefaultDeviceConfig(malgo.Playback)
	cfg.Playback.Format = malgo.FormatS16
	cfg.Playback.Channels = 1
	cfg.SampleRate = SampleRate
	cfg.PeriodSizeInMilliseconds = 20
	if name != DefaultDevice {
		id, err := findSpeaker(mctx, name)
		if err != nil {
			s.free()
			return nil, err
		}
		s.pinner.Pin(id)
		cfg.Playback.DeviceID = unsafe.Pointer(id)
	}
	dev, err := malgo.InitDevice(mctx.Context, cfg, malgo.DeviceCallbacks{Data: s.onData})
	if err != nil {
		s.free()
		return nil, fmt.Errorf("talk-back device %q: open: %w", name, err)
	}
	s.dev = dev
	if err := dev.Start(); err != nil {
		s.Close()
		return nil, fmt.Errorf("talk-back device %q: start: %w", name, err)
	}
	return s, nil
}

// findSpeaker finds the playback device whose name or id is name.
func findSpeaker(mctx *malgo.AllocatedContext, name string) (*malgo.DeviceID, error) {
	infos, err := mctx.Devices(malgo.Playback)
	if err != nil {
		return nil, fmt.Errorf("talk-back device %q: list playback devices: %w", name, err)
	}
	var names []string
	for _, info := range infos {
		idText := string(bytes.TrimRight(info.ID[:], "\x00"))
		if info.Name() == name || idText == name {
			id := new(malgo.DeviceID)
			*id = info.ID
			return id, nil
		}
		names = append(names, fmt.Sprintf("%q (%s)", info.Name(), idText))
	}
	if len(names) == 0 {
		names = append(names, "none")
	}
	return nil, fmt.Errorf("talk-back device %q: no such playback device; the audio system lists %s (or use %q)", name, strings.Join(names, ", "), DefaultDevice)
}

// onData runs on the audio thread: it plays what is queued and silence
// after it.
func (s *speaker) onData(out, _ []byte, _ uint32) {
	s.mu.Lock()
	n := min(len(out)/2, len(s.queue))
	for i := range n {
		binary.LittleEndian.PutUint16(out[2*i:], uint16(s.queue[i]))
	}
	s.queue = s.queue[n:]
	s.mu.Unlock()
	clear(out[2*n:])
}

func (s *speaker) Write(pcm []int16) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.queue = append(s.queue, pcm...)
	if over := len(s.queue) - maxSpeakerQueue; over > 0 {
		s.queue = s.queue[over:]
	}
	return nil
}

func (s *speaker) Close() error {
	var err error
	if s.dev != nil {
		s.dev.Uninit() // waits for the audio thread
		s.dev = nil
	}
	s.pinner.Unpin()
	return errors.Join(err, s.free())
}

func (s *speaker) free() error {
	if s.mctx == nil {
		return nil
	}
	err := s.mctx.Uninit()
	s.mctx.Free()
	s.mctx = nil
	return err
}
