package capture

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/gen2brain/malgo"
	"github.com/pion/mediadevices/pkg/wave"
)

// microphone is the audio source of a real device, through miniaudio
// (malgo). The audio context is created only when a microphone is opened,
// never at import time.
//
// Capture times count samples, so 20 ms chunks are exactly 20 ms apart.
// The sample count is checked against the clock on every callback: when the
// device delivered too little (an overrun) the gap is filled with silence,
// and when it runs ahead the surplus is dropped, so audio stays within
// micDrift of video over hours.
type microphone struct {
	name     string // as configured; empty for the default device
	channels int
	clk      *clock

	mctx   *malgo.AllocatedContext
	dev    *malgo.Device
	pinner runtime.Pinner

	in       chan micChunk
	done     chan struct{}
	once     sync.Once
	started  bool
	overruns atomic.Uint64 // callbacks dropped because Read fell behind; the gap is filled below

	// Read's state.
	pending []int16 // interleaved samples not yet returned
	synced  bool
	base    time.Duration // capture time of sample 0
	pos     int64         // sample frames received (or filled) so far
	head    int64         // sample frame number of pending[0]
	last    time.Duration
	dropped atomic.Uint64 // 20 ms chunks filled with silence or dropped
}

type micChunk struct {
	b []byte        // interleaved little-endian int16
	t time.Duration // when the callback ran: just after the last sample
}

const (
	// micDrift is how far the sample count may drift from the clock
	// before it is corrected.
	micDrift = 100 * time.Millisecond
	// micQueue is how many device callbacks may wait for Read.
	micQueue = 64
)

// openMicrophone creates an audio context with a real backend
// (PulseAudio, then ALSA; never the null device) and prepares the capture
// device named name, or the default device if name is empty. Capturing
// starts with the first Read.
func openMicrophone(name string, channels int, clk *clock) (*microphone, error) {
	m := &microphone{name: name, channels: channels, clk: clk,
		in: make(chan micChunk, micQueue), done: make(chan struct{})}
	mctx, err := malgo.InitContext([]malgo.Backend{malgo.BackendPulseaudio, malgo.BackendAlsa}, malgo.ContextConfig{}, nil)
	if err != nil {
		return nil, &DeviceError{Kind: "microphone", Device: name, Reason: ErrNoAudioSystem, Err: err,
			Hint: "check that ALSA or PulseAudio works on this box (arecord -l) and that the uploadbox user is in group audio"}
	}
	m.mctx = mctx
	if err := m.init(); err != nil {
		m.freeContext()
		return nil, err
	}
	return m, nil
}

func (m *microphone) init() error {
	all, err := m.mctx.Devices(malgo.Capture)
	if err != nil {
		return m.error(ErrNoAudioSystem, fmt.Errorf("list capture devices: %w", err))
	}
	// ALSA always lists its "null" PCM, which records silence forever.
	var infos []malgo.DeviceInfo
	for _, info := range all {
		if deviceIDText(info.ID) != "null" {
			infos = append(infos, info)
		}
	}
	cfg := malgo.DefaultDeviceConfig(malgo.Capture)
	cfg.Capture.Format = malgo.FormatS16
	cfg.Capture.Channels = uint32(m.channels)
	cfg.SampleRate = SampleRate
	cfg.PeriodSizeInMilliseconds = uint32(AudioPacket / time.Millisecond)
	if m.name != "" {
		info, err := findMicrophone(infos, m.name)
		if err != nil {
			return m.error(ErrNoDevice, err)
		}
		// The device id is handed to C inside the config: pin it until
		// the device is uninitialised.
		id := new(malgo.DeviceID)
		*id = info.ID
		m.pinner.Pin(id)
		cfg.Capture.DeviceID = unsafe.Pointer(id)
	} else if len(infos) == 0 {
		return m.error(ErrNoDevice, errors.New("the audio system lists no capture device"))
	}
	dev, err := malgo.InitDevice(m.mctx.Context, cfg, malgo.DeviceCallbacks{Data: m.onData})
	if err != nil {
		m.pinner.Unpin()
		return m.error(nil, fmt.Errorf("open: %w", err))
	}
	m.dev = dev
	return nil
}

