// Package capture turns a camera and a microphone (or the test pattern and
// tone) into encoded frames: one encoder per stream, whatever the number of
// consumers, with a fan-out that never blocks the encoder.
//
// Open checks the Config, opens the sources (a V4L2 camera through
// blackjack/webcam, a microphone through malgo, or the built-in test
// pattern and tone; nothing is registered or opened at import time) and
// builds the encoders: openh264 for H.264 at the configured bitrate, with
// frame skipping off and an IDR frame every KeyInterval, and Opus in 20 ms
// packets at 48 kHz. Run starts the recording clock and captures until
// its context ends.
//
// Every Frame carries its capture time on the recording clock. A video
// frame is one Annex-B access unit; openh264 puts SPS and PPS in front of
// every IDR, so each IDR frame starts a decodable stream on its own.
// Consumers Subscribe: a Lossless subscription (the recorder) queues
// without bound and never loses a frame; a Live subscription (a viewer)
// has a bounded queue and, when it falls behind, skips to the next
// keyframe. RequestKeyframe forces an IDR for a viewer that joins late, at
// most one per KeyframeMinInterval.
//
// EncodeOnly runs the sources and encoders alone, the baseline for
// benchmarks.
package capture
