// Package limit is the receiver's per-key token buckets (one per source
// address, one per account name) in front of its authentication endpoints.
package limit

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// DefaultMaxKeys bounds how many buckets one Keyed holds.
const DefaultMaxKeys = 10000

// Keyed holds one token bucket per key. Buckets that have refilled are
// the same as new ones and are dropped when the table is full; if it is
// still full, an arbitrary bucket is dropped (the limit on the other key,
// the source address, still holds).
type Keyed struct {
	every rate.Limit
	burst int
	max   int
	now   func() time.Time

	mu sync.Mutex
	m  map[string]*rate.Limiter
}

// NewKeyed allows each key perSecond requests per second on average and
// burst at once.
func NewKeyed(perSecond float64, burst int) *Keyed {
	return &Keyed{every: rate.Limit(perSecond), burst: max(burst, 1), max: DefaultMaxKeys, now: time.Now, m: map[string]*rate.Limiter{}}
}

// SetLimit changes the rate and burst of every bucket, the existing ones
// included.
func (k *Keyed) SetLimit(perSecond float64, burst int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	k.every, k.burst = rate.Limit(perSecond), max(burst, 1)
	for _, l := range k.m {
		l.SetLimitAt(now, k.every)
		l.SetBurstAt(now, k.burst)
	}
}

// Allow takes a token from key's bucket. Without one it reports how long
// until the next token (at least a second, for a Retry-After header).
func (k *Keyed) Allow(key string) (ok bool, retry time.Duration) {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	l, found := k.m[key]
	if !found {
		if len(k.m) >= k.max {
			k.sweepLocked(now)
		}
		l = rate.NewLimiter(k.every, k.burst)
		k.m[key] = l
	}
	if l.AllowN(now, 1) {
		return true, 0
	}
	r := l.ReserveN(now, 1)
	d := r.DelayFrom(now)
	r.CancelAt(now)
	if !r.OK() || d > time.Hour {
		d = time.Hour
	}
	return false, max(d, time.Second)
}

func (k *Keyed) sweepLocked(now time.Time) {
	for key, l := range k.m {
		if l.TokensAt(now) >= float64(k.burst) {
			delete(k.m, key)
		}
	}
	for key := range k.m {
		if len(k.m) < k.max {
			break
		}
		delete(k.m, key)
	}
}

// RetryAfter formats d as a Retry-After value: whole seconds, rounded up.
func RetryAfter(d time.Duration) string {
	return strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10)
}

// ParseRate reads "N/s", "N/min" or "N/h" (N a positive number) as a rate
// per second.
func ParseRate(s string) (float64, error) {
	num, unit, ok := strings.Cut(strings.TrimSpace(s), "/")
	per := map[string]time.Duration{"s": time.Second, "sec": time.Second, "min": time.Minute, "m": time.Minute, "h": time.Hour}[unit]
	n, err := strconv.ParseFloat(num, 64)
	if !ok || per == 0 || err != nil || n <= 0 || n > 1e6 {
		return 0, fmt.Errorf("rate %q: write N/s, N/min or N/h with N a positive number, e.g. 10/min", s)
	}
	return n / per.Seconds(), nil
}
