package link

import (
	"math/rand/v2"
	"testing"
	"time"
)

func TestBackoffBoundedAndJittered(t *testing.T) {
	const limit = 60 * time.Second
	for failures := 0; failures <= 40; failures++ {
		base := min(limit, time.Second<<min(max(failures-1, 0), 20))
		lo := Backoff(failures, limit, func(int64) int64 { return 0 })
		hi := Backoff(failures, limit, func(n int64) int64 { return n - 1 })
		if lo != base/2 || hi != base {
			t.Fatalf("failures=%d: wait spans [%s, %s], want [%s, %s]", failures, lo, hi, base/2, base)
		}
		if hi > limit {
			t.Fatalf("failures=%d: wait %s over the cap %s", failures, hi, limit)
		}
	}
	// Grows: the first waits are short, later ones reach the cap.
	if w := Backoff(1, limit, func(n int64) int64 { return n - 1 }); w != time.Second {
		t.Fatalf("first wait at most %s, want 1s", w)
	}
	if w := Backoff(30, limit, func(int64) int64 { return 0 }); w != limit/2 {
		t.Fatalf("late wait at least %s, want %s", w, limit/2)
	}
	// Jittered: boxes cut off together spread their retries.
	seen := map[time.Duration]bool{}
	for range 50 {
		w := Backoff(6, limit, rand.Int64N)
		if w < 16*time.Second || w > 32*time.Second {
			t.Fatalf("wait %s outside [16s, 32s]", w)
		}
		seen[w] = true
	}
	if len(seen) < 10 {
		t.Fatalf("50 waits took only %d values: not jittered", len(seen))
	}
}
