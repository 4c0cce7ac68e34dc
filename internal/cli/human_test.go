package cli

import (
	"testing"
	"time"
)

func TestHuman(t *testing.T) {
	for _, tt := range []struct {
		n    int64
		want string
	}{{0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {12 << 20, "12.0 MiB"}, {3 << 29, "1.5 GiB"}} {
		if got := Bytes(tt.n); got != tt.want {
			t.Errorf("Bytes(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
	for _, tt := range []struct {
		d    time.Duration
		want string
	}{{-time.Second, "0s"}, {0, "0s"}, {40 * time.Second, "40s"}, {12*time.Minute + 59*time.Second, "12m"},
		{47 * time.Hour, "47h"}, {48 * time.Hour, "2d"}, {730 * 24 * time.Hour, "730d"}} {
		if got := Age(tt.d); got != tt.want {
			t.Errorf("Age(%s) = %q, want %q", tt.d, got, tt.want)
		}
	}
}
