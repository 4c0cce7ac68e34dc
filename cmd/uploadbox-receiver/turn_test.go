package main

import (
	"testing"

	"github.com/uploadbox/uploadbox/receiver"
)

func TestTURNServeOptions(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string // "" for accepted
		check   func(receiver.ServerConfig) bool
	}{
		{"off", nil, "", func(c receiver.ServerConfig) bool { return c.TURN.Listen == "" }},
		{"on", []string{"--turn-listen", "127.0.0.1:3478", "--turn-relay-ports", "49160-49200"}, "", func(c receiver.ServerConfig) bool {
			return c.TURN.Listen == "127.0.0.1:3478" && c.TURN.PublicIP.String() == "127.0.0.1" && c.TURN.MinPort == 49160 && c.TURN.MaxPort == 49200 &&
				c.TURN.MaxPerCredential == 4 && c.TURN.MaxAllocations == 100
		}},
		{"public ip", []string{"--turn-listen", ":3478", "--turn-public-ip", "203.0.113.5"}, "", func(c receiver.ServerConfig) bool {
			return c.TURN.PublicIP.String() == "203.0.113.5"
		}},
		{"no ip to advertise", []string{"--turn-listen", ":3478"}, "--turn-public-ip", nil},
		{"bad public ip", []string{"--turn-listen", ":3478", "--turn-public-ip", "turn.example"}, `--turn-public-ip "turn.example"`, nil},
		{"public ip without listen", []string{"--turn-public-ip", "203.0.113.5"}, "need --turn-listen", nil},
		{"ports not a range", []string{"--turn-listen", "127.0.0.1:3478", "--turn-relay-ports", "49160"}, `--turn-relay-ports "49160"`, nil},
		{"ports reversed", []string{"--turn-listen", "127.0.0.1:3478", "--turn-relay-ports", "5000-4000"}, "--turn-relay-ports 5000-4000", nil},
		{"ports out of range", []string{"--turn-listen", "127.0.0.1:3478", "--turn-relay-ports", "0-70000"}, "--turn-relay-ports 0-70000", nil},
		{"ttl", []string{"--turn-listen", "127.0.0.1:3478", "--turn-ttl", "1s"}, "--turn-ttl 1s", nil},
		{"cap", []string{"--turn-listen", "127.0.0.1:3478", "--turn-max-per-credential", "-1"}, "--turn-max-per-credential -1", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := applyServeFlags(t, &turnServeOptions{}, tc.args, tc.wantErr)
			if tc.wantErr != "" {
				return
			}
			if err != nil || !tc.check(cfg) {
				t.Fatalf("cfg.TURN = %+v, err = %v", cfg.TURN, err)
			}
		})
	}
}
