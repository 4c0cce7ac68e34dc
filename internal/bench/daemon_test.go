package main

import (
	"math"
	"testing"
)

func TestSpreadOf(t *testing.T) {
	tests := []struct {
		name string
		xs   []float64
		want spread
	}{
		{"one", []float64{2}, spread{med: 2, lo: 2, hi: 2, q1: 2, q3: 2}},
		{"three unsorted", []float64{1.10, 1.00, 1.04}, spread{med: 1.04, lo: 1, hi: 1.10, q1: 1.02, q3: 1.07}},
		{"four", []float64{4, 1, 3, 2}, spread{med: 2.5, lo: 1, hi: 4, q1: 1.75, q3: 3.25}},
		{"five", []float64{5, 1, 4, 2, 3}, spread{med: 3, lo: 1, hi: 5, q1: 2, q3: 4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := spreadOf(tt.xs)
			for _, f := range []struct {
				name      string
				got, want float64
			}{{"median", got.med, tt.want.med}, {"min", got.lo, tt.want.lo}, {"max", got.hi, tt.want.hi}, {"q1", got.q1, tt.want.q1}, {"q3", got.q3, tt.want.q3}} {
				if math.Abs(f.got-f.want) > 1e-9 {
					t.Errorf("%s = %v, want %v", f.name, f.got, f.want)
				}
			}
		})
	}
}

func TestFramesLogged(t *testing.T) {
	tests := []struct {
		name, log string
		want      int
		err       bool
	}{
		{"counted", "time=x level=INFO msg=\"session started\"\ntime=x level=INFO msg=\"capture stopped\" component=capture video_frames=1799 video_dropped=0 audio_packets=3000 audio_dropped=0\n", 4799, false},
		{"last field", "level=INFO msg=\"capture stopped\" video_frames=10 audio_packets=5\n", 15, false},
		{"no line", "level=INFO msg=\"session started\"\n", 0, true},
		{"no audio", "level=INFO msg=\"capture stopped\" video_frames=10\n", 0, true},
		{"not a number", "level=INFO msg=\"capture stopped\" video_frames=x audio_packets=5\n", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := framesLogged(tt.log)
			if (err != nil) != tt.err || got != tt.want {
				t.Errorf("framesLogged = %d, %v; want %d, error %v", got, err, tt.want, tt.err)
			}
		})
	}
}
