package capture

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

func TestMeasureVideoTestPattern(t *testing.T) {
	tests := []struct {
		name string
		fps  int
		d    time.Duration
	}{
		{"10 fps for 2s", 10, 2 * time.Second},
		{"30 fps for 1s", 30, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg := Config{Source: SourceTest, Width: 64, Height: 36, FPS: tt.fps}
				st, err := MeasureVideo(t.Context(), cfg, tt.d)
				if err != nil {
					t.Fatal(err)
				}
				wantFrames := int(tt.d.Seconds()*float64(tt.fps)) + 1
				if st.Frames != wantFrames || math.Abs(st.FPS-float64(tt.fps)) > 0.01 || st.Span != tt.d || st.Lost != 0 {
					t.Fatalf("got %+v, want %d frames over %v at %d fps, none lost", st, wantFrames, tt.d, tt.fps)
				}
			})
		})
	}
}

// TestMeasureAudioTestTone checks the level against the tone's known
// shape: over one whole second, 900 ms of a sine at toneLevel and 100 ms
// at beepLevel.
func TestMeasureAudioTestTone(t *testing.T) {
	beep := beepLength.Seconds()
	meanSquare := (1-beep)*math.Pow(toneLevel*math.MaxInt16, 2)/2 + beep*math.Pow(beepLevel*math.MaxInt16, 2)/2
	wantRMS := 20 * math.Log10(math.Sqrt(meanSquare)/32768)
	wantPeak := 20 * math.Log10(beepLevel*math.MaxInt16/32768)
	for _, channels := range []int{1, 2} {
		t.Run(map[int]string{1: "mono", 2: "stereo"}[channels], func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				cfg := Config{Source: SourceTest, Audio: true, Channels: channels}
				l, err := MeasureAudio(t.Context(), cfg, time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if l.Samples != SampleRate*channels {
					t.Errorf("measured %d samples, want %d", l.Samples, SampleRate*channels)
				}
				if math.Abs(l.RMS-wantRMS) > 0.05 {
					t.Errorf("RMS %.3f dBFS, want %.3f", l.RMS, wantRMS)
				}
				if math.Abs(l.Peak-wantPeak) > 0.05 {
					t.Errorf("peak %.3f dBFS, want %.3f", l.Peak, wantPeak)
				}
				if l.Clipped != 0 {
					t.Errorf("clipped fraction %g, want 0", l.Clipped)
				}
			})
		})
	}
}

func TestLevelMeter(t *testing.T) {
	tests := []struct {
		name        string
		samples     []int16
		rms, peak   float64
		clippedFrac float64
	}{
		{"silence", make([]int16, 100), SilenceFloor, SilenceFloor, 0},
		{"full scale square", []int16{-32768, 32767, -32768, 32767}, 20 * math.Log10(math.Sqrt((32768.0*32768+32767.0*32767)/2)/32768), 0, 1},
		{"half clipped", []int16{32767, 0, -32767, 0}, 20 * math.Log10(math.Sqrt(32767.0*32767/2)/32768), 20 * math.Log10(32767.0/32768), 0.5},
		{"just below the clip level", []int16{int16(clipAt - 1), 0}, 20 * math.Log10(math.Sqrt(float64(clipAt-1)*float64(clipAt-1)/2)/32768), 20 * math.Log10(float64(clipAt-1)/32768), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m levelMeter
			m.add(tt.samples)
			l := m.level()
			if l.Samples != len(tt.samples) || math.Abs(l.RMS-tt.rms) > 1e-9 || math.Abs(l.Peak-tt.peak) > 1e-9 || l.Clipped != tt.clippedFrac {
				t.Fatalf("got %+v, want rms %g peak %g clipped %g", l, tt.rms, tt.peak, tt.clippedFrac)
			}
		})
	}
}

func TestMeasureAudioOff(t *testing.T) {
	_, err := MeasureAudio(t.Context(), Config{Source: SourceTest, Audio: false}, time.Second)
	if err == nil || !strings.Contains(err.Error(), "audio is off") {
		t.Fatalf("audio off: got %v, want a refusal", err)
	}
}

func TestMeasureVideoNoCamera(t *testing.T) {
	const dev = "/dev/video-nonexistent"
	_, err := MeasureVideo(t.Context(), Config{Source: SourceCamera, Device: dev}, time.Second)
	if !errors.Is(err, ErrNoDevice) || !strings.Contains(err.Error(), dev) {
		t.Fatalf("got %v, want ErrNoDevice naming %s", err, dev)
	}
}

func TestMeasureCancelled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		time.AfterFunc(500*time.Millisecond, cancel)
		st, err := MeasureVideo(ctx, Config{Source: SourceTest, Width: 64, Height: 36, FPS: 10}, time.Hour)
		if !errors.Is(err, context.Canceled) || st.Frames == 0 {
			t.Fatalf("cancelled video measurement: %+v, %v; want some frames and context.Canceled", st, err)
		}
		ctx, cancel = context.WithCancel(t.Context())
		time.AfterFunc(500*time.Millisecond, cancel)
		if _, err := MeasureAudio(ctx, Config{Source: SourceTest, Audio: true}, time.Hour); !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled audio measurement: %v, want context.Canceled", err)
		}
	})
}
