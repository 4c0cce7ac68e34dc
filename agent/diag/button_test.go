package diag

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/uploadbox/uploadbox/agent/button"
)

// TestButton: the button check passes when the daemon holds the line or
// it can be opened, warns when it reads pressed or the running daemon
// does not hold it, and fails with the remedy for each reason it cannot
// be used.
func TestButton(t *testing.T) {
	pi := button.ChipInfo{Path: "/dev/gpiochip0", Label: "pinctrl-bcm2711", Lines: 58, LineName: "GPIO17"}
	held := pi
	held.Used, held.Consumer = true, button.Consumer
	other := pi
	other.Used, other.Consumer = true, "gpio-keys"
	running := func(context.Context) (DaemonInfo, error) { return DaemonInfo{Running: true}, nil }
	tests := []struct {
		name   string
		config string
		line   ButtonLine
		err    error
		daemon func(context.Context) (DaemonInfo, error)
		status string
		words  []string // in the summary and remedy
	}{
		{"not configured", "", ButtonLine{}, nil, nil, Skip, []string{"consent.button.chip is empty"}},
		{"held by the daemon", "gpiochip0", ButtonLine{ChipInfo: held}, nil, running, Pass, []string{"GPIO17, line 17 of /dev/gpiochip0 (pinctrl-bcm2711) is held by the daemon"}},
		{"free, released", "gpiochip0", ButtonLine{ChipInfo: pi, Read: true}, nil, nil, Pass, []string{"can be opened and reads released"}},
		{"free, pressed", "gpiochip0", ButtonLine{ChipInfo: pi, Read: true, Pressed: true}, nil, nil, Warn, []string{"reads pressed now", "pin 11", "active_low"}},
		{"free while the daemon runs", "gpiochip0", ButtonLine{ChipInfo: pi, Read: true}, nil, running, Warn, []string{"does not hold it", "journalctl -u uploadbox", "restart"}},
		{"used by another", "gpiochip0", ButtonLine{ChipInfo: other}, nil, nil, Fail, []string{"used by gpio-keys", "gpioinfo", "consent.button.line"}},
		{"no chip", "gpiochip7", ButtonLine{}, fmt.Errorf("%w: /dev/gpiochip7 does not exist", button.ErrNoChip), nil, Fail, []string{"cannot be used", "/dev/gpiochip7 does not exist", "gpiodetect"}},
		{"no line", "gpiochip0", ButtonLine{ChipInfo: button.ChipInfo{Lines: 16}}, fmt.Errorf("%w: line 17 is not on /dev/gpiochip0", button.ErrNoLine), nil, Fail, []string{"line 17 is not on", "BCM GPIO number"}},
		{"busy", "gpiochip0", ButtonLine{}, fmt.Errorf("%w: line 17 of /dev/gpiochip0 is used by lgpio", button.ErrBusy), nil, Fail, []string{"used by lgpio", "free the line"}},
		{"permission", "gpiochip0", ButtonLine{}, fmt.Errorf("%w: /dev/gpiochip0: permission denied", button.ErrPermission), nil, Fail, []string{"permission denied", "usermod -aG gpio uploadbox", "DeviceAllow=char-gpiochip"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			extra := ""
			if tc.config != "" {
				extra = "consent:\n  button:\n    chip: " + tc.config + "\n"
			}
			b := newBox(t, extra)
			o := b.options("button")
			o.Daemon = tc.daemon
			o.ButtonLine = func(chip string, line int, activeLow bool) (ButtonLine, error) {
				if chip != tc.config || line != 17 || !activeLow {
					t.Errorf("line read as %s %d active low %v, want the configured one", chip, line, activeLow)
				}
				return tc.line, tc.err
			}
			r := result(t, Run(t.Context(), o), "button")
			if r.Status != tc.status {
				t.Fatalf("got %s %q (%s), want %s", r.Status, r.Summary, r.Remedy, tc.status)
			}
			text := r.Summary + " | " + r.Remedy
			for _, w := range tc.words {
				if !strings.Contains(text, w) {
					t.Errorf("%q does not say %q", text, w)
				}
			}
		})
	}
}

// With the real GPIO character device: a chip that does not exist fails
// and says so (no test opens a real chip).
func TestButtonNoChip(t *testing.T) {
	chip := filepath.Join(t.TempDir(), "gpiochip0")
	b := newBox(t, "consent:\n  button:\n    chip: "+chip+"\n")
	r := result(t, Run(t.Context(), b.options("button")), "button")
	if r.Status != Fail || !strings.Contains(r.Summary, chip+" does not exist") || !strings.Contains(r.Remedy, "gpiodetect") {
		t.Errorf("got %s %q (%s), want a failure naming %s with the remedy", r.Status, r.Summary, r.Remedy, chip)
	}
	if _, err := probeButton(chip, 17, true); !errors.Is(err, button.ErrNoChip) {
		t.Errorf("probeButton = %v, want ErrNoChip", err)
	}
}
