// Package config is the daemon's typed configuration: one YAML file, checked
// strictly (an unknown key or a bad value is an error that names the key),
// with environment overrides under one prefix.
package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode"

	"github.com/uploadbox/uploadbox/capture/anon"
	"github.com/uploadbox/uploadbox/internal/confcheck"
)

// EnvPrefix is the prefix of environment overrides: UPLOADBOX_CAPTURE_SOURCE
// overrides capture.source, UPLOADBOX_SPOOL_MAX_SIZE overrides spool.max_size.
const EnvPrefix = "UPLOADBOX_"

// DefaultPath is where the packaged config lives.
const DefaultPath = "/etc/uploadbox/uploadbox.yaml"

// Config is the whole daemon configuration. Every field has a yaml key; the
// zero value of a field means its default (see Default).
type Config struct {
	// StateDir holds what enrollment left: device key and certificate,
	// receiver CA, receipt key, organisation recipients.
	StateDir string `yaml:"state_dir"`
	// RuntimeDir holds the control socket.
	RuntimeDir string    `yaml:"runtime_dir"`
	Capture    Capture   `yaml:"capture"`
	Recording  Recording `yaml:"recording"`
	Spool      Spool     `yaml:"spool"`
	Upload     Upload    `yaml:"upload"`
	Link       Link      `yaml:"link"`
	Control    Control   `yaml:"control"`
	Metrics    Metrics   `yaml:"metrics"`
	Live       Live      `yaml:"live"`
	Consent    Consent   `yaml:"consent"`
	Indicator  Indicator `yaml:"indicator"`
	Audit      Audit     `yaml:"audit"`
	Log        Log       `yaml:"log"`
}

// Capture chooses the sources and encoders.
type Capture struct {
	// Source is "camera" (V4L2 camera and microphone) or "test" (pattern and tone).
	Source string `yaml:"source"`
	// Device is the camera's V4L2 device.
	Device string `yaml:"device"`
	Width  int    `yaml:"width"`
	Height int    `yaml:"height"`
	FPS    int    `yaml:"fps"`
	// Bitrate of the H.264 stream, e.g. 2500k.
	Bitrate Bitrate `yaml:"bitrate"`
	// KeyInterval is the time between IDR frames; segments are cut at them.
	KeyInterval Duration `yaml:"key_interval"`
	// Audio turns the microphone on. Off opens no microphone at all.
	Audio        *bool   `yaml:"audio"`
	AudioDevice  string  `yaml:"audio_device"`
	Channels     int     `yaml:"channels"`
	AudioBitrate Bitrate `yaml:"audio_bitrate"`
	// Masks are the rectangles recording.anonymise: masks fills opaque.
	Masks []Mask `yaml:"masks"`
}

// Mask is a rectangle in fractions of the frame: x and y of its top left
// corner, w and h its size, each from 0 to 1.
type Mask struct {
	X float64 `yaml:"x"`
	Y float64 `yaml:"y"`
	W float64 `yaml:"w"`
	H float64 `yaml:"h"`
}

// AnonMasks returns the masks as the filter takes them.
func (c *Config) AnonMasks() []anon.Rect {
	var rs []anon.Rect
	for _, m := range c.Capture.Masks {
		rs = append(rs, anon.Rect{X: m.X, Y: m.Y, W: m.W, H: m.H})
	}
	return rs
}

// Recording sets segment and session lengths.
type Recording struct {
	// Segment is the length of one sealed segment.
	Segment Duration `yaml:"segment"`
	// SessionDefault is the length of a session started without --for.
	SessionDefault Duration `yaml:"session_default"`
	// SessionMax is the longest session that may be started.
	SessionMax Duration `yaml:"session_max"`
	// Anonymise is the default filter of a session's frames before the
	// encoder: off, whole or masks (capture.masks).
	Anonymise string `yaml:"anonymise"`
}

// Spool is the local queue of sealed segments.
type Spool struct {
	Dir string `yaml:"dir"`
	// MaxSize caps the segments not yet wiped; recording stops when reached.
	MaxSize Size `yaml:"max_size"`
	// MinFree is the free space the filesystem keeps; recording stops when reached.
	MinFree Size `yaml:"min_free"`
}

