package audit

import (
	"bufio"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Tail returns the last n entries of the log at path, oldest first (all of
// them when n <= 0). It reads; it does not verify the chain (Verify does).
func Tail(path string, n int) ([]Entry, error) { return List(path, Filter{Last: n}) }

// Filter selects the entries List returns.
type Filter struct {
	// Since: entries at or after this time (zero: from the first).
	Since time.Time `json:"since,omitzero"`
	// Types: entries whose event is one of these, or has one of them as
	// a dot-separated part ("login" selects "viewer.login", "device"
	// every "device.…"); empty: every event.
	Types []string `json:"types,omitempty"`
	// Last keeps only the last N selected entries (0: all of them).
	Last int `json:"last,omitempty"`
}

// Match reports whether e passes f's time and type conditions.
func (f Filter) Match(e Entry) bool {
	if !f.Since.IsZero() && e.Time.Before(f.Since) {
		return false
	}
	if len(f.Types) == 0 {
		return true
	}
	parts := strings.Split(e.Event, ".")
	for _, t := range f.Types {
		if t == e.Event {
			return true
		}
		for _, p := range parts {
			if t == p {
				return true
			}
		}
	}
	return false
}

// List returns the entries of the log at path that f selects, oldest
// first. It reads under a shared lock, so it never sees half an append;
// it does not verify the chain (Verify does).
func List(path string, f Filter) ([]Entry, error) {
	file, err := lockPath(path, os.O_RDONLY, syscall.LOCK_SH)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	return list(file, path, f)
}

func list(r io.Reader, path string, f Filter) ([]Entry, error) {
	var out []Entry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		var e Entry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return nil, fmt.Errorf("audit log %s: line %d is not an entry (run audit verify): %w", path, line, err)
		}
		if !f.Match(e) {
			continue
		}
		out = append(out, e)
		if n := f.Last; n > 0 && len(out) > 2*n {
			out = append(out[:0], out[len(out)-n:]...)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("audit log %s: %w", path, err)
	}
	if n := f.Last; n > 0 && len(out) > n {
		out = out[len(out)-n:]
	}
	return out, nil
}

// ErrBadSince: a --since value that is neither a duration nor a time.
var ErrBadSince = errors.New("give a duration back from now (24h, 90m, 7d) or a time (2026-11-24 or 2026-11-24T09:00:00Z)")

// ParseSince reads a --since value: a duration back from now ("24h",
// "90m", "7d": Go durations plus whole days) or a time (RFC 3339, or a
// date, which means its midnight UTC).
func ParseSince(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if days, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.Atoi(days); err == nil && n >= 0 && n <= 100*366 {
			return now.Add(-time.Duration(n) * 24 * time.Hour), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	for _, layout := range []string{time.RFC3339Nano, time.DateOnly} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("--since %q: %w", s, ErrBadSince)
}

// Entries returns the entries of the log that f selects, as List does.
func (l *Log) Entries(f Filter) ([]Entry, error) { return List(l.path, f) }

// Size is the log file's size in bytes.
func (l *Log) Size() (int64, error) {
	st, err := os.Stat(l.path)
	if err != nil {
		return 0, fmt.Errorf("audit log: %w", err)
	}
	return st.Size(), nil
}

// VerifyAnchored verifies the log against its checkpoints file, as the
// function VerifyAnchored does.
func (l *Log) VerifyAnchored(key ed25519.PublicKey) (Report, error) {
	return VerifyAnchored(l.path, key)
}

// Snapshot returns the log at path and its checkpoints file (nil if there
// is none), read together under the log's lock: every checkpoint in the
// copy signs an entry of the copied log (checkpoints are written under
// the exclusive lock).
func Snapshot(path string) (log, checkpoints []byte, err error) {
	f, err := lockPath(path, os.O_RDONLY, syscall.LOCK_SH)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	if log, err = io.ReadAll(f); err != nil {
		return nil, nil, fmt.Errorf("audit log %s: %w", path, err)
	}
	checkpoints, err = os.ReadFile(CheckpointPath(path))
	if errors.Is(err, os.ErrNotExist) {
		return log, nil, nil
	}
	return log, checkpoints, err
}
