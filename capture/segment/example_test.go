package segment_test

import (
	"bytes"
	"fmt"
	"time"

	"github.com/uploadbox/uploadbox/capture"
	"github.com/uploadbox/uploadbox/capture/segment"
)

// memory is an Output that keeps a segment in memory; the recorder's
// Output seals into a spool file and fsyncs at every Flush.
type memory struct{ *bytes.Buffer }

func (memory) Flush() error     { return nil }
func (memory) Close(bool) error { return nil }

// The recorder feeds the encoders' frames to one Segmenter and gets one
// standalone fMP4 file per segment.
func ExampleNew() {
	var frames <-chan capture.Frame // from the encoders' fan-out
	var segments []*bytes.Buffer
	s := segment.New(segment.Config{SegmentLength: 10 * time.Second, Audio: true},
		func(seq uint64, start time.Duration) (segment.Output, error) {
			b := new(bytes.Buffer)
			segments = append(segments, b)
			return memory{b}, nil
		})
	for f := range frames {
		if err := s.Write(f); err != nil {
			fmt.Println("recording stopped:", err)
			break
		}
	}
	if err := s.Close(); err != nil {
		fmt.Println(err)
	}
	fmt.Println(len(segments), "segments")
}
