package diag

import (
	"errors"
	"fmt"

	"github.com/uploadbox/uploadbox/agent/button"
)

// ButtonLine is what the consent button's line says now.
type ButtonLine struct {
	button.ChipInfo
	// Read: the line was free and was requested for a moment to read
	// Pressed, its level (true: active, the button is down).
	Read    bool
	Pressed bool
}

// probeButton reads the chip's view of the line and, when no one holds
// it, its level.
func probeButton(chip string, line int, activeLow bool) (ButtonLine, error) {
	info, err := button.Probe(chip, line)
	if err != nil || info.Used {
		return ButtonLine{ChipInfo: info}, err
	}
	pressed, err := button.Read(chip, line, activeLow)
	return ButtonLine{ChipInfo: info, Read: err == nil, Pressed: pressed}, err
}

func checkButton(e *env) Result {
	b := e.cfg.Consent.Button
	if !b.On() {
		return Result{Status: Skip, Summary: "no consent button configured (consent.button.chip is empty)"}
	}
	where := fmt.Sprintf("line %d of %s", b.Line, button.ChipPath(b.Chip))
	bl, err := e.o.ButtonLine(b.Chip, b.Line, b.ActiveLow)
	if bl.Label != "" {
		where += " (" + bl.Label + ")"
	}
	if bl.LineName != "" {
		where = bl.LineName + ", " + where
	}
	m := map[string]any{}
	if bl.Lines > 0 {
		m["chip_lines"] = bl.Lines
	}
	if err != nil {
		return Result{Status: Fail, Metrics: m, Summary: "the consent button cannot be used: " + oneLine(err), Remedy: buttonRemedy(err)}
	}
	if bl.Used {
		m["held_by_daemon"] = bl.Consumer == button.Consumer
		if bl.Consumer == button.Consumer {
			return Result{Status: Pass, Metrics: m, Summary: where + " is held by the daemon for the consent button"}
		}
		user := bl.Consumer
		if user == "" {
			user = "a kernel driver or another program (no name given)"
		}
		return Result{Status: Fail, Metrics: m, Summary: fmt.Sprintf("%s is used by %s, not the daemon", where, user),
			Remedy: buttonRemedy(button.ErrBusy)}
	}
	m["held_by_daemon"] = false
	m["pressed"] = bl.Pressed
	level := "reads released"
	if bl.Pressed {
		level = "reads pressed"
	}
	if info, err := e.daemonInfo(); err == nil && info.Running {
		return Result{Status: Warn, Metrics: m,
			Summary: fmt.Sprintf("%s is free and %s, but the running daemon does not hold it: it could not open the button when it started, or consent.button changed since", where, level),
			Remedy:  "see why in journalctl -u uploadbox -b (\"consent button cannot be used\"), then restart it: systemctl restart uploadbox"}
	}
	if bl.Pressed {
		return Result{Status: Warn, Metrics: m,
			Summary: where + " reads pressed now",
			Remedy:  "if nobody holds the button, check the wiring (the button between GPIO17, pin 11, and ground, pin 9, on a Raspberry Pi) and consent.button.active_low"}
	}
	return Result{Status: Pass, Metrics: m, Summary: where + " can be opened and " + level}
}

// buttonRemedy says what to do about an error opening the button.
func buttonRemedy(err error) string {
	switch {
	case errors.Is(err, button.ErrNoChip):
		return "set consent.button.chip to a chip gpiodetect lists (gpiochip0 on a Raspberry Pi), or leave it empty for no button"
	case errors.Is(err, button.ErrNoLine):
		return "set consent.button.line to the line the button is wired to (on a Raspberry Pi the BCM GPIO number: 17 for pin 11)"
	case errors.Is(err, button.ErrBusy):
		return "free the line (gpioinfo names its user; a device-tree overlay in /boot/firmware/config.txt may claim it) or wire the button to a free line and set consent.button.line"
	case errors.Is(err, button.ErrPermission):
		return "run diag as root or the uploadbox user; the daemon's user needs the chip's group (usermod -aG gpio uploadbox) and the unit's DeviceAllow=char-gpiochip rw"
	}
	return "see the kernel log (dmesg) for the GPIO chip, and the consent button section of docs/daemon.md"
}
