package talkback

import (
	"math"
	"math/cmplx"
)

// Power is the power of pcm (48 kHz) at freq Hz, by the Goertzel
// algorithm, normalised by the length: a sine of amplitude A gives about
// A²/4. The tests and the bench use it to find a tone in what was played.
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

// Peak returns the strongest frequency of pcm (48 kHz) between lo and hi
// Hz, by an FFT of its first 2^k samples (at most 2^16: 0.73 Hz a bin)
// with a Hann window, refined between bins by a parabola through the
// neighbouring magnitudes. It returns 0 for fewer than 1024 samples.
func Peak(pcm []int16, lo, hi float64) float64 {
	n := 1024
	if len(pcm) < n {
		return 0
	}
	for n*2 <= len(pcm) && n < 1<<16 {
		n *= 2
	}
	x := make([]complex128, n)
	for i := range x {
		w := 0.5 - 0.5*math.Cos(2*math.Pi*float64(i)/float64(n-1))
		x[i] = complex(w*float64(pcm[i]), 0)
	}
	fft(x)
	bin := float64(SampleRate) / float64(n)
	best, bestMag := 0, -1.0
	for k := max(1, int(lo/bin)); k < min(n/2-1, int(hi/bin)+1); k++ {
		if m := cmplx.Abs(x[k]); m > bestMag {
			best, bestMag = k, m
		}
	}
	if best == 0 {
		return 0
	}
	a, b, c := cmplx.Abs(x[best-1]), bestMag, cmplx.Abs(x[best+1])
	shift := 0.0
	if d := a - 2*b + c; d != 0 {
		shift = 0.5 * (a - c) / d
	}
	return (float64(best) + shift) * bin
}

// fft is an in-place radix-2 FFT; len(x) is a power of two.
func fft(x []complex128) {
	n := len(x)
	for i, j := 1, 0; i < n; i++ {
		bit := n >> 1
		for ; j&bit != 0; bit >>= 1 {
			j ^= bit
		}
		j ^= bit
		if i < j {
			x[i], x[j] = x[j], x[i]
		}
	}
	for size := 2; size <= n; size <<= 1 {
		step := cmplx.Exp(complex(0, -2*math.Pi/float64(size)))
		for start := 0; start < n; start += size {
			w := complex(1, 0)
			for k := range size / 2 {
				u, v := x[start+k], w*x[start+k+size/2]
				x[start+k], x[start+k+size/2] = u+v, u-v
				w *= step
			}
		}
	}
}
