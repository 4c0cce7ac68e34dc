package main

import (
	"strings"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/capture"
	"github.com/uploadbox/uploadbox/capture/anon"
)

// record's --anonymise and --mask reach the capture config, and every
// misuse is a usage error naming the flag.
func TestRecordAnonymiseFlags(t *testing.T) {
	tests := []struct {
		name    string
		mode    string
		masks   []string
		want    anon.Mode
		wantErr string
	}{
		{"default off", "off", nil, anon.Off, ""},
		{"whole", "whole", nil, anon.Whole, ""},
		{"masks", "masks", []string{"0.5,0,0.5,0.25", " 0, 0.5, 0.25, 0.5"}, anon.Masks, ""},
		{"unknown mode", "blur", nil, "", "--anonymise:"},
		{"masks without a mask", "masks", nil, "", "--anonymise masks needs at least one --mask X,Y,W,H"},
		{"a mask without masks", "whole", []string{"0,0,0.5,0.5"}, "", "--mask is only used with --anonymise masks"},
		{"a mask not X,Y,W,H", "masks", []string{"0,0,0.5"}, "", "--mask: \"0,0,0.5\" is not X,Y,W,H"},
		{"a mask outside", "masks", []string{"0.8,0,0.5,0.5"}, "", "--mask: mask {x: 0.8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := recordOptions{source: "test", size: "640x360", fps: 25, bitrate: "1000k",
				duration: time.Second, segment: time.Second, anon: tt.mode, masks: tt.masks}
			cfg, ok := captureConfigWant(t, o, tt.wantErr)
			if !ok {
				return
			}
			if cfg.Anonymise != tt.want || len(cfg.Masks) != len(tt.masks) {
				t.Errorf("anonymise %q with %d masks, want %q with %d", cfg.Anonymise, len(cfg.Masks), tt.want, len(tt.masks))
			}
		})
	}
}

// record's --source takes test, camera or image:PATH; anything else is a
// usage error naming the flag.
func TestRecordSourceFlag(t *testing.T) {
	tests := []struct {
		name, source      string
		wantSrc, wantPath string
		wantErr           string
	}{
		{"test", "test", "test", "", ""},
		{"image", "image:/usr/share/pic.png", "image", "/usr/share/pic.png", ""},
		{"image with a colon in the path", "image:a:b.png", "image", "a:b.png", ""},
		{"image without a path", "image:", "", "", "image: missing"},
		{"another prefix", "file:/x.png", "", "", `--source "file:/x.png": give test, camera or image:PATH`},
		{"unknown", "usb", "", "", `unknown source "usb"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := recordOptions{source: tt.source, size: "640x360", fps: 25, bitrate: "1000k",
				duration: time.Second, segment: time.Second, anon: "off"}
			cfg, ok := captureConfigWant(t, o, tt.wantErr)
			if !ok {
				return
			}
			if cfg.Source != tt.wantSrc || cfg.Image != tt.wantPath {
				t.Errorf("source %q image %q, want %q %q", cfg.Source, cfg.Image, tt.wantSrc, tt.wantPath)
			}
		})
	}
}

// captureConfigWant is o's capture config; ok is false when wantErr is
// set and the error has it.
func captureConfigWant(t *testing.T, o recordOptions, wantErr string) (cfg capture.Config, ok bool) {
	t.Helper()
	cfg, err := o.captureConfig()
	if wantErr != "" {
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("err = %v, want one with %q", err, wantErr)
		}
		return cfg, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return cfg, true
}
