package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/uploadbox/uploadbox/capture"
	"github.com/uploadbox/uploadbox/capture/anon"
	"github.com/uploadbox/uploadbox/capture/recorder"
	"github.com/uploadbox/uploadbox/capture/segment"
	"github.com/uploadbox/uploadbox/internal/cli"
)

type recordOptions struct {
	source   string
	device   string
	size     string
	fps      int
	bitrate  string
	noAudio  bool
	duration time.Duration
	segment  time.Duration
	keys     sealingKeyFlags
	out      string
	anon     string
	masks    []string
}

func (o *recordOptions) AddFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&o.source, "source", "", "test (pattern and tone), camera (V4L2 camera and microphone) or image:PATH (a PNG or JPEG picture, panned slightly, and the tone; for tests)")
	f.StringVar(&o.device, "device", "/dev/video0", "camera device")
	f.StringVar(&o.size, "size", "1280x720", "video size WIDTHxHEIGHT")
	f.IntVar(&o.fps, "fps", 30, "video frame rate")
	f.StringVar(&o.bitrate, "bitrate", "2500k", "H.264 bitrate, e.g. 2500k or 2.5M")
	f.BoolVar(&o.noAudio, "no-audio", false, "record no audio: no microphone is opened at all")
	f.DurationVar(&o.duration, "duration", 0, "how long to record (Ctrl-C ends earlier)")
	f.DurationVar(&o.segment, "segment", 10*time.Second, "segment length")
	o.keys.AddFlags(cmd)
	f.StringVar(&o.out, "out", "", "spool directory for the sealed segments")
	f.StringVar(&o.anon, "anonymise", "off", "filter every frame before the encoder: off, whole (stylised) or masks (--mask rectangles filled black)")
	f.StringArrayVar(&o.masks, "mask", nil, "a rectangle X,Y,W,H in fractions of the frame for --anonymise masks (repeatable)")
	for _, name := range []string{"source", "duration", "out"} {
		cmd.MarkFlagRequired(name)
	}
}

func newRecordCommand() *cobra.Command {
	var o recordOptions
	cmd := &cobra.Command{
		Use:   "record --source test|camera|image:PATH --duration 30s --recipients-file org.pub --device-key dev.key --out DIR",
		Short: "Record in the foreground into sealed segments (no daemon, no upload)",
		Args:  cli.Args(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			capCfg, err := o.captureConfig()
			if err != nil {
				return err
			}
			rs, dev, err := o.keys.load()
			if err != nil {
				return err
			}
			defer dev.Destroy()
			out := cmd.OutOrStdout()
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			ctx, cancel := context.WithTimeout(ctx, o.duration)
			defer cancel()
			sealed, err := recorder.Record(ctx, capCfg, recorder.Config{
				Dir:        o.out,
				Recipients: rs,
				Device:     dev,
				Segment:    segment.Config{SegmentLength: o.segment},
				Logger:     slog.Default(),
				OnSealed: func(s recorder.Sealed) {
					last := ""
					if s.Last {
						last = ", last, ended: " + s.End.String()
					}
					fmt.Fprintf(out, "sealed %s (sequence %d, %d bytes%s)\n", s.Path, s.Sequence, s.Bytes, last)
				},
			}, func(id [16]byte) {
				fmt.Fprintf(out, "recording %x from %s into %s for %s\n", id, o.source, o.out, o.duration)
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "done: %d segments sealed\n", len(sealed))
			return nil
		},
	}
	o.AddFlags(cmd)
	return cmd
}

func (o *recordOptions) captureConfig() (capture.Config, error) {
	w, h, err := parseSize(o.size)
	if err != nil {
		return capture.Config{}, cli.Usagef("--size: %v", err)
	}
	br, err := parseBitrate(o.bitrate)
	if err != nil {
		return capture.Config{}, cli.Usagef("--bitrate: %v", err)
	}
	if o.duration <= 0 {
		return capture.Config{}, cli.Usagef("--duration must be positive")
	}
	if o.segment <= 0 {
		return capture.Config{}, cli.Usagef("--segment must be positive")
	}
	mode, err := anon.ParseMode(o.anon)
	if err != nil {
		return capture.Config{}, cli.Usagef("--anonymise: %v", err)
	}
	var masks []anon.Rect
	for _, m := range o.masks {
		r, err := parseMask(m)
		if err != nil {
			return capture.Config{}, cli.Usagef("--mask: %v", err)
		}
		masks = append(masks, r)
	}
	if mode == anon.Masks && len(masks) == 0 {
		return capture.Config{}, cli.Usagef("--anonymise masks needs at least one --mask X,Y,W,H")
	}
	if len(masks) > 0 && mode != anon.Masks {
		return capture.Config{}, cli.Usagef("--mask is only used with --anonymise masks")
	}
	source, image, isImage := strings.Cut(o.source, ":")
	if !isImage {
		source = o.source
	} else if source != capture.SourceImage {
		return capture.Config{}, cli.Usagef("--source %q: give test, camera or image:PATH", o.source)
	}
	cfg := capture.Config{
		Anonymise:   mode,
		Masks:       masks,
		Source:      source,
		Image:       image,
		Device:      o.device,
		Width:       w,
		Height:      h,
		FPS:         o.fps,
		Bitrate:     br,
		Audio:       !o.noAudio,
		KeyInterval: keyInterval(o.segment),
	}
	if err := cfg.Validate(); err != nil {
		return cfg, &cli.UsageError{Err: err}
	}
	return cfg, nil
}

func parseMask(s string) (anon.Rect, error) {
	parts := strings.Split(s, ",")
	var v [4]float64
	if len(parts) != 4 {
		return anon.Rect{}, fmt.Errorf("%q is not X,Y,W,H, e.g. 0.5,0,0.5,0.25", s)
	}
	for i, p := range parts {
		f, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil {
			return anon.Rect{}, fmt.Errorf("%q is not X,Y,W,H, e.g. 0.5,0,0.5,0.25", s)
		}
		v[i] = f
	}
	r := anon.Rect{X: v[0], Y: v[1], W: v[2], H: v[3]}
	return r, r.Check()
}

func parseSize(s string) (int, int, error) {
	ws, hs, ok := strings.Cut(strings.ToLower(s), "x")
	w, err1 := strconv.Atoi(ws)
	h, err2 := strconv.Atoi(hs)
	if !ok || err1 != nil || err2 != nil || w <= 0 || h <= 0 {
		return 0, 0, fmt.Errorf("%q is not WIDTHxHEIGHT, e.g. 1280x720", s)
	}
	return w, h, nil
}

// parseBitrate accepts 2500000, 2500k or 2.5M.
func parseBitrate(s string) (int, error) {
	mult := 1.0
	switch {
	case strings.HasSuffix(strings.ToLower(s), "k"):
		mult, s = 1e3, s[:len(s)-1]
	case strings.HasSuffix(strings.ToLower(s), "m"):
		mult, s = 1e6, s[:len(s)-1]
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("%q is not a bitrate such as 2500k or 2.5M", s)
	}
	return int(v * mult), nil
}

// keyInterval picks an IDR interval that divides the segment length, so
// segments are cut where asked: 2 s, 1 s or 500 ms, else the segment itself.
func keyInterval(segment time.Duration) time.Duration {
	for _, k := range []time.Duration{2 * time.Second, time.Second, 500 * time.Millisecond} {
		if segment%k == 0 {
			return k
		}
	}
	return segment
}
