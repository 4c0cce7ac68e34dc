package diag

import (
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/uploadbox/uploadbox/agent/config"
	"github.com/uploadbox/uploadbox/capture"
)

// Microphone level limits.
const (
	silentRMS   = -60.0 // dBFS: below this the microphone is taken as silent
	clipWarnAt  = 0.001 // fraction of samples at capture.ClipLevel
	fpsWarnFrac = 0.9   // measured below this fraction of the configured rate warns
)

// captureConfig maps the daemon's config to the capture package's.
func captureConfig(c *config.Config) capture.Config {
	cp := c.Capture
	return capture.Config{
		Source: cp.Source, Device: cp.Device, Width: cp.Width, Height: cp.Height, FPS: cp.FPS,
		Bitrate: int(cp.Bitrate), KeyInterval: cp.KeyInterval.D(),
		Audio: c.AudioOn(), AudioDevice: cp.AudioDevice, Channels: cp.Channels,
		AudioBitrate: int(cp.AudioBitrate),
	}
}

func checkCamera(e *env) Result {
	cc := captureConfig(e.cfg)
	what := "camera " + cc.Device
	if cc.Source == capture.SourceTest {
		what = "test pattern"
	}
	st, err := capture.MeasureVideo(e.ctx, cc, e.o.VideoTime)
	if err != nil {
		return e.deviceFailure(what, cc.Device, "camera", err)
	}
	m := map[string]any{"fps_measured": math.Round(st.FPS*10) / 10, "fps_configured": cc.FPS,
		"frames": st.Frames, "lost_frames": st.Lost}
	sum := fmt.Sprintf("%.1f fps measured (configured %d), %s", st.FPS, cc.FPS, what)
	if st.FPS < fpsWarnFrac*float64(cc.FPS) {
		return Result{Status: Warn, Metrics: m, Summary: sum,
			Remedy: "the camera delivers too few frames: give it more light (many cameras halve the rate in the dark), lower capture.fps or the size, or use a powered USB hub"}
	}
	return Result{Status: Pass, Metrics: m, Summary: sum}
}

func checkMicrophone(e *env) Result {
	cc := captureConfig(e.cfg)
	if !cc.Audio {
		return Result{Status: Skip, Summary: "audio is off in the config (capture.audio: false): no microphone is opened"}
	}
	what := "microphone " + cc.AudioDevice
	switch {
	case cc.Source == capture.SourceTest:
		what = "test tone"
	case cc.AudioDevice == "":
		what = "default microphone"
	}
	l, err := capture.MeasureAudio(e.ctx, cc, e.o.AudioTime)
	if err != nil {
		return e.deviceFailure(what, cc.AudioDevice, "microphone", err)
	}
	return levelResult(l, what)
}

// levelResult judges a measured level.
func levelResult(l capture.AudioLevel, what string) Result {
	m := map[string]any{"dbfs_rms": round1(l.RMS), "dbfs_peak": round1(l.Peak),
		"clipped_fraction": l.Clipped, "samples": l.Samples}
	sum := fmt.Sprintf("%.1f dBFS RMS, peak %.1f dBFS, %s", l.RMS, l.Peak, what)
	switch {
	case l.RMS < silentRMS:
		return Result{Status: Warn, Metrics: m, Summary: "silent: " + sum,
			Remedy: "check that the microphone is connected and not muted (arecord -l, alsamixer); a quiet classroom reads about -50 dBFS"}
	case l.Clipped > clipWarnAt:
		return Result{Status: Warn, Metrics: m,
			Summary: fmt.Sprintf("clipping: %.2f%% of samples at full scale, %s", 100*l.Clipped, sum),
			Remedy:  "lower the capture gain (alsamixer) or move the microphone away from loud sources"}
	}
	return Result{Status: Pass, Metrics: m, Summary: sum}
}

func round1(v float64) float64 { return math.Round(v*10) / 10 }

// deviceFailure turns a failure to measure a camera or microphone into a
// result. A device busy because the daemon records is only a warning.
func (e *env) deviceFailure(what, device, kind string, err error) Result {
	var de *capture.DeviceError
	summary, remedy := oneLine(err), ""
	if errors.As(err, &de) && de.Hint != "" {
		summary = strings.TrimSuffix(summary, ": "+strings.Join(strings.Fields(de.Hint), " "))
		remedy = de.Hint
	}
	switch {
	case errors.Is(err, capture.ErrNoDevice) && kind == "camera":
		detail := summary
		if de != nil && de.Err != nil {
			detail = oneLine(de.Err)
		}
		return Result{Status: Fail, Summary: fmt.Sprintf("no camera at %s (%s)", device, detail),
			Remedy: "check the cable and the path (`v4l2-ctl --list-devices`; capture.device in the config)"}
	case errors.Is(err, capture.ErrNoDevice):
		return Result{Status: Fail, Summary: "no microphone: " + summary,
			Remedy: "check that the microphone is connected (arecord -l) and capture.audio_device in the config"}
	case errors.Is(err, capture.ErrDeviceBusy):
		if info, derr := e.daemonInfo(); derr == nil && info.Session {
			return Result{Status: Warn, Summary: fmt.Sprintf("%s is in use by the daemon (a session runs): not measured", what),
				Remedy: "run uploadbox diag --check " + kind + " again after the session"}
		}
	}
	if remedy == "" {
		remedy = fmt.Sprintf("check the %s and capture settings in the config", kind)
	}
	if !strings.Contains(summary, what) && !strings.HasPrefix(summary, kind) {
		summary = what + ": " + summary
	}
	return Result{Status: Fail, Summary: summary, Remedy: remedy}
}
