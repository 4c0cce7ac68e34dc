package main

import (
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/uploadbox/uploadbox/receiver"
)

func TestUploadServeOptions(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string // "" for accepted
		want    receiver.ServerConfig
	}{
		{"defaults", nil, "", receiver.ServerConfig{UploadQuota: 4 << 30, UploadExpiry: 24 * time.Hour, PatchTimeout: 30 * time.Second}},
		{"set", []string{"--upload-quota", "1000", "--upload-expiry", "2h", "--patch-timeout", "5s"}, "", receiver.ServerConfig{UploadQuota: 1000, UploadExpiry: 2 * time.Hour, PatchTimeout: 5 * time.Second}},
		{"zero quota", []string{"--upload-quota", "0"}, "--upload-quota 0", receiver.ServerConfig{}},
		{"negative expiry", []string{"--upload-expiry", "-1h"}, "--upload-expiry -1h0m0s", receiver.ServerConfig{}},
		{"zero patch timeout", []string{"--patch-timeout", "0s"}, "--patch-timeout 0s", receiver.ServerConfig{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := applyServeFlags(t, &uploadServeOptions{}, tc.args, tc.wantErr)
			if tc.wantErr != "" {
				return
			}
			if err != nil || cfg.UploadQuota != tc.want.UploadQuota || cfg.UploadExpiry != tc.want.UploadExpiry || cfg.PatchTimeout != tc.want.PatchTimeout {
				t.Fatalf("cfg = %+v, err = %v; want %+v", cfg, err, tc.want)
			}
		})
	}
}

// serveFlags are serve's flags of one component.
type serveFlags interface {
	AddFlags(*pflag.FlagSet)
	apply(*receiver.ServerConfig) error
}

// applyServeFlags parses args into o's flags and applies them to a config;
// with wantErr set, the error must name it.
func applyServeFlags(t *testing.T, o serveFlags, args []string, wantErr string) (receiver.ServerConfig, error) {
	t.Helper()
	f := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	o.AddFlags(f)
	if err := f.Parse(args); err != nil {
		t.Fatal(err)
	}
	var cfg receiver.ServerConfig
	err := o.apply(&cfg)
	if wantErr != "" && (err == nil || !strings.Contains(err.Error(), wantErr)) {
		t.Fatalf("err = %v, want one naming %q", err, wantErr)
	}
	return cfg, err
}
