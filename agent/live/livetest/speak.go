package livetest

import (
	"context"
	"errors"
	"math"
	"time"

	"github.com/pion/webrtc/v4/pkg/media"

	"github.com/uploadbox/uploadbox/agent/talkback"
)

// Speak sends d of a freq Hz tone (Opus, a packet every 20 ms, in real
// time) on the viewer's Mic, and returns when the first packet was sent.
// It stops early, without an error, when ctx ends.
func (v *Viewer) Speak(ctx context.Context, freq float64, d time.Duration) (time.Time, error) {
	if v.Mic == nil {
		return time.Time{}, errors.New("livetest: the viewer has no microphone (Options.Talk)")
	}
	enc, err := talkback.NewEncoder()
	if err != nil {
		return time.Time{}, err
	}
	defer enc.Close()
	pcm := make([]int16, talkback.FrameSamples)
	var first time.Time
	tick := time.NewTicker(talkback.Frame)
	defer tick.Stop()
	for i := range int(d / talkback.Frame) {
		for j := range pcm {
			n := i*len(pcm) + j
			pcm[j] = int16(12000 * math.Sin(2*math.Pi*freq*float64(n)/talkback.SampleRate))
		}
		pkt, err := enc.Encode(pcm)
		if err != nil {
			return first, err
		}
		if i == 0 {
			first = time.Now()
		}
		if err := v.Mic.WriteSample(media.Sample{Data: pkt, Duration: talkback.Frame}); err != nil {
			return first, err
		}
		select {
		case <-ctx.Done():
			return first, nil
		case <-tick.C:
		}
	}
	return first, nil
}
