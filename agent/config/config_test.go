package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// The packaged default config must load as is and equal the built-in
// defaults, apart from the keys it sets on purpose.
func TestPackagedDefaultLoads(t *testing.T) {
	c, err := Load("../../packaging/uploadbox.yaml", []string{})
	if err != nil {
		t.Fatal(err)
	}
	d := Default()
	if !reflect.DeepEqual(c.Capture, *d.withAudio(c.Capture.Audio)) || c.Recording != d.Recording || c.Spool != d.Spool || c.Audit != d.Audit {
		t.Errorf("packaged config differs from the defaults:\n%+v\n%+v", c, d)
	}
	if c.Live.Enabled {
		t.Error("the packaged config turns live view on; it must be off by default")
	}
	if c.Metrics.Listen != "127.0.0.1:9464" {
		t.Errorf("metrics listen %q, want localhost only", c.Metrics.Listen)
	}
	if c.Control.Group != "uploadbox" || c.SocketPath() != "/run/uploadbox/control.sock" {
		t.Errorf("control: %+v, socket %s", c.Control, c.SocketPath())
	}
}

func (c *Config) withAudio(p *bool) *Capture {
	cp := c.Capture
	cp.Audio = p
	return &cp
}

func TestEmptyFileIsDefaults(t *testing.T) {
	c, err := Parse(nil, []string{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Recording.Segment.D() != 10*time.Second || !c.AudioOn() || !c.UploadOn() || c.Spool.MaxSize != 8<<30 {
		t.Errorf("defaults: %+v", c)
	}
}

// Every problem is reported at once, each with its key (and line).
func TestEveryProblemNamed(t *testing.T) {
	src := `
state_dir: relative/state
capture:
  sourc: test
  fps: 0
  bitrate: fast
  width: 641
recording:
  segment: 1s
spool:
  max_size: lots
live:
  stun: [http://x]
log:
  level: loud
bogus: 1
`
	_, err := Parse([]byte(src), []string{})
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v, want *Error", err)
	}
	msg := err.Error()
	// decode problems come first; value checks only run on a file that decodes
	for _, want := range []string{
		"capture.sourc (line 4): unknown key (did you mean capture.source?)",
		"capture.bitrate (line 6):", `"fast" is not a bitrate`,
		"spool.max_size (line 11):", `"lots" is not a size`,
		"bogus (line 16): unknown key",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if len(ce.Problems) != 4 {
		t.Errorf("%d problems, want 4:\n%s", len(ce.Problems), msg)
	}

	// the same file with decodable values: every value problem at once
	src = strings.NewReplacer("sourc:", "source:", "fast", "2M", "lots", "1GiB", "bogus: 1", "").Replace(src)
	_, err = Parse([]byte(src), []string{})
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v, want *Error", err)
	}
	msg = err.Error()
	for _, want := range []string{"state_dir (line 2):", "capture.fps (line 5):", "capture.width (line 7):", "recording.segment (line 9):", "shorter than capture.key_interval", "live.stun[0] (line 13):", "log.level (line 15):"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if len(ce.Problems) != 6 {
		t.Errorf("%d problems, want 6:\n%s", len(ce.Problems), msg)
	}
}

func TestEnvOverrides(t *testing.T) {
	c, err := Parse([]byte("capture:\n  source: camera\n"), []string{
		"UPLOADBOX_CAPTURE_SOURCE=test", "UPLOADBOX_CAPTURE_AUDIO=false", "UPLOADBOX_SPOOL_MAX_SIZE=2GiB",
		"UPLOADBOX_RECORDING_SEGMENT=4s", "PATH=/bin", "UPLOADBOX_CONFIG=/x.yaml",
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.Capture.Source != "test" || c.AudioOn() || c.Spool.MaxSize != 2<<30 || c.Recording.Segment.D() != 4*time.Second {
		t.Errorf("overrides not applied: %+v", c)
	}
	_, err = Parse(nil, []string{"UPLOADBOX_CAPTURE_SORCE=test", "UPLOADBOX_CAPTURE_FPS=many"})
	if err == nil || !strings.Contains(err.Error(), "UPLOADBOX_CAPTURE_SORCE: environment override names no config key") ||
		!strings.Contains(err.Error(), "capture.fps: from UPLOADBOX_CAPTURE_FPS") {
		t.Errorf("bad overrides: %v", err)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"), []string{})
	if err == nil || !strings.Contains(err.Error(), "does not exist") || !strings.Contains(err.Error(), "--config") {
		t.Errorf("err = %v", err)
	}
	p := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(p, []byte("capture: [1, 2\n"), 0o600)
	_, err = Load(p, []string{})
	if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "not valid YAML") {
		t.Errorf("err = %v", err)
	}
}

func TestUnits(t *testing.T) {
	for in, want := range map[string]time.Duration{"180d": 180 * 24 * time.Hour, "45m": 45 * time.Minute, "1h30m": 90 * time.Minute} {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v", in, got, err)
		}
	}
	for in, want := range map[string]int64{"8GiB": 8 << 30, "500MB": 500e6, "1.5GiB": 3 << 29, "123": 123} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %v, %v", in, got, err)
		}
	}
	for in, want := range map[string]int{"2500k": 2_500_000, "2.5M": 2_500_000, "64000": 64000} {
		if got, err := ParseBitrate(in); err != nil || got != want {
			t.Errorf("ParseBitrate(%q) = %v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"-1s", "soon", "1x"} {
		if _, err := ParseDuration(bad); err == nil {
			t.Errorf("ParseDuration(%q) accepted", bad)
		}
	}
	if Size(8<<30).String() != "8GiB" || Duration(180*24*time.Hour).String() != "180d" || Bitrate(2_500_000).String() != "2500k" {
		t.Error("String forms")
	}
}

// The live view's connection limits default to safe values and refuse
// values that would leave idle or slow connections open for ever.
func TestLiveConnectionLimits(t *testing.T) {
	c, err := Parse(nil, []string{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Live.IdleTimeout.D() != time.Minute || c.Live.ReadTimeout.D() != 10*time.Second || c.Live.MaxConnsPerAddress != 16 {
		t.Errorf("live defaults: %+v", c.Live)
	}
	tests := []struct{ name, src, want string }{
		{"idle zero", "live:\n  idle_timeout: 0s\n", "live.idle_timeout (line 2):"},
		{"idle too long", "live:\n  idle_timeout: 2h\n", "live.idle_timeout (line 2):"},
		{"read zero", "live:\n  read_timeout: 0s\n", "live.read_timeout (line 2):"},
		{"no connections", "live:\n  max_conns_per_address: 0\n", "live.max_conns_per_address (line 2):"},
		{"talk-back relative file", "live:\n  talkback_device: file:talk.wav\n", "live.talkback_device (line 2): \"talk.wav\" is not an absolute path"},
		{"talk-back empty file", "live:\n  talkback_device: \"file:\"\n", "live.talkback_device (line 2): required"},
		{"talk-back control character", "live:\n  talkback_device: \"hw:0\\t1\"\n", "live.talkback_device (line 2):"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Parse([]byte(tt.src), []string{}); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one naming %s", err, tt.want)
			}
		})
	}
}

// The decline cooldown defaults to 10 minutes and is bounded; remote
// decisions are on unless turned off.
func TestConsentConfig(t *testing.T) {
	c, err := Parse(nil, []string{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Consent.DeclineCooldown.D() != 10*time.Minute || !c.RemoteDecisionsOn() {
		t.Errorf("consent defaults: cooldown %s, remote decisions %t", c.Consent.DeclineCooldown, c.RemoteDecisionsOn())
	}
	c, err = Parse([]byte("consent:\n  decline_cooldown: 30m\n  remote_decisions: false\n"), []string{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Consent.DeclineCooldown.D() != 30*time.Minute || c.RemoteDecisionsOn() {
		t.Errorf("consent: %+v", c.Consent)
	}
	for _, src := range []string{"consent:\n  decline_cooldown: 0s\n", "consent:\n  decline_cooldown: 2d\n", "consent:\n  decline_cooldown: soon\n"} {
		if _, err := Parse([]byte(src), []string{}); err == nil || !strings.Contains(err.Error(), "consent.decline_cooldown") {
			t.Errorf("%q: error %v, want one naming consent.decline_cooldown", src, err)
		}
	}
}

// recording.anonymise defaults to off; masks mode needs capture.masks, and
// every bad mode or mask is named with its key and line.
func TestAnonymiseConfig(t *testing.T) {
	c, err := Parse(nil, []string{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Recording.Anonymise != "off" || len(c.AnonMasks()) != 0 {
		t.Errorf("anonymise default %q, masks %v", c.Recording.Anonymise, c.AnonMasks())
	}
	c, err = Parse([]byte("recording:\n  anonymise: masks\ncapture:\n  masks:\n    - {x: 0.5, y: 0, w: 0.5, h: 0.25}\n"), []string{})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.AnonMasks(); len(got) != 1 || got[0].X != 0.5 || got[0].W != 0.5 || got[0].H != 0.25 {
		t.Errorf("masks %+v", got)
	}
	if c, err = Parse(nil, []string{"UPLOADBOX_RECORDING_ANONYMISE=whole"}); err != nil || c.Recording.Anonymise != "whole" {
		t.Errorf("env override: %v, %+v", err, c)
	}
	// A value from the environment is not the file's: no line.
	_, err = Parse([]byte("recording:\n  anonymise: whole\n"), []string{"UPLOADBOX_RECORDING_ANONYMISE=blur"})
	if err == nil || !strings.Contains(err.Error(), `recording.anonymise: "blur"`) {
		t.Errorf("env override blur: %v", err)
	}
	tests := []struct{ name, src, want string }{
		{"unknown mode", "recording:\n  anonymise: blur\n", `recording.anonymise (line 2): "blur": use off, whole or masks`},
		{"masks without masks", "recording:\n  anonymise: masks\n", "recording.anonymise (line 2): masks needs at least one rectangle in capture.masks"},
		{"mask outside", "capture:\n  masks:\n    - {x: 0.8, y: 0, w: 0.5, h: 0.5}\n", "capture.masks[0] (line 3): mask {x: 0.8"},
		{"empty mask", "capture:\n  masks:\n    - {x: 0, y: 0, w: 0.5, h: 0.5}\n    - {x: 0, y: 0, w: 0, h: 0.5}\n", "capture.masks[1] (line 4): mask {x: 0, y: 0, w: 0,"},
		{"mask typo", "capture:\n  masks:\n    - {x: 0, y: 0, width: 0.5, h: 0.5}\n", "capture.masks[0].width (line 3): unknown key"},
		{"not a list", "capture:\n  masks: {x: 0}\n", "capture.masks (line 2): expected a list"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Parse([]byte(tt.src), []string{}); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one with %q", err, tt.want)
			}
		})
	}
}

// live.talkback_device: off, a device name or an absolute file (the
// refused values are in TestLiveConnectionLimits).
func TestTalkbackDevice(t *testing.T) {
	for _, src := range []string{"", "live:\n  talkback_device: plughw:CARD=Headphones,DEV=0\n", "live:\n  talkback_device: file:/tmp/talk.wav\n"} {
		if _, err := Parse([]byte(src), []string{}); err != nil {
			t.Errorf("%q: %v", src, err)
		}
	}
}
