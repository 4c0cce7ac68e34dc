package main

import (
	"strings"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/receiver"
)

func TestLifeServeOptions(t *testing.T) {
	const day = 24 * time.Hour
	tests := []struct {
		name    string
		args    []string
		wantErr string // "" for accepted
		want    receiver.ServerConfig
	}{
		{"defaults", nil, "", receiver.ServerConfig{DeleteGrace: 90 * day, ScrubEvery: 24 * time.Hour}},
		{"set", []string{"--retention", "365", "--delete-grace", "30", "--scrub-every", "6h"}, "", receiver.ServerConfig{Retention: 365 * day, DeleteGrace: 30 * day, ScrubEvery: 6 * time.Hour}},
		{"scrub off", []string{"--scrub-every", "0"}, "", receiver.ServerConfig{DeleteGrace: 90 * day}},
		{"negative retention", []string{"--retention", "-1"}, "--retention -1", receiver.ServerConfig{}},
		{"zero grace", []string{"--delete-grace", "0"}, "--delete-grace 0", receiver.ServerConfig{}},
		{"scrub too often", []string{"--scrub-every", "10ms"}, "--scrub-every 10ms", receiver.ServerConfig{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := applyServeFlags(t, &lifeServeOptions{}, tc.args, tc.wantErr)
			if tc.wantErr != "" {
				return
			}
			if err != nil || cfg.Retention != tc.want.Retention || cfg.DeleteGrace != tc.want.DeleteGrace || cfg.ScrubEvery != tc.want.ScrubEvery {
				t.Fatalf("cfg = %+v, err = %v; want %+v", cfg, err, tc.want)
			}
		})
	}
}

func TestDurationText(t *testing.T) {
	for _, tc := range []struct {
		s    float64
		want string
	}{{0, "-"}, {6.4, "6s"}, {59.6, "1m00s"}, {125, "2m05s"}, {3723, "1h02m03s"}} {
		if got := durationText(tc.s); got != tc.want {
			t.Errorf("durationText(%v) = %q, want %q", tc.s, got, tc.want)
		}
	}
}

// The table's ANONYMISE column shows the mode, and "-" for a recording
// stored before the receiver kept it.
func TestPrintRecordingsAnonymise(t *testing.T) {
	var b strings.Builder
	printRecordings(&b, []receiver.Recording{
		{ID: "aa", Device: "room-1", Ended: "stopped", Anonymise: "whole"},
		{ID: "bb", Device: "room-2", Ended: "stopped"},
	}, false)
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("recordings list:\n%s", b.String())
	}
	for i, want := range []string{"ENDED ANONYMISE", "stopped whole", "stopped -"} {
		if f := strings.Fields(lines[i]); strings.Join(f[len(f)-2:], " ") != want {
			t.Errorf("line %d ends in %q, want %q:\n%s", i, f[len(f)-2:], want, b.String())
		}
	}
}
