package talkback

// The Opus decoder (and the encoder the tests and the bench speak with)
// come from the static libopus that pion/mediadevices links for the
// recorder's encoder: its archive for each platform holds the whole
// library, decoder included, and its cgo LDFLAGS put it on the link line of
// every binary that imports the package. So this file declares the few
// libopus functions it calls (with the types of opus.h: opus_int32 is a
// 32-bit int, opus_int16 a short) and links nothing itself; the blank
// import below makes sure the archive is there. No second copy of libopus,
// no system package, and the arm64 and armhf cross builds use the archives
// mediadevices ships for them.

/*
#include <stdint.h>

typedef struct OpusDecoder OpusDecoder;
typedef struct OpusEncoder OpusEncoder;

OpusDecoder *opus_decoder_create(int32_t Fs, int channels, int *error);
int opus_decode(OpusDecoder *st, const unsigned char *data, int32_t len, int16_t *pcm, int frame_size, int decode_fec);
void opus_decoder_destroy(OpusDecoder *st);

OpusEncoder *opus_encoder_create(int32_t Fs, int channels, int application, int *error);
int32_t opus_encode(OpusEncoder *st, const int16_t *pcm, int frame_size, unsigned char *data, int32_t max_data_bytes);
void opus_encoder_destroy(OpusEncoder *st);

const char *opus_strerror(int error);
*/
import "C"

import (
	"errors"
	"fmt"
	"unsafe"

	_ "github.com/pion/mediadevices/pkg/codec/opus" // links the static libopus this file calls
)

// Audio format of the decoded voice and of every sink.
const (
	SampleRate = 48000
	// FrameSamples is one 20 ms frame at SampleRate, mono.
	FrameSamples = SampleRate / 50
	// maxFrame is the longest Opus frame (120 ms).
	maxFrame = SampleRate * 120 / 1000
	// opusApplicationVoIP is OPUS_APPLICATION_VOIP of opus_defines.h.
	opusApplicationVoIP = 2048
)

func opusError(code C.int) error { return errors.New(C.GoString(C.opus_strerror(code))) }

// Decoder decodes one viewer's Opus stream to 48 kHz mono. It is not safe
// for concurrent use.
type Decoder struct {
	st  *C.OpusDecoder
	pcm []int16
}

// NewDecoder creates a decoder; Close frees it.
func NewDecoder() (*Decoder, error) {
	var code C.int
	st := C.opus_decoder_create(SampleRate, 1, &code)
	if st == nil || code != 0 {
		return nil, fmt.Errorf("opus decoder: %w", opusError(code))
	}
	return &Decoder{st: st, pcm: make([]int16, maxFrame)}, nil
}

// Decode decodes one packet. The samples returned are valid until the next
// call.
func (d *Decoder) Decode(packet []byte) ([]int16, error) {
	if len(packet) == 0 {
		return nil, errors.New("opus decode: empty packet")
	}
	n := C.opus_decode(d.st, (*C.uchar)(unsafe.Pointer(&packet[0])), C.int32_t(len(packet)),
		(*C.int16_t)(unsafe.Pointer(&d.pcm[0])), C.int(len(d.pcm)), 0)
	if n < 0 {
		return nil, fmt.Errorf("opus decode of a %d-byte packet: %w", len(packet), opusError(n))
	}
	return d.pcm[:n], nil
}

// Close frees the decoder.
func (d *Decoder) Close() {
	if d.st != nil {
		C.opus_decoder_destroy(d.st)
		d.st = nil
	}
}

// Encoder encodes 48 kHz mono to Opus (VoIP mode): the coach the tests and
// the bench speak with. It is not safe for concurrent use.
type Encoder struct {
	st  *C.OpusEncoder
	out []byte
}

// NewEncoder creates an encoder; Close frees it.
func NewEncoder() (*Encoder, error) {
	var code C.int
	st := C.opus_encoder_create(SampleRate, 1, opusApplicationVoIP, &code)
	if st == nil || code != 0 {
		return nil, fmt.Errorf("opus encoder: %w", opusError(code))
	}
	return &Encoder{st: st, out: make([]byte, 4000)}, nil
}

// Encode encodes one frame (FrameSamples samples: 20 ms) and returns the
// packet.
func (e *Encoder) Encode(pcm []int16) ([]byte, error) {
	if len(pcm) != FrameSamples {
		return nil, fmt.Errorf("opus encode: %d samples, want %d (20 ms)", len(pcm), FrameSamples)
	}
	n := C.opus_encode(e.st, (*C.int16_t)(unsafe.Pointer(&pcm[0])), C.int(len(pcm)),
		(*C.uchar)(unsafe.Pointer(&e.out[0])), C.int32_t(len(e.out)))
	if n < 0 {
		return nil, fmt.Errorf("opus encode: %w", opusError(C.int(n)))
	}
	return append([]byte(nil), e.out[:n]...), nil
}

// Close frees the encoder.
func (e *Encoder) Close() {
	if e.st != nil {
		C.opus_encoder_destroy(e.st)
		e.st = nil
	}
}
