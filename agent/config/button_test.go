package config

import (
	"strings"
	"testing"
	"time"
)

// The consent button is off unless a chip is named; its keys take the
// Raspberry Pi wiring's values by default, and bad values are named with
// their key and what to write instead.
func TestConsentButton(t *testing.T) {
	c, err := Parse(nil, []string{})
	if err != nil {
		t.Fatal(err)
	}
	if b := c.Consent.Button; b.On() || b.Line != 17 || !b.ActiveLow || b.Debounce.D() != 30*time.Millisecond || b.LongPressStopsSession {
		t.Errorf("defaults: %+v, want off, line 17, active low, 30ms, no session stop", b)
	}
	c, err = Parse([]byte("consent:\n  button: {chip: gpiochip0, line: 27, active_low: false, debounce: 50ms, long_press_stops_session: true}\n"), []string{})
	if err != nil {
		t.Fatal(err)
	}
	if b := c.Consent.Button; !b.On() || b.Chip != "gpiochip0" || b.Line != 27 || b.ActiveLow || b.Debounce.D() != 50*time.Millisecond || !b.LongPressStopsSession {
		t.Errorf("from the file: %+v", b)
	}
	c, err = Parse(nil, []string{"UPLOADBOX_CONSENT_BUTTON_CHIP=/dev/gpiochip4", "UPLOADBOX_CONSENT_BUTTON_LINE=5"})
	if err != nil || c.Consent.Button.Chip != "/dev/gpiochip4" || c.Consent.Button.Line != 5 {
		t.Errorf("environment: %+v, %v", c.Consent.Button, err)
	}

	tests := []struct{ name, src string }{
		{"chip", "consent:\n  button:\n    chip: gpio17\n"},
		{"line", "consent:\n  button:\n    chip: gpiochip0\n    line: -1\n"},
		{"debounce", "consent:\n  button:\n    debounce: 0s\n"},
		{"debounce", "consent:\n  button:\n    debounce: 2s\n"},
		{"active_low", "consent:\n  button:\n    active_low: maybe\n"},
		{"long_press_stop_session", "consent:\n  button:\n    long_press_stop_session: true\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.src), []string{})
			if err == nil || !strings.Contains(err.Error(), "consent.button."+tc.name) {
				t.Errorf("error %v, want one naming consent.button.%s", err, tc.name)
			}
		})
	}
	_, err = Parse([]byte("consent:\n  button:\n    chip: gpio17\n"), []string{})
	if err == nil || !strings.Contains(err.Error(), "gpiodetect") {
		t.Errorf("a bad chip's error %v does not say how to find the chip", err)
	}
}
