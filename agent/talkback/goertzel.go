package talkback

import "math"

// Power is the power of pcm (48 kHz) at freq Hz, by the Goertzel
// algorithm, normalised by the length: a full-scale sine gives about
// 2^30/4. The tests and the bench use it to find a tone in what was
// played.
func Power(pcm []int16, freq float64) float64 {
	if len(pcm) == 0 {
		return 0
	}
	w := 2 * math.Pi * freq / SampleRate
	c := 2 * math.Cos(w)
	var s1, s2 float64
	for _, v := range pcm {
		s0 := float64(v) + c*s1 - s2
		s2, s1 = s1, s0
	}
	p := s1*s1 + s2*s2 - c*s1*s2
	n := float64(len(pcm))
	return p / (n * n)
}
