package capture

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/capture/anon"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		errs []string // each must appear; none means valid
	}{
		{"test source with defaults", Config{Source: SourceTest}, nil},
		{"camera with defaults", Config{Source: SourceCamera, Audio: true}, nil},
		{"everything set", Config{Source: SourceCamera, Device: "/dev/video2", Width: 640, Height: 360, FPS: 15,
			Bitrate: 1_000_000, KeyInterval: time.Second, Audio: true, AudioDevice: "USB", Channels: 2, AudioBitrate: 64_000}, nil},
		{"missing source", Config{}, []string{"source: missing"}},
		{"unknown source", Config{Source: "usb"}, []string{`source: unknown source "usb"`}},
		{"image source", Config{Source: SourceImage, Image: "/usr/share/pic.png"}, nil},
		{"image source without a file", Config{Source: SourceImage}, []string{`image: missing: source "image" needs the path`}},
		{"relative device", Config{Source: SourceCamera, Device: "video0"}, []string{"device:"}},
		{"relative device ignored for the test source", Config{Source: SourceTest, Device: "video0"}, nil},
		{"odd size", Config{Source: SourceTest, Width: 641, Height: 361}, []string{"width: 641", "height: 361"}},
		{"too small", Config{Source: SourceTest, Width: 8, Height: -2}, []string{"width: 8", "height: -2"}},
		{"fps", Config{Source: SourceTest, FPS: 61}, []string{"fps: 61"}},
		{"bitrate", Config{Source: SourceTest, Bitrate: 50_000}, []string{"bitrate: 50000"}},
		{"key interval", Config{Source: SourceTest, KeyInterval: time.Hour}, []string{"key interval: 1h0m0s"}},
		{"key interval under a frame", Config{Source: SourceTest, FPS: 5, KeyInterval: 100 * time.Millisecond},
			[]string{"key interval: 100ms is shorter than one frame at 5 fps"}},
		{"channels", Config{Source: SourceTest, Channels: 6}, []string{"channels: 6"}},
		{"audio bitrate", Config{Source: SourceTest, AudioBitrate: 1}, []string{"audio bitrate: 1"}},
		{"every problem at once", Config{Source: "x", Width: 3, Height: 5, FPS: 100, Bitrate: -1, KeyInterval: -1, Channels: 3, AudioBitrate: -5},
			[]string{"source:", "width:", "height:", "fps:", "bitrate:", "key interval:", "channels:", "audio bitrate:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if len(tt.errs) == 0 {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate = nil, want errors about %v", tt.errs)
			}
			lines := strings.Split(err.Error(), "\n")
			if len(lines) != len(tt.errs) {
				t.Errorf("%d problems reported, want %d:\n%v", len(lines), len(tt.errs), err)
			}
			for _, want := range tt.errs {
				if !strings.Contains(err.Error(), "capture config: "+want) {
					t.Errorf("Validate = %q, want it to say %q", err, want)
				}
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	c := Config{Source: SourceTest, Channels: 2}.withDefaults()
	want := Config{Source: SourceTest, Device: DefaultDevice, Width: 1280, Height: 720, FPS: 30, Bitrate: 2_500_000,
		KeyInterval: 2 * time.Second, Channels: 2, AudioBitrate: 64_000, Anonymise: anon.Off}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("defaults = %+v, want %+v", c, want)
	}
	if c.keyFrames() != 60 || c.frameInterval() != time.Second/30 {
		t.Errorf("key frames %d, frame interval %v", c.keyFrames(), c.frameInterval())
	}
}