// Upload drives the uploader.
type Upload struct {
	// Enabled turns background upload on (default true).
	Enabled *bool `yaml:"enabled"`
	// RetryMax is the longest wait between two attempts.
	RetryMax Duration `yaml:"retry_max"`
}

// Link is the control connection: one WebSocket the enrolled box keeps
// open to its receiver over its mutual TLS.
type Link struct {
	// Enabled turns the control connection on once the box is enrolled
	// (default true).
	Enabled *bool `yaml:"enabled"`
	// PingInterval is how often the box pings; a ping unanswered within
	// PingTimeout ends the connection and the box reconnects.
	PingInterval Duration `yaml:"ping_interval"`
	PingTimeout  Duration `yaml:"ping_timeout"`
	// RetryMax caps the backoff between attempts.
	RetryMax Duration `yaml:"retry_max"`
}

// Control is the unix socket the CLI talks to.
type Control struct {
	// Socket path; default RuntimeDir/control.sock.
	Socket string `yaml:"socket"`
	// Group that may use the socket (mode 0660); empty keeps the daemon's group.
	Group string `yaml:"group"`
}

// Metrics is the Prometheus endpoint.
type Metrics struct {
	// Listen address; empty turns metrics off. Default 127.0.0.1:9464.
	Listen string `yaml:"listen"`
}

// Live is the consent-gated WHEP live view.
type Live struct {
	// Enabled turns the live view on (default off).
	Enabled bool `yaml:"enabled"`
	// Listen is the HTTPS address of the WHEP endpoint and viewer page.
	Listen     string   `yaml:"listen"`
	MaxViewers int      `yaml:"max_viewers"`
	STUN       []string `yaml:"stun"`
	TURN       []TURN   `yaml:"turn"`
	// GrantDefault is the length of a grant accepted without --for.
	GrantDefault Duration `yaml:"grant_default"`
	// IdleTimeout closes a connection that waits this long for its next
	// request (default 60s).
	IdleTimeout Duration `yaml:"idle_timeout"`
	// ReadTimeout bounds reading a request's headers and body (default
	// 10s); an offer held for the teacher's decision is not cut by it.
	ReadTimeout Duration `yaml:"read_timeout"`
	// MaxConnsPerAddress caps the open connections from one remote
	// address (default 16); more are closed at once.
	MaxConnsPerAddress int `yaml:"max_conns_per_address"`
	// TalkbackDevice is where a viewer allowed to speak is played
	// (talk-back): an ALSA playback device name, "default", or
	// "file:PATH", a WAV file (tests); empty: talk-back off.
	TalkbackDevice string `yaml:"talkback_device"`
}

// TURN is one TURN server.
type TURN struct {
	URL      string `yaml:"url"`
	Username string `yaml:"username"`
	// CredentialFile holds the TURN password (never the config itself).
	CredentialFile string `yaml:"credential_file"`
}

// Consent is how the teacher's decisions on live viewing are taken.
type Consent struct {
	// DeclineCooldown is how long a viewer the teacher declined, revoked
	// or ended is refused without a new request (default 10m).
	DeclineCooldown Duration `yaml:"decline_cooldown"`
	// RemoteDecisions accepts decisions signed by the receiver for a
	// teacher account (default true); false leaves the control socket
	// only.
	RemoteDecisions *bool `yaml:"remote_decisions"`
	// Button is the optional consent button (button.go).
	Button Button `yaml:"button"`
}

// Indicator is the privacy LED.
type Indicator struct {
	// Path of a sysfs LED brightness file (or any file, in tests); empty: none.
	Path string `yaml:"path"`
}

// Audit is the box's hash-chained audit log.
type Audit struct {
	Path      string   `yaml:"path"`
	Retention Duration `yaml:"retention"`
	// CheckpointEvery is how often the log's head is signed with the
	// device key and sent to the receiver (at most 10m; also at stop).
	CheckpointEvery Duration `yaml:"checkpoint_every"`
}

// Log sets the daemon's log output.
type Log struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is text or json.
	Format string `yaml:"format"`
}

