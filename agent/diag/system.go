package diag

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/uploadbox/uploadbox/agent/config"
	"github.com/uploadbox/uploadbox/uploader"
	"github.com/uploadbox/uploadbox/wire"
)

// certWarn is how long before expiry the device certificate warns.
const certWarn = 30 * 24 * time.Hour

func checkConfig(e *env) Result {
	if e.cfgErr == nil {
		c := e.cfg
		audio := "audio on"
		if !c.AudioOn() {
			audio = "audio off"
		}
		return Result{Status: Pass, Summary: fmt.Sprintf("loaded %s (source %s, %dx%d at %d fps, %s)",
			e.o.ConfigPath, c.Capture.Source, c.Capture.Width, c.Capture.Height, c.Capture.FPS, audio)}
	}
	var ce *config.Error
	if errors.As(e.cfgErr, &ce) {
		var ps []string
		for _, p := range ce.Problems {
			ps = append(ps, p.String())
		}
		return Result{Status: Fail, Metrics: map[string]any{"problems": len(ce.Problems)},
			Summary: fmt.Sprintf("%s has %d problem(s): %s", e.o.ConfigPath, len(ce.Problems), strings.Join(ps, "; ")),
			Remedy:  fmt.Sprintf("fix each key named above in %s (the packaged uploadbox.yaml documents every key), then run uploadbox diag again", e.o.ConfigPath)}
	}
	remedy := "pass --config FILE (or set UPLOADBOX_CONFIG) with the daemon's YAML config"
	if errors.Is(e.cfgErr, fs.ErrPermission) {
		remedy = "run diag as root or the uploadbox user (sudo -u uploadbox uploadbox diag)"
	}
	return Result{Status: Fail, Summary: oneLine(e.cfgErr), Remedy: remedy}
}

func checkEnrollment(e *env) Result {
	dir := e.cfg.StateDir
	if r, ok := checkStateOwnership(dir); !ok {
		return r
	}
	st, err := e.stateOf()
	switch {
	case err == nil:
		return Result{Status: Pass, Metrics: map[string]any{"recipients": len(st.Recipients)},
			Summary: fmt.Sprintf("enrolled with %s as %q, %d organisation key(s)", st.Receiver.Redacted(), st.DeviceCert.Leaf.Subject.CommonName, len(st.Recipients))}
	case errors.Is(err, fs.ErrPermission):
		return Result{Status: Fail, Summary: fmt.Sprintf("cannot read the state in %s: permission denied", dir),
			Remedy: "run diag as root or the uploadbox user (sudo -u uploadbox uploadbox diag)"}
	case errors.Is(err, fs.ErrNotExist):
		return Result{Status: Fail, Summary: "not enrolled: " + oneLine(err),
			Remedy: fmt.Sprintf("enroll the box: uploadbox enroll --receiver URL --token T --ca-fingerprint FP --state %s (token and fingerprint from uploadbox-receiver devices add)", dir)}
	}
	return Result{Status: Fail, Summary: fmt.Sprintf("the state in %s is damaged: %s", dir, oneLine(err)),
		Remedy: "re-enroll the box into an empty state directory (uploadbox enroll); the old device key is then retired"}
}

