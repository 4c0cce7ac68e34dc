// Package capture turns a camera and a microphone (or the test pattern and
// tone) into encoded frames: one encoder per stream, whatever the number of
// consumers, with a fan-out that never blocks the encoder.
package capture
