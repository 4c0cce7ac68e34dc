package capture_test

import (
	"context"
	"fmt"
	"time"

	"github.com/uploadbox/uploadbox/capture"
)

// A recorder and a live viewer share the single encoder of each stream.
func ExampleCapture_Subscribe() {
	c, err := capture.Open(capture.Config{Source: capture.SourceTest, Width: 640, Height: 360, FPS: 15, Audio: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	rec := c.Subscribe(capture.SubscribeOptions{})                    // lossless: never drops
	live := c.Subscribe(capture.SubscribeOptions{Mode: capture.Live}) // drops to the next keyframe when behind

	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	done := make(chan error)
	go func() { done <- c.Run(ctx) }()

	go func() {
		for range live.Frames() {
			// send to a WebRTC track
		}
	}()
	video := 0
	for f := range rec.Frames() { // closed after the last frame
		if f.Kind == capture.Video {
			video++
		}
	}
	if err := <-done; err != nil {
		fmt.Println(err)
	}
	fmt.Println(video >= 14)
	// Output: true
}