// checkCertificate reads the device certificate on its own, so its expiry
// is reported even when the rest of the state does not load.
func checkCertificate(e *env) Result {
	path := filepath.Join(e.cfg.StateDir, uploader.DeviceCertFile)
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return Result{Status: Skip, Summary: "no device certificate: the box is not enrolled (see the enrollment check)"}
	case err != nil:
		remedy := "run diag as root or the uploadbox user (sudo -u uploadbox uploadbox diag)"
		if r, ok := checkStateOwnership(e.cfg.StateDir); !ok {
			remedy = r.Remedy
		}
		return Result{Status: Fail, Summary: oneLine(err), Remedy: remedy}
	}
	b, _ := pem.Decode(data)
	if b == nil {
		return Result{Status: Fail, Summary: path + " is not a PEM certificate", Remedy: "re-enroll the box into an empty state directory"}
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return Result{Status: Fail, Summary: fmt.Sprintf("%s: %s", path, oneLine(err)), Remedy: "re-enroll the box into an empty state directory"}
	}
	now := e.o.Now()
	left := cert.NotAfter.Sub(now)
	days := math.Floor(left.Hours() / 24)
	m := map[string]any{"days_left": days, "not_after": cert.NotAfter.UTC().Format(time.RFC3339)}
	renew := fmt.Sprintf("renew it: uploadbox enroll --renew --state %s (same key; the daemon renews by itself at two thirds of the lifetime, see its log); if the receiver refuses, the administrator gives a token for a new key: uploadbox-receiver devices rekey %s", e.cfg.StateDir, cert.Subject.CommonName)
	switch {
	case now.Before(cert.NotBefore):
		return Result{Status: Fail, Metrics: m,
			Summary: fmt.Sprintf("not valid before %s, but the box's clock reads %s", cert.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339)),
			Remedy:  "the clock is behind: see the clock check (timedatectl)"}
	case left <= 0:
		return Result{Status: Fail, Metrics: m,
			Summary: fmt.Sprintf("expired on %s (%.0f days ago): the receiver refuses this box", cert.NotAfter.UTC().Format(time.DateOnly), -days),
			Remedy:  renew}
	case left < certWarn:
		return Result{Status: Warn, Metrics: m,
			Summary: fmt.Sprintf("expires in %.0f days, on %s", days, cert.NotAfter.UTC().Format(time.DateOnly)), Remedy: renew}
	case now.After(wire.RenewAt(cert)):
		return Result{Status: Warn, Metrics: m,
			Summary: fmt.Sprintf("past its renewal time (%s) and not renewed; expires on %s", wire.RenewAt(cert).UTC().Format(time.DateOnly), cert.NotAfter.UTC().Format(time.DateOnly)), Remedy: renew}
	}
	return Result{Status: Pass, Metrics: m,
		Summary: fmt.Sprintf("%q valid for %.0f more days (until %s)", cert.Subject.CommonName, days, cert.NotAfter.UTC().Format(time.DateOnly))}
}

func checkDaemon(e *env) Result {
	m := map[string]any{}
	restarts := -1
	if out, err := e.command("systemctl", "show", "uploadbox", "-p", "NRestarts", "--value"); err == nil {
		if n, err := strconv.Atoi(out); err == nil {
			restarts = n
			m["restarts"] = n
		}
	}
	info, err := e.daemonInfo()
	if err == nil && info.Running {
		m["pid"] = info.PID
		m["uptime_seconds"] = math.Round(info.Uptime.Seconds())
		m["session"] = info.Session
		if info.LiveDTLS != "" {
			m["live_dtls_fingerprint"] = info.LiveDTLS
		}
		session := "no session"
		if info.Session {
			session = "a session runs"
		}
		sum := fmt.Sprintf("running, pid %d, up %s, %s", info.PID, info.Uptime.Round(time.Second), session)
		if c := info.Control; c == nil {
			m["control"] = "off"
			sum += "; no control connection (not enrolled, or link.enabled is false)"
		} else if c.Connected {
			m["control"] = "connected"
			sum += fmt.Sprintf("; control connection up since %s", c.Since.UTC().Format(time.RFC3339))
		} else {
			m["control"] = "disconnected"
			m["control_cause"] = c.Cause
			next := "now"
			if d := time.Until(c.NextRetry); d > 0 {
				next = "in " + d.Round(time.Second).String()
			}
			return Result{Status: Warn, Metrics: m,
				Summary: fmt.Sprintf("%s; control connection down since %s (%s): %s; next retry %s", sum, c.Since.UTC().Format(time.RFC3339), c.Cause, c.LastError, next),
				Remedy:  "the box retries by itself; see the receiver check for the cause (a revoked box is refused: ask the administrator)"}
		}
		if restarts > 0 {
			return Result{Status: Warn, Metrics: m, Summary: fmt.Sprintf("%s; restarted %d time(s)", sum, restarts),
				Remedy: "see why it restarted: journalctl -u uploadbox -b"}
		}
		return Result{Status: Pass, Metrics: m, Summary: sum}
	}
	why := "it reports not running"
	if err != nil {
		why = oneLine(err)
	}
	socket := "(unknown: the config did not load)"
	if e.cfg != nil {
		socket = e.cfg.SocketPath()
	}
	if active, aerr := e.command("systemctl", "is-active", "uploadbox"); aerr == nil && active == "active" {
		return Result{Status: Warn, Metrics: m,
			Summary: fmt.Sprintf("systemd reports it active but its control socket %s does not answer: %s", socket, why),
			Remedy:  "check journalctl -u uploadbox; members of control.group (uploadbox) may use the socket"}
	}
	return Result{Status: Fail, Metrics: m, Summary: fmt.Sprintf("not running (control socket %s: %s)", socket, why),
		Remedy: "start it: systemctl start uploadbox; see why it stopped: journalctl -u uploadbox -b"}
}

