package main

import (
	"os"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		var ds []time.Duration
		for _, n := range ns {
			ds = append(ds, time.Duration(n)*time.Millisecond)
		}
		return ds
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = 100 - i // 100 … 1, unsorted
	}
	tests := []struct {
		name string
		ds   []time.Duration
		q    float64
		want time.Duration
	}{
		{"none", nil, 0.99, 0},
		{"one", ms(7), 0.99, 7 * time.Millisecond},
		{"p50 of four takes the second", ms(40, 10, 30, 20), 0.5, 20 * time.Millisecond},
		{"p99 of ten is the largest", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 0.99, 10 * time.Millisecond},
		{"p99 of a hundred is the 99th", ms(hundred...), 0.99, 99 * time.Millisecond},
		{"p50 of a hundred is the 50th", ms(hundred...), 0.5, 50 * time.Millisecond},
		{"p100", ms(3, 1, 2), 1, 3 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.ds, tt.q); got != tt.want {
				t.Errorf("percentile(%v, %v) = %v, want %v", tt.ds, tt.q, got, tt.want)
			}
		})
	}
}

func TestParseStatCPU(t *testing.T) {
	tests := []struct {
		name    string
		stat    string
		want    time.Duration
		wantErr bool
	}{
		{"plain", "4242 (uploadbox-recei) S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 37 0 0 20 0 12 0 99 0 0", 2870 * time.Millisecond, false},
		{"name with spaces and parentheses", "7 (a b) c)) R 1 7 7 0 -1 0 0 0 0 0 1 2 0 0 20 0", 30 * time.Millisecond, false},
		{"no name", "4242 S 1", 0, true},
		{"too short", "1 (x) S 1 2 3", 0, true},
		{"not a number", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 ab 2 0", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatCPU([]byte(tt.stat))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("parseStatCPU(%q) = %v, %v; want %v, error %v", tt.stat, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// TestProcessCPUSelf reads this test process's own counters, which only grow.
func TestProcessCPUSelf(t *testing.T) {
	a, err := processCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	x := 0
	for b := a; b == a; b, err = processCPU(os.Getpid()) {
		if err != nil {
			t.Fatal(err)
		}
		for i := range 1_000_000 {
			x += i
		}
	}
	_ = x
}

func TestCPUPerGB(t *testing.T) {
	if got := cpuPerGB(3*time.Second, 2e9); got != 1.5 {
		t.Errorf("cpuPerGB(3s, 2 GB) = %v, want 1.5", got)
	}
	if got := cpuPerGB(time.Second, 0); got != 0 {
		t.Errorf("cpuPerGB(1s, 0) = %v, want 0", got)
	}
}

func TestNextBoxes(t *testing.T) {
	tests := []struct {
		name           string
		good, bad      int
		want           int
		wantOK         bool
		start, maxBoxs int
	}{
		{"first step", 0, 0, 20, true, 20, 2560},
		{"doubles while every step held", 80, 0, 160, true, 20, 2560},
		{"stops at the maximum", 1280, 0, 2560, true, 20, 2560},
		{"not past the maximum", 2560, 0, 5120, false, 20, 2560},
		{"halves the gap after a failure", 80, 160, 120, true, 20, 2560},
		{"goes on while the gap is over a quarter of good", 120, 160, 140, true, 20, 2560},
		{"stops when the gap is a quarter of good", 120, 150, 0, false, 20, 2560},
		{"the first step failed: lower", 0, 20, 10, true, 20, 2560},
		{"one box failed: nothing left", 0, 1, 0, false, 1, 2560},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := nextBoxes(tt.start, tt.maxBoxs, tt.good, tt.bad)
			if ok != tt.wantOK || (ok && got != tt.want) {
				t.Errorf("nextBoxes(%d, %d, good %d, bad %d) = %d, %v; want %d, %v", tt.start, tt.maxBoxs, tt.good, tt.bad, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}
