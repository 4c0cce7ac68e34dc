package capture

import "time"

// Kind is the media kind of a frame.
type Kind uint8

// The two kinds of stream a box records.
const (
	Video Kind = iota + 1
	Audio
)

func (k Kind) String() string {
	switch k {
	case Video:
		return "video"
	case Audio:
		return "audio"
	default:
		return "unknown"
	}
}

// Frame is one encoded unit as it leaves the single encoder of its stream:
// an H.264 access unit or an Opus packet. Frames are shared by every
// consumer of the stream and must be treated as read-only.
type Frame struct {
	Kind Kind
	// Data is, for video, one H.264 access unit in Annex-B form (start
	// codes before every NAL unit; an IDR access unit carries SPS and PPS);
	// for audio, one Opus packet.
	Data []byte
	// Time is the capture time of the frame's first sample on the
	// recording's monotonic clock, counted from the clock's start. It never
	// goes backwards within a stream.
	Time time.Duration
	// Duration is how long the frame plays: for audio the packet length
	// (20 ms), for video the nominal frame interval.
	Duration time.Duration
	// Key is true for a video IDR access unit; always true for audio.
	Key bool
}