// deviceIDText is a device id as text: ALSA and PulseAudio ids are the
// PCM or source name ("hw:1,0", "alsa_input.usb-…").
func deviceIDText(id malgo.DeviceID) string {
	b := id[:]
	if i := slices.Index(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// findMicrophone picks the capture device whose name or id is name, or
// whose name contains it, if only one does.
func findMicrophone(infos []malgo.DeviceInfo, name string) (malgo.DeviceInfo, error) {
	var partial []malgo.DeviceInfo
	for _, info := range infos {
		if info.Name() == name || deviceIDText(info.ID) == name || info.ID.String() == name {
			return info, nil
		}
		if strings.Contains(strings.ToLower(info.Name()), strings.ToLower(name)) {
			partial = append(partial, info)
		}
	}
	if len(partial) == 1 {
		return partial[0], nil
	}
	var names []string
	for _, info := range infos {
		names = append(names, fmt.Sprintf("%q (%s)", info.Name(), deviceIDText(info.ID)))
	}
	if len(partial) > 1 {
		return malgo.DeviceInfo{}, fmt.Errorf("%q matches %d capture devices: use one of %s", name, len(partial), strings.Join(names, ", "))
	}
	return malgo.DeviceInfo{}, fmt.Errorf("no capture device matches %q; the audio system lists %s", name, orNone(strings.Join(names, ", ")))
}

// error builds the DeviceError for a failure to open the microphone,
// mapping miniaudio's results to the sentinels.
func (m *microphone) error(reason error, err error) error {
	switch {
	case reason != nil:
	case errors.Is(err, malgo.ErrBusy), errors.Is(err, malgo.ErrAlreadyInUse):
		reason = ErrDeviceBusy
	case errors.Is(err, malgo.ErrAccessDenied):
		reason = ErrPermission
	case errors.Is(err, malgo.ErrNoDevice), errors.Is(err, malgo.ErrDoesNotExist):
		reason = ErrNoDevice
	case errors.Is(err, malgo.ErrFormatNotSupported), errors.Is(err, malgo.ErrInvalidDeviceConfig):
		reason = ErrUnsupported
	}
	hint := "check that the microphone is connected (arecord -l) and that the uploadbox user is in group audio"
	switch reason {
	case ErrDeviceBusy:
		hint = "another program is using the microphone (fuser -v /dev/snd/*): stop it or choose another device"
	case ErrUnsupported:
		hint = fmt.Sprintf("the device cannot record %d-channel 16-bit audio at %d Hz", m.channels, SampleRate)
	}
	dev := m.name
	if dev == "" {
		dev = "(default)"
	}
	return &DeviceError{Kind: "microphone", Device: dev, Reason: reason, Err: err, Hint: hint}
}

// onData runs on the audio thread for every captured period. It copies the
// samples (the buffer belongs to miniaudio) and never blocks.
func (m *microphone) onData(_, in []byte, _ uint32) {
	c := micChunk{b: append([]byte(nil), in...), t: m.clk.now()}
	select {
	case m.in <- c:
	default:
		m.overruns.Add(1)
	}
}

// Read returns the next 20 ms of audio as 16-bit interleaved PCM.
func (m *microphone) Read() (wave.Audio, func(), error) {
	if !m.started && m.dev != nil {
		if err := m.dev.Start(); err != nil {
			return nil, func() {}, m.error(nil, fmt.Errorf("start: %w", err))
		}
		m.started = true
	}
	n := chunkFrames * m.channels
	for len(m.pending) < n {
		select {
		case c := <-m.in:
			m.accept(c)
		case <-m.done:
			return nil, func() {}, io.EOF
		}
	}
	chunk := wave.NewInt16Interleaved(wave.ChunkInfo{Len: chunkFrames, Channels: m.channels, SamplingRate: SampleRate})
	copy(chunk.Data, m.pending[:n])
	m.pending = m.pending[n:]
	m.last = m.timeOf(m.head)
	m.head += int64(chunkFrames)
	return chunk, func() {}, nil
}

func (m *microphone) timeOf(frame int64) time.Duration {
	return m.base + time.Duration(frame)*time.Second/SampleRate
}

// accept appends one callback's samples, first correcting the sample
// count against the clock.
func (m *microphone) accept(c micChunk) {
	frames := len(c.b) / 2 / m.channels
	if frames == 0 {
		return
	}
	start := c.t - time.Duration(frames)*time.Second/SampleRate
	if !m.synced {
		m.base, m.synced = max(start, 0), true
	}
	skip := 0
	switch drift := start - m.timeOf(m.pos); {
	case drift > micDrift:
		// Samples were lost: fill the gap with silence.
		gap := int64(drift) * SampleRate / int64(time.Second)
		m.pending = append(m.pending, make([]int16, int(gap)*m.channels)...)
		m.pos += gap
		m.dropped.Add(uint64((gap + int64(chunkFrames) - 1) / int64(chunkFrames)))
	case drift < -micDrift:
		// The device runs ahead of the clock: drop the surplus.
		skip = min(frames, int(int64(-drift)*SampleRate/int64(time.Second)))
		m.dropped.Add(uint64((skip + chunkFrames - 1) / chunkFrames))
	}
	for i := skip * m.channels; i < frames*m.channels; i++ {
		// miniaudio delivers host byte order; every target is little-endian.
		m.pending = append(m.pending, int16(binary.LittleEndian.Uint16(c.b[2*i:])))
	}
	m.pos += int64(frames - skip)
}

func (m *microphone) frameTime() time.Duration { return m.last }
func (m *microphone) lost() uint64             { return m.dropped.Load() }

// Close stops the device and frees the audio context; a Read in progress
// returns io.EOF.
func (m *microphone) Close() error {
	m.once.Do(func() {
		close(m.done)
		if m.dev != nil {
			m.dev.Uninit() // waits for the audio thread; no callback runs after it
			m.pinner.Unpin()
		}
		m.freeContext()
	})
	return nil
}

func (m *microphone) freeContext() {
	if m.mctx != nil {
		_ = m.mctx.Uninit()
		m.mctx.Free()
		m.mctx = nil
	}
}
