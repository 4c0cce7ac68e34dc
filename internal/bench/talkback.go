package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/uploadbox/uploadbox/agent/live/livetest"
	"github.com/uploadbox/uploadbox/agent/talkback"
)

// talkbackBench measures talk-back's mouth-to-ear latency through the
// daemon: a pion coach whose grant has --talk starts a 440 Hz tone (Opus,
// 20 ms packets); the latency is the time from its first packet to the
// first 440 Hz sample the box plays. The box plays into a WAV file sink,
// written in real time a 20 ms frame at a time: the round starts right
// after the file grew, so the file's length then is "now", and a sample's
// position after it, plus the frame it waits to be written, is when it is
// played. Median of rounds.
func talkbackBench(bin string, rounds int) error {
	dir, err := os.MkdirTemp("", "uploadbox-bench-talkback-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	wav := filepath.Join(dir, "talk.wav")
	box, liveAddr, err := startLiveBox(bin, dir, "talkback_device: \"file:"+wav+"\"")
	if err != nil {
		return err
	}
	defer box.stop()
	client := box.liveClient()
	tok, err := box.viewerToken("coach")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	opts := livetest.Options{Audio: true, Talk: true, Loopback: true}
	r, err := livetest.Offer(ctx, client, "https://"+liveAddr+"/whep", tok, opts)
	if err != nil {
		return err
	}
	r.Viewer.Close()
	id, err := box.pending("coach")
	if err != nil || id == "" {
		return fmt.Errorf("no pending request: %v", err)
	}
	if out, err := box.ctl("consent", "accept", id, "--talk"); err != nil {
		return fmt.Errorf("accept: %v: %s", err, out)
	}
	r, err = livetest.Offer(ctx, client, "https://"+liveAddr+"/whep", tok, opts)
	if err != nil || r.Status != http.StatusCreated || r.Header.Get("Talk") != "allowed" {
		return fmt.Errorf("the coach's offer: %v %d %q", err, r.Status, r.Header.Get("Talk"))
	}
	defer r.Viewer.Close()
	if _, err := r.Viewer.WaitPackets(ctx, "video"); err != nil {
		return err
	}
	played := func() int64 {
		fi, err := os.Stat(wav)
		if err != nil {
			return 0
		}
		return (fi.Size() - 44) / 2
	}
	var lat []time.Duration
	for i := range rounds {
		time.Sleep(talkback.FloorIdle + 500*time.Millisecond) // the floor is free again
		for p := played(); played() == p; {
			time.Sleep(200 * time.Microsecond)
		}
		from, at := played(), time.Now()
		first, err := r.Viewer.Speak(ctx, 440, 600*time.Millisecond)
		if err != nil {
			return err
		}
		time.Sleep(300 * time.Millisecond)
		pcm, err := talkback.ReadWAV(wav)
		if err != nil {
			return err
		}
		// A 10 ms window stepped by 1 ms passes the threshold once about
		// 1.7 ms of the full tone is in it.
		const win = talkback.SampleRate / 100
		onset := -1
		for j := int(from) - win; j+win <= len(pcm); j += win / 10 {
			if talkback.Power(pcm[j:j+win], 440) > 1e6 {
				onset = max(int(from), j+win*83/100)
				break
			}
		}
		if onset < 0 {
			return fmt.Errorf("round %d: no 440 Hz in what the box played", i)
		}
		// The frame that ended at sample from was written at at: sample
		// p is written a frame after its place, at + (p-from)/rate + Frame
		// (as a sound card would start playing it).
		played := time.Duration(onset-int(from))*time.Second/talkback.SampleRate + talkback.Frame
		lat = append(lat, played-first.Sub(at))
	}
	slices.Sort(lat)
	fmt.Printf("talk-back through the daemon (pion coach, Opus 20 ms packets, loopback, WAV sink; %d rounds):\n", rounds)
	fmt.Printf("  tone start -> first 440 Hz sample played, median  %5.0f ms   (goal <= 150; range %.0f–%.0f; one packet is 20 ms)\n",
		ms(lat[len(lat)/2]), ms(lat[0]), ms(lat[len(lat)-1]))
	return nil
}