// Default returns the configuration used for every key a file leaves out.
func Default() *Config {
	yes := true
	return &Config{
		StateDir:   "/var/lib/uploadbox/state",
		RuntimeDir: "/run/uploadbox",
		Capture: Capture{
			Source: "camera", Device: "/dev/video0", Width: 1280, Height: 720, FPS: 30,
			Bitrate: 2_500_000, KeyInterval: Duration(2 * time.Second), Audio: &yes,
			Channels: 1, AudioBitrate: 32_000,
		},
		Recording: Recording{
			Segment:        Duration(10 * time.Second),
			SessionDefault: Duration(60 * time.Minute),
			SessionMax:     Duration(8 * time.Hour),
			Anonymise:      string(anon.Off),
		},
		Spool:   Spool{Dir: "/var/lib/uploadbox/spool", MaxSize: 8 << 30, MinFree: 512 << 20},
		Upload:  Upload{Enabled: &yes, RetryMax: Duration(5 * time.Minute)},
		Link:    Link{Enabled: &yes, PingInterval: Duration(10 * time.Second), PingTimeout: Duration(10 * time.Second), RetryMax: Duration(60 * time.Second)},
		Control: Control{Group: ""},
		Metrics: Metrics{Listen: "127.0.0.1:9464"},
		Live: Live{
			Listen: "0.0.0.0:8444", MaxViewers: 4, GrantDefault: Duration(60 * time.Minute),
			IdleTimeout: Duration(60 * time.Second), ReadTimeout: Duration(10 * time.Second), MaxConnsPerAddress: 16,
		},
		Consent: Consent{DeclineCooldown: Duration(10 * time.Minute), RemoteDecisions: &yes,
			Button: Button{Line: 17, ActiveLow: true, Debounce: Duration(30 * time.Millisecond)}},
		Audit: Audit{Path: "/var/lib/uploadbox/audit.jsonl", Retention: Duration(180 * 24 * time.Hour), CheckpointEvery: Duration(10 * time.Minute)},
		Log:   Log{Level: "info", Format: "text"},
	}
}

// SocketPath is the control socket's path.
func (c *Config) SocketPath() string {
	if c.Control.Socket != "" {
		return c.Control.Socket
	}
	return filepath.Join(c.RuntimeDir, "control.sock")
}

// AudioOn reports whether audio is recorded.
func (c *Config) AudioOn() bool { return c.Capture.Audio == nil || *c.Capture.Audio }

// RemoteDecisionsOn reports whether the box takes the teacher's decisions
// signed by the receiver.
func (c *Config) RemoteDecisionsOn() bool {
	return c.Consent.RemoteDecisions == nil || *c.Consent.RemoteDecisions
}

// UploadOn reports whether background upload runs.
func (c *Config) UploadOn() bool { return c.Upload.Enabled == nil || *c.Upload.Enabled }

// LinkOn reports whether the control connection runs (once enrolled).
func (c *Config) LinkOn() bool { return c.Link.Enabled == nil || *c.Link.Enabled }

// Problem is one thing wrong with a config, at its key.
type Problem = confcheck.Problem

// Error lists every problem of a config file.
type Error = confcheck.Error

