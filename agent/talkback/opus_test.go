package talkback

import (
	"math"
	"testing"
)

// tone returns n samples of a sine at freq Hz starting at sample start.
func tone(freq float64, start, n int) []int16 {
	out := make([]int16, n)
	for i := range out {
		out[i] = int16(12000 * math.Sin(2*math.Pi*freq*float64(start+i)/SampleRate))
	}
	return out
}

// TestOpusRoundTrip: a 440 Hz tone encoded and decoded by the libopus the
// binary links is still 440 Hz, and a damaged packet is an error.
func TestOpusRoundTrip(t *testing.T) {
	enc, err := NewEncoder()
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	dec, err := NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	var out []int16
	for i := range 50 {
		pkt, err := enc.Encode(tone(440, i*FrameSamples, FrameSamples))
		if err != nil {
			t.Fatal(err)
		}
		pcm, err := dec.Decode(pkt)
		if err != nil {
			t.Fatal(err)
		}
		if len(pcm) != FrameSamples {
			t.Fatalf("decoded %d samples, want %d", len(pcm), FrameSamples)
		}
		out = append(out, pcm...)
	}
	tail := out[len(out)/2:]
	if p, q := Power(tail, 440), Power(tail, 880); p < 100*q || p < 1e6 {
		t.Fatalf("decoded tone: power at 440 Hz %.3g, at 880 Hz %.3g: the tone did not survive", p, q)
	}
	if _, err := dec.Decode([]byte{0xff, 0xff, 0xff}); err == nil {
		t.Fatal("a corrupt packet decoded without an error")
	}
}

// TestPeak: the FFT finds a tone within half a hertz.
func TestPeak(t *testing.T) {
	for _, f := range []float64{440, 437.3, 880, 1234.5} {
		if got := Peak(tone(f, 0, SampleRate), 50, 4000); math.Abs(got-f) > 0.5 {
			t.Errorf("Peak of %.1f Hz: %.2f", f, got)
		}
	}
}
