package talkback

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Sink plays 48 kHz mono 16-bit audio, 20 ms at a time, in real time: the
// Player writes a frame every 20 ms, silence included.
type Sink interface {
	Write(pcm []int16) error
	Close() error
}

// FilePrefix marks a live.talkback_device that is a WAV file, not a sound
// card.
const FilePrefix = "file:"

// OpenSink opens live.talkback_device: "file:PATH", a WAV file (for tests),
// or an ALSA device name played through miniaudio.
func OpenSink(device string) (Sink, error) {
	if path, ok := strings.CutPrefix(device, FilePrefix); ok {
		return CreateWAV(path)
	}
	return openSpeaker(device)
}

// wavHeader is the size of the canonical WAV header.
const wavHeader = 44

// WAV is a Sink that writes a WAV file (48 kHz, mono, s16le) as it is
// played: every frame is written at once, so the file's length is the
// time played (silence included), and its header gets the real sizes on
// Close. While it is open the header's sizes are 0xFFFFFFFF (unknown).
type WAV struct {
	f       *os.File
	samples int64
	buf     []byte
}

// CreateWAV creates (0600: it holds a person's voice) the file at path,
// replacing one that exists.
func CreateWAV(path string) (*WAV, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("talk-back file %s: %w", path, err)
	}
	w := &WAV{f: f}
	if _, err := f.Write(wavHeaderBytes(0xFFFFFFFF - wavHeader)); err != nil {
		f.Close()
		return nil, fmt.Errorf("talk-back file %s: %w", path, err)
	}
	return w, nil
}

func wavHeaderBytes(dataBytes uint32) []byte {
	h := make([]byte, 0, wavHeader)
	h = append(h, "RIFF"...)
	h = binary.LittleEndian.AppendUint32(h, dataBytes+wavHeader-8)
	h = append(h, "WAVEfmt "...)
	h = binary.LittleEndian.AppendUint32(h, 16)
	h = binary.LittleEndian.AppendUint16(h, 1) // PCM
	h = binary.LittleEndian.AppendUint16(h, 1) // mono
	h = binary.LittleEndian.AppendUint32(h, SampleRate)
	h = binary.LittleEndian.AppendUint32(h, SampleRate*2)
	h = binary.LittleEndian.AppendUint16(h, 2)
	h = binary.LittleEndian.AppendUint16(h, 16)
	h = append(h, "data"...)
	return binary.LittleEndian.AppendUint32(h, dataBytes)
}

// Write appends pcm.
func (w *WAV) Write(pcm []int16) error {
	w.buf = w.buf[:0]
	for _, v := range pcm {
		w.buf = binary.LittleEndian.AppendUint16(w.buf, uint16(v))
	}
	if _, err := w.f.Write(w.buf); err != nil {
		return fmt.Errorf("talk-back file %s: %w", w.f.Name(), err)
	}
	w.samples += int64(len(pcm))
	return nil
}

// Close writes the header's sizes and closes the file.
func (w *WAV) Close() error {
	size := min(w.samples*2, 0xFFFFFFFF-wavHeader)
	_, err := w.f.WriteAt(wavHeaderBytes(uint32(size)), 0)
	err = errors.Join(err, w.f.Sync(), w.f.Close())
	if err != nil {
		return fmt.Errorf("talk-back file %s: %w", w.f.Name(), err)
	}
	return nil
}

// ReadWAV reads the samples of a WAV file a WAV sink wrote, finished or
// still being written.
func ReadWAV(path string) ([]int16, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(b) < wavHeader || string(b[:4]) != "RIFF" || string(b[36:40]) != "data" {
		return nil, fmt.Errorf("%s: not a WAV file a talk-back sink wrote", path)
	}
	b = b[wavHeader:]
	out := make([]int16, len(b)/2)
	for i := range out {
		out[i] = int16(binary.LittleEndian.Uint16(b[2*i:]))
	}
	return out, nil
}
