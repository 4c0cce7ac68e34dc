package config

import (
	"fmt"
	"path/filepath"
	"regexp"
	"time"
)

// Button is the consent button: a push button on a GPIO line of the box
// (docs/daemon.md, "Consent button"). Chip "" means no button.
type Button struct {
	// Chip is the GPIO chip: a name under /dev (gpiochip0) or an absolute
	// path; empty: no button.
	Chip string `yaml:"chip"`
	// Line is the line's offset on the chip (on a Raspberry Pi, the BCM
	// GPIO number: 17 is physical pin 11).
	Line int `yaml:"line"`
	// ActiveLow: pressed pulls the line to ground (the line is then
	// biased up by the chip's pull-up); false: pressed pulls it to 3.3 V
	// (biased down).
	ActiveLow bool `yaml:"active_low"`
	// Debounce is how long the line must stay at a level to count.
	Debounce Duration `yaml:"debounce"`
	// LongPressStopsSession makes a second long press within 10 s of the
	// first stop the recording session (default off).
	LongPressStopsSession bool `yaml:"long_press_stops_session"`
}

// On reports whether a button is configured.
func (b Button) On() bool { return b.Chip != "" }

var chipName = regexp.MustCompile(`^gpiochip[0-9]+$`)

func (b Button) validate(key string) []Problem {
	var ps []Problem
	add := func(k, format string, args ...any) {
		ps = append(ps, Problem{Key: key + "." + k, Msg: fmt.Sprintf(format, args...)})
	}
	if b.Chip != "" && !chipName.MatchString(b.Chip) && !filepath.IsAbs(b.Chip) {
		add("chip", "%q: name a GPIO chip such as gpiochip0 (list them with gpiodetect) or give its absolute path; leave empty for no button", b.Chip)
	}
	if b.Line < 0 || b.Line > 1023 {
		add("line", "%d: use the line's offset on the chip, 0 to 1023 (on a Raspberry Pi the BCM GPIO number, e.g. 17 for pin 11)", b.Line)
	}
	if d := b.Debounce.D(); d < time.Millisecond || d > 500*time.Millisecond {
		add("debounce", "%s: use 1ms to 500ms (30ms suits most push buttons)", b.Debounce)
	}
	return ps
}