// Bits of `vcgencmd get_throttled`.
var throttleBits = []struct {
	bit  uint64
	text string
	now  bool
}{
	{0x1, "under-voltage now", true},
	{0x2, "ARM frequency capped now", true},
	{0x4, "throttled now", true},
	{0x8, "soft temperature limit now", true},
	{0x10000, "under-voltage occurred since boot", false},
	{0x20000, "frequency capping occurred since boot", false},
	{0x40000, "throttling occurred since boot", false},
	{0x80000, "soft temperature limit occurred since boot", false},
}

func checkPower(e *env) Result {
	out, err := e.command("vcgencmd", "get_throttled")
	if errors.Is(err, exec.ErrNotFound) {
		return Result{Status: Skip, Summary: "not a Raspberry Pi (vcgencmd not found)"}
	}
	if err != nil {
		return Result{Status: Warn, Summary: "vcgencmd get_throttled failed: " + oneLine(err),
			Remedy: "the user running diag needs group video to use vcgencmd"}
	}
	hex, ok := strings.CutPrefix(out, "throttled=")
	v, perr := strconv.ParseUint(strings.TrimPrefix(hex, "0x"), 16, 64)
	if !ok || perr != nil {
		return Result{Status: Warn, Summary: fmt.Sprintf("vcgencmd get_throttled printed %q, not throttled=0x…", out),
			Remedy: "update the firmware tools (apt install libraspberrypi-bin or raspi-utils)"}
	}
	m := map[string]any{"throttled": v, "under_voltage_now": v&0x1 != 0, "under_voltage_since_boot": v&0x10000 != 0}
	var found []string
	for _, b := range throttleBits {
		if v&b.bit != 0 {
			found = append(found, b.text)
		}
	}
	if len(found) == 0 {
		return Result{Status: Pass, Metrics: m, Summary: "no under-voltage or throttling since boot (throttled=0x0)"}
	}
	sum := fmt.Sprintf("%s (throttled=0x%x)", strings.Join(found, ", "), v)
	supply := "use the official power supply (5.1 V, 3 A for a Pi 4, 5 A for a Pi 5) and a short, thick cable; powered hubs for USB cameras"
	switch {
	case v&0x1 != 0:
		return Result{Status: Fail, Metrics: m, Summary: sum, Remedy: supply}
	case v&0x10000 != 0:
		return Result{Status: Warn, Metrics: m, Summary: sum, Remedy: supply}
	}
	return Result{Status: Warn, Metrics: m, Summary: sum,
		Remedy: "the Pi runs hot: give it a heatsink or fan and air around the case"}
}
