package audit

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Failures writes failed-authentication entries so that a flood cannot
// fill the disk: for each (event, source) the first failure of a window is
// appended at once; later ones in the same window are only counted, and
// one summary entry per (event, source) says how many there were when the
// window closes. At most MaxKeys pairs are tracked per window; failures
// from further sources are counted under the source "*".
//
// A source is the remote address with its port removed, so that a client
// cannot open a new window by opening a new connection.
type Failures struct {
	log    appender
	window time.Duration
	// MaxKeys bounds the memory one window takes (default 1024).
	MaxKeys int
	now     func() time.Time

	mu      sync.Mutex
	start   time.Time
	pending map[failureKey]*failureCount
}

type failureKey struct{ event, source string }

type failureCount struct {
	outcome    string
	n          int
	identities []string // the first few distinct names tried
}

// maxNamesPerSummary bounds how many tried names a summary repeats.
const maxNamesPerSummary = 3

// appender is where Failures writes: a *Log, or a chain kept elsewhere.
type appender interface {
	Append(Entry) (Entry, error)
}

// NewFailures coalesces failures appended to l (a *Log, or any chain with
// its Append) over windows of the given length (one minute if zero).
func NewFailures(l appender, window time.Duration) *Failures {
	if window <= 0 {
		window = time.Minute
	}
	return &Failures{log: l, window: window, MaxKeys: 1024, now: time.Now, pending: map[failureKey]*failureCount{}}
}

// SourceOf is the part of a remote address a window is keyed on: the host
// without the port.
func SourceOf(remoteAddr string) string {
	if host, _, err := net.SplitHostPort(remoteAddr); err == nil {
		return host
	}
	return remoteAddr
}

// Record notes one failure. The first of its (event, source) in the
// current window is appended at once and returned with wrote true.
func (f *Failures) Record(e Entry) (wrote bool, err error) {
	e.Source = SourceOf(e.Source)
	f.mu.Lock()
	now := f.now()
	var flush []Entry
	if !f.start.IsZero() && now.Sub(f.start) >= f.window {
		flush = f.takeLocked(now)
	}
	if f.start.IsZero() {
		f.start = now
	}
	k := failureKey{e.Event, e.Source}
	c, seen := f.pending[k]
	if !seen && len(f.pending) >= f.MaxKeys {
		k.source = "*"
		c, seen = f.pending[k]
	}
	if !seen {
		// The first failure of a source is written in full; only the
		// repeats are counted.
		f.pending[k] = &failureCount{outcome: e.Outcome}
		f.mu.Unlock()
		if err := f.append(flush); err != nil {
			return false, err
		}
		if k.source == "*" {
			e.Detail = strings.TrimSpace(e.Detail + " (tracking limit reached: further sources are counted under \"*\")")
		}
		_, err := f.log.Append(e)
		return err == nil, err
	}
	c.n++
	if e.Identity != "" && len(c.identities) < maxNamesPerSummary && !slices.Contains(c.identities, e.Identity) {
		c.identities = append(c.identities, truncate(e.Identity, 64))
	}
	f.mu.Unlock()
	return false, f.append(flush)
}

// Flush appends the summaries of the current window and starts a new one.
func (f *Failures) Flush() error {
	f.mu.Lock()
	flush := f.takeLocked(f.now())
	f.mu.Unlock()
	return f.append(flush)
}

// Run flushes at the end of every window until ctx is done, then once more.
func (f *Failures) Run(ctx context.Context) error {
	t := time.NewTicker(f.window)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return f.Flush()
		case <-t.C:
			f.mu.Lock()
			var flush []Entry
			if !f.start.IsZero() && f.now().Sub(f.start) >= f.window {
				flush = f.takeLocked(f.now())
			}
			f.mu.Unlock()
			if err := f.append(flush); err != nil {
				return err
			}
		}
	}
}

// takeLocked turns the counted repeats into summary entries, in a stable
// order, and resets the window.
func (f *Failures) takeLocked(now time.Time) []Entry {
	var out []Entry
	for k, c := range f.pending {
		if c.n == 0 {
			continue
		}
		detail := fmt.Sprintf("%d more failures from %s between %s and %s (coalesced)", c.n, k.source, f.start.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		if len(c.identities) > 0 {
			detail += "; names tried include " + strings.Join(c.identities, ", ")
		}
		out = append(out, Entry{Event: k.event, Source: k.source, Outcome: c.outcome, Detail: detail})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Event != out[j].Event {
			return out[i].Event < out[j].Event
		}
		return out[i].Source < out[j].Source
	})
	f.pending = map[failureKey]*failureCount{}
	f.start = time.Time{}
	return out
}

func (f *Failures) append(es []Entry) error {
	for _, e := range es {
		if _, err := f.log.Append(e); err != nil {
			return err
		}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