// Validate checks values and the relations between them. It returns every
// problem found, each naming its key.
func (c *Config) Validate() []Problem {
	var ps []Problem
	add := func(key, format string, args ...any) {
		ps = append(ps, Problem{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	abs := func(key, path string, required bool) {
		if path == "" {
			if required {
				add(key, "required (an absolute path)")
			}
			return
		}
		if !filepath.IsAbs(path) {
			add(key, "%q is not an absolute path", path)
		}
	}
	abs("state_dir", c.StateDir, true)
	abs("runtime_dir", c.RuntimeDir, true)
	abs("spool.dir", c.Spool.Dir, true)
	abs("control.socket", c.Control.Socket, false)
	abs("indicator.path", c.Indicator.Path, false)
	abs("audit.path", c.Audit.Path, true)

	cp := c.Capture
	switch cp.Source {
	case "camera", "test":
	default:
		add("capture.source", "%q is not a source: use camera or test", cp.Source)
	}
	if cp.Source == "camera" && cp.Device == "" {
		add("capture.device", "required for the camera source (e.g. /dev/video0)")
	}
	if cp.Width < 16 || cp.Width > 3840 || cp.Width%2 != 0 {
		add("capture.width", "%d: use an even number from 16 to 3840", cp.Width)
	}
	if cp.Height < 16 || cp.Height > 2160 || cp.Height%2 != 0 {
		add("capture.height", "%d: use an even number from 16 to 2160", cp.Height)
	}
	if cp.FPS < 1 || cp.FPS > 60 {
		add("capture.fps", "%d: use 1 to 60", cp.FPS)
	}
	if cp.Bitrate < 100_000 || cp.Bitrate > 50_000_000 {
		add("capture.bitrate", "%s: use 100k to 50M", cp.Bitrate)
	}
	if cp.KeyInterval.D() < 500*time.Millisecond || cp.KeyInterval.D() > 10*time.Second {
		add("capture.key_interval", "%s: use 500ms to 10s", cp.KeyInterval)
	}
	if cp.Channels != 1 && cp.Channels != 2 {
		add("capture.channels", "%d: use 1 (mono) or 2 (stereo)", cp.Channels)
	}
	if cp.AudioBitrate < 6_000 || cp.AudioBitrate > 256_000 {
		add("capture.audio_bitrate", "%s: use 6k to 256k", cp.AudioBitrate)
	}

	r := c.Recording
	if r.Segment.D() < time.Second || r.Segment.D() > 10*time.Minute {
		add("recording.segment", "%s: use 1s to 10m", r.Segment)
	} else if cp.KeyInterval.D() > 0 && r.Segment.D() < cp.KeyInterval.D() {
		add("recording.segment", "%s is shorter than capture.key_interval %s: segments are cut at keyframes", r.Segment, cp.KeyInterval)
	}
	if r.SessionMax.D() < time.Minute {
		add("recording.session_max", "%s: use at least 1m", r.SessionMax)
	}
	if r.SessionDefault.D() <= 0 || r.SessionDefault.D() > r.SessionMax.D() {
		add("recording.session_default", "%s: use more than 0 and at most recording.session_max (%s)", r.SessionDefault, r.SessionMax)
	}
	switch anon.Mode(r.Anonymise) {
	case anon.Off, anon.Whole, "":
	case anon.Masks:
		if len(cp.Masks) == 0 {
			add("recording.anonymise", "masks needs at least one rectangle in capture.masks")
		}
	default:
		add("recording.anonymise", "%q: use off, whole or masks", r.Anonymise)
	}
	for i, m := range c.AnonMasks() {
		if err := m.Check(); err != nil {
			add(fmt.Sprintf("capture.masks[%d]", i), "%v", err)
		}
	}

	if c.Spool.MaxSize < 0 {
		add("spool.max_size", "must not be negative (0 means no cap)")
	}
	if c.Spool.MinFree < 0 {
		add("spool.min_free", "must not be negative (0 means no reserve)")
	}
	if c.Upload.RetryMax.D() < time.Second || c.Upload.RetryMax.D() > time.Hour {
		add("upload.retry_max", "%s: use 1s to 1h", c.Upload.RetryMax)
	}
	if d := c.Link.PingInterval.D(); d < 100*time.Millisecond || d > 10*time.Minute {
		add("link.ping_interval", "%s: use 100ms to 10m", c.Link.PingInterval)
	}
	if d := c.Link.PingTimeout.D(); d < 100*time.Millisecond || d > 10*time.Minute {
		add("link.ping_timeout", "%s: use 100ms to 10m", c.Link.PingTimeout)
	}
	if d := c.Link.RetryMax.D(); d < time.Second || d > time.Hour {
		add("link.retry_max", "%s: use 1s to 1h", c.Link.RetryMax)
	}
	if c.Metrics.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Metrics.Listen); err != nil {
			add("metrics.listen", "%q is not HOST:PORT (leave empty to turn metrics off)", c.Metrics.Listen)
		}
	}
	lv := c.Live
	if lv.Enabled {
		if _, _, err := net.SplitHostPort(lv.Listen); err != nil {
			add("live.listen", "%q is not HOST:PORT", lv.Listen)
		}
	}
	if lv.MaxViewers < 1 || lv.MaxViewers > 16 {
		add("live.max_viewers", "%d: use 1 to 16", lv.MaxViewers)
	}
	for i, s := range lv.STUN {
		if !strings.HasPrefix(s, "stun:") && !strings.HasPrefix(s, "stuns:") {
			add(fmt.Sprintf("live.stun[%d]", i), "%q: a STUN URL starts with stun: or stuns:", s)
		}
	}
	for i, t := range lv.TURN {
		key := fmt.Sprintf("live.turn[%d]", i)
		if !strings.HasPrefix(t.URL, "turn:") && !strings.HasPrefix(t.URL, "turns:") {
			add(key+".url", "%q: a TURN URL starts with turn: or turns:", t.URL)
		}
		abs(key+".credential_file", t.CredentialFile, true)
	}
	if lv.GrantDefault.D() < time.Minute || lv.GrantDefault.D() > 8*time.Hour {
		add("live.grant_default", "%s: use 1m to 8h", lv.GrantDefault)
	}
	if lv.IdleTimeout.D() < time.Second || lv.IdleTimeout.D() > time.Hour {
		add("live.idle_timeout", "%s: use 1s to 1h", lv.IdleTimeout)
	}
	if lv.ReadTimeout.D() < time.Second || lv.ReadTimeout.D() > 5*time.Minute {
		add("live.read_timeout", "%s: use 1s to 5m", lv.ReadTimeout)
	}
	if lv.MaxConnsPerAddress < 1 || lv.MaxConnsPerAddress > 1024 {
		add("live.max_conns_per_address", "%d: use 1 to 1024", lv.MaxConnsPerAddress)
	}
	if path, ok := strings.CutPrefix(lv.TalkbackDevice, "file:"); ok {
		abs("live.talkback_device", path, true)
	} else if d := lv.TalkbackDevice; len(d) > 256 || strings.IndexFunc(d, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		add("live.talkback_device", "%q: give an ALSA playback device name (aplay -L), default, or file:/ABSOLUTE/PATH.wav; empty: off", d)
	}
	if d := c.Consent.DeclineCooldown.D(); d < time.Minute || d > 24*time.Hour {
		add("consent.decline_cooldown", "%s: use 1m to 24h", c.Consent.DeclineCooldown)
	}
	ps = append(ps, c.Consent.Button.validate("consent.button")...)
	if c.Audit.Retention.D() < 24*time.Hour {
		add("audit.retention", "%s: keep at least 1d", c.Audit.Retention)
	}
	if ce := c.Audit.CheckpointEvery.D(); ce < time.Second || ce > 10*time.Minute {
		add("audit.checkpoint_every", "%s: use 1s to 10m", c.Audit.CheckpointEvery)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		add("log.level", "%q: use debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		add("log.format", "%q: use text or json", c.Log.Format)
	}
	return ps
}

// Load reads the config file at path over the defaults, applies environment
// overrides (EnvPrefix) from env (nil: the process environment) and
// validates the result. Every problem is reported at once in an *Error.
func Load(path string, env []string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("config %s does not exist: pass --config with the path of the daemon's YAML config (packaged at %s)", path, DefaultPath)
		}
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if env == nil {
		env = os.Environ()
	}
	c, err := Parse(data, env)
	if err != nil {
		var ce *Error
		if errors.As(err, &ce) {
			ce.File = path
		}
		return nil, err
	}
	return c, nil
}

// Parse is Load on the bytes of a file.
func Parse(data []byte, env []string) (*Config, error) {
	c := Default()
	ps, lines := decodeLines(data, c)
	ps = append(ps, applyEnv(c, env, lines)...)
	if len(ps) == 0 {
		ps = c.Validate()
		for i := range ps {
			if ps[i].Line == 0 {
				ps[i].Line = lines[ps[i].Key]
			}
		}
	}
	if len(ps) > 0 {
		return nil, &Error{Problems: ps}
	}
	return c, nil
}
