// Package confcheck is what the project's two YAML configuration files
// (the box's agent/config and the receiver's serve --config) share in
// reporting problems: one Problem per bad key with its line, an Error that
// lists them all, "did you mean" for a misspelt key, and durations that
// may be given in days.
package confcheck

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Problem is one thing wrong with a config, at its key.
type Problem struct {
	Key  string // dotted path, e.g. capture.fps
	Line int    // line in the file; 0 for an environment override or a check across keys
	Msg  string
}

func (p Problem) String() string {
	if p.Line > 0 {
		return fmt.Sprintf("%s (line %d): %s", p.Key, p.Line, p.Msg)
	}
	return fmt.Sprintf("%s: %s", p.Key, p.Msg)
}

// Error lists every problem of a config file.
type Error struct {
	File     string
	Problems []Problem
}

func (e *Error) Error() string {
	var b strings.Builder
	src := e.File
	if src == "" {
		src = "config"
	}
	fmt.Fprintf(&b, "%s: %d problem(s):", src, len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.String())
	}
	return b.String()
}

// UnknownKey is the message for a key that is not one of names: the
// closest known key if one is close, else the list of them.
func UnknownKey(k, prefix string, names []string) string {
	if s := suggest(k, names); s != "" {
		return fmt.Sprintf("unknown key (did you mean %s?)", KeyOf(prefix, s))
	}
	return fmt.Sprintf("unknown key (known here: %s)", strings.Join(names, ", "))
}

// KeyOf joins a dotted key's prefix and name.
func KeyOf(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

// suggest returns the known key closest to k, if it is close.
func suggest(k string, names []string) string {
	best, bestD := "", 3
	for _, n := range names {
		if d := distance(k, n); d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// ParseDuration accepts Go durations and whole days ("180d").
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err == nil && n >= 0 {
			return time.Duration(n) * 24 * time.Hour, nil
		}
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("%q is not a duration: write e.g. 10s, 45m, 2h or 180d", s)
	}
	return v, nil
}
