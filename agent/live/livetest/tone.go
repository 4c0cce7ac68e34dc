package livetest

import (
	"encoding/binary"
	"math"
	"os"
)

// WriteToneWAV writes a sine tone of hz at rate samples per second, for
// the given number of seconds, as a 16-bit mono PCM WAV file: a fake
// microphone for Chromium (--use-file-for-fake-audio-capture=path).
func WriteToneWAV(path string, hz float64, rate, seconds int) error {
	n := rate * seconds
	b := make([]byte, 44+2*n)
	copy(b[0:], "RIFF")
	binary.LittleEndian.PutUint32(b[4:], uint32(36+2*n))
	copy(b[8:], "WAVEfmt ")
	binary.LittleEndian.PutUint32(b[16:], 16)
	binary.LittleEndian.PutUint16(b[20:], 1) // PCM
	binary.LittleEndian.PutUint16(b[22:], 1) // mono
	binary.LittleEndian.PutUint32(b[24:], uint32(rate))
	binary.LittleEndian.PutUint32(b[28:], uint32(2*rate))
	binary.LittleEndian.PutUint16(b[32:], 2)
	binary.LittleEndian.PutUint16(b[34:], 16)
	copy(b[36:], "data")
	binary.LittleEndian.PutUint32(b[40:], uint32(2*n))
	for i := range n {
		v := 0.5 * math.Sin(2*math.Pi*hz*float64(i)/float64(rate))
		binary.LittleEndian.PutUint16(b[44+2*i:], uint16(int16(v*math.MaxInt16)))
	}
	return os.WriteFile(path, b, 0o600)
}
