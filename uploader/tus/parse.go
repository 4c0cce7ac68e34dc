package tus

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"
)

// maxInt64Digits bounds Upload-Offset so that parsing never overflows int64.
const maxInt64Digits = 19

// parseOffset parses an Upload-Offset (or Upload-Length) value strictly: plain
// decimal digits, no sign, no spaces, no leading zeros, and at most length when
// length is not negative.
func parseOffset(v string, length int64) (int64, error) {
	if v == "" {
		return 0, errors.New("empty value")
	}
	if len(v) > maxInt64Digits {
		return 0, fmt.Errorf("%q is too long", truncate(v, 32))
	}
	if len(v) > 1 && v[0] == '0' {
		return 0, fmt.Errorf("%q has a leading zero", v)
	}
	var n int64
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c < '0' || c > '9' {
			return 0, fmt.Errorf("%q is not a non-negative decimal integer", truncate(v, 32))
		}
		d := int64(c - '0')
		if n > (1<<63-1-d)/10 {
			return 0, fmt.Errorf("%q overflows int64", v)
		}
		n = n*10 + d
	}
	if length >= 0 && n > length {
		return 0, fmt.Errorf("%d exceeds the upload length %d", n, length)
	}
	return n, nil
}

// resolveLocation resolves a Location (or an upload URL given by a caller)
// against the endpoint and refuses anything that would send the upload, and
// the auth headers that go with it, to another scheme or host.
func resolveLocation(endpoint *url.URL, loc string) (*url.URL, error) {
	if loc == "" {
		return nil, errors.New("empty location")
	}
	if strings.ContainsAny(loc, " \t\r\n\x00") {
		return nil, fmt.Errorf("location %q contains whitespace or control characters", truncate(loc, 64))
	}
	ref, err := url.Parse(loc)
	if err != nil {
		return nil, fmt.Errorf("location %q: %w", truncate(loc, 64), err)
	}
	u := endpoint.ResolveReference(ref)
	if u.Scheme != endpoint.Scheme || !sameHost(u, endpoint) {
		return nil, fmt.Errorf("location %q points to %s://%s, not to the endpoint %s://%s", truncate(loc, 64), u.Scheme, u.Host, endpoint.Scheme, endpoint.Host)
	}
	if u.User != nil {
		return nil, fmt.Errorf("location %q carries user information", truncate(loc, 64))
	}
	u.Fragment = ""
	u.RawFragment = ""
	return u, nil
}

// sameHost compares host names without case and ports with the scheme's
// default filled in, so that "h" and "h:443" match for https.
func sameHost(a, b *url.URL) bool {
	return strings.EqualFold(a.Hostname(), b.Hostname()) && portOf(a) == portOf(b)
}

func portOf(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	switch u.Scheme {
	case "https":
		return "443"
	case "http":
		return "80"
	}
	return ""
}

// maxRetryAfterSeconds bounds the delta-seconds form so a huge value cannot
// overflow time.Duration; callers cap the delay further.
const maxRetryAfterSeconds = 1 << 31

// parseRetryAfter parses a Retry-After value: delta-seconds or an HTTP date
// (relative to now). A date in the past gives 0.
func parseRetryAfter(v string, now time.Time) (time.Duration, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, errors.New("empty value")
	}
	if v[0] >= '0' && v[0] <= '9' {
		var n int64
		for i := 0; i < len(v); i++ {
			c := v[i]
			if c < '0' || c > '9' {
				return 0, fmt.Errorf("%q is neither delta-seconds nor an HTTP date", truncate(v, 40))
			}
			n = n*10 + int64(c-'0')
			if n > maxRetryAfterSeconds {
				return 0, fmt.Errorf("%q is too large", truncate(v, 40))
			}
		}
		return time.Duration(n) * time.Second, nil
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, fmt.Errorf("%q is neither delta-seconds nor an HTTP date", truncate(v, 40))
	}
	d := t.Sub(now)
	if d < 0 {
		d = 0
	}
	return d, nil
}

// encodeMetadata builds an Upload-Metadata value. Keys must be non-empty
// printable ASCII without spaces or commas; values are base64 encoded. Keys are
// sorted so that the header is deterministic.
func encodeMetadata(md map[string]string) (string, error) {
	keys := make([]string, 0, len(md))
	for k := range md {
		if err := validKey(k); err != nil {
			return "", err
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k)
		if v := md[k]; v != "" {
			b.WriteByte(' ')
			b.WriteString(base64.StdEncoding.EncodeToString([]byte(v)))
		}
	}
	return b.String(), nil
}

func validKey(k string) error {
	if k == "" {
		return fmt.Errorf("%w: empty key", ErrMetadata)
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c <= ' ' || c > '~' || c == ',' {
			return fmt.Errorf("%w: key %q must be printable ASCII without spaces or commas", ErrMetadata, truncate(k, 40))
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
