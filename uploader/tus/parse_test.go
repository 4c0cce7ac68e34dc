package tus

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseOffset(t *testing.T) {
	tests := []struct {
		name   string
		in     string
		length int64
		want   int64
		ok     bool
	}{
		{"zero", "0", -1, 0, true},
		{"plain", "12345", -1, 12345, true},
		{"equal to length", "10", 10, 10, true},
		{"max int64", "9223372036854775807", -1, 1<<63 - 1, true},
		{"empty", "", -1, 0, false},
		{"negative", "-1", -1, 0, false},
		{"plus sign", "+1", -1, 0, false},
		{"leading zero", "01", -1, 0, false},
		{"space", " 1", -1, 0, false},
		{"trailing space", "1 ", -1, 0, false},
		{"hex", "0x10", -1, 0, false},
		{"float", "1.0", -1, 0, false},
		{"exponent", "1e3", -1, 0, false},
		{"overflow", "9223372036854775808", -1, 0, false},
		{"too long", "99999999999999999999", -1, 0, false},
		{"beyond length", "11", 10, 0, false},
		{"unicode digit", "١", -1, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseOffset(tt.in, tt.length)
			if (err == nil) != tt.ok || got != tt.want {
				t.Errorf("parseOffset(%q, %d) = %d, %v; want %d, ok %v", tt.in, tt.length, got, err, tt.want, tt.ok)
			}
		})
	}
}

func TestResolveLocation(t *testing.T) {
	ep, _ := url.Parse("https://receiver.test:8443/files/")
	tests := []struct {
		name, in, want string
	}{
		{"absolute", "https://receiver.test:8443/files/abc", "https://receiver.test:8443/files/abc"},
		{"host case", "https://RECEIVER.test:8443/files/abc", "https://RECEIVER.test:8443/files/abc"},
		{"absolute path", "/files/abc", "https://receiver.test:8443/files/abc"},
		{"relative", "abc", "https://receiver.test:8443/files/abc"},
		{"fragment dropped", "abc#x", "https://receiver.test:8443/files/abc"},
		{"other host", "https://evil.test/files/abc", ""},
		{"default port omitted", "https://receiver.test/files/abc", ""},
		{"other port", "https://receiver.test:9443/files/abc", ""},
		{"scheme relative other host", "//evil.test/files/abc", ""},
		{"downgrade", "http://receiver.test:8443/files/abc", ""},
		{"userinfo", "https://u:p@receiver.test:8443/files/abc", ""},
		{"empty", "", ""},
		{"newline", "abc\r\nX: y", ""},
		{"bad escape", "%zz", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := resolveLocation(ep, tt.in)
			got := ""
			if err == nil {
				got = u.String()
			}
			if got != tt.want {
				t.Errorf("resolveLocation(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestResolveLocationDefaultPort(t *testing.T) {
	ep, _ := url.Parse("https://receiver.test/files/")
	for _, loc := range []string{"https://receiver.test:443/files/a", "https://Receiver.Test/files/a"} {
		if _, err := resolveLocation(ep, loc); err != nil {
			t.Errorf("resolveLocation(%q): %v", loc, err)
		}
	}
	if _, err := resolveLocation(ep, "https://receiver.test:8443/files/a"); err == nil {
		t.Error("another port was accepted")
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 24, 3, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		in   string
		want time.Duration
		ok   bool
	}{
		{"seconds", "120", 2 * time.Minute, true},
		{"zero", "0", 0, true},
		{"padded", " 5 ", 5 * time.Second, true},
		{"http date", "Tue, 24 Nov 2026 03:00:30 GMT", 30 * time.Second, true},
		{"rfc850 date", "Tuesday, 24-Nov-26 03:01:00 GMT", time.Minute, true},
		{"past date", "Tue, 24 Nov 2026 02:00:00 GMT", 0, true},
		{"negative", "-5", 0, false},
		{"fraction", "1.5", 0, false},
		{"huge", "99999999999999999999999", 0, false},
		{"garbage", "soon", 0, false},
		{"empty", "", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseRetryAfter(tt.in, now)
			if (err == nil) != tt.ok || got != tt.want {
				t.Errorf("parseRetryAfter(%q) = %s, %v; want %s, ok %v", tt.in, got, err, tt.want, tt.ok)
			}
		})
	}
}

func FuzzParseOffset(f *testing.F) {
	f.Add("0", int64(-1))
	f.Add("123", int64(200))
	f.Add("-1", int64(-1))
	f.Add("9223372036854775807", int64(-1))
	f.Fuzz(func(t *testing.T, s string, length int64) {
		n, err := parseOffset(s, length)
		if err != nil {
			return
		}
		if n < 0 || (length >= 0 && n > length) {
			t.Fatalf("parseOffset(%q, %d) = %d", s, length, n)
		}
		// Strict: only the canonical form is accepted.
		if strconv.FormatInt(n, 10) != s {
			t.Fatalf("parseOffset accepted the non-canonical %q as %d", s, n)
		}
	})
}

func FuzzResolveLocation(f *testing.F) {
	f.Add("https://receiver.test:8443/files/abc")
	f.Add("/files/abc")
	f.Add("//evil.test/x")
	f.Add("https://evil.test/files/abc")
	ep, _ := url.Parse("https://receiver.test:8443/files/")
	f.Fuzz(func(t *testing.T, loc string) {
		u, err := resolveLocation(ep, loc)
		if err != nil {
			return
		}
		if u.Scheme != "https" || !strings.EqualFold(u.Hostname(), ep.Hostname()) || u.Port() != ep.Port() || u.User != nil {
			t.Fatalf("resolveLocation(%q) = %s: left the endpoint", loc, u)
		}
		// What we return must parse back to the same place.
		back, err := url.Parse(u.String())
		if err != nil || !strings.EqualFold(back.Hostname(), ep.Hostname()) || back.Port() != ep.Port() {
			t.Fatalf("resolveLocation(%q) = %q does not round-trip: %v", loc, u, err)
		}
	})
}

func FuzzParseRetryAfter(f *testing.F) {
	f.Add("120")
	f.Add("Tue, 24 Nov 2026 03:00:30 GMT")
	f.Add("soon")
	now := time.Date(2026, 11, 24, 3, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseRetryAfter(s, now)
		if err != nil {
			return
		}
		if d < 0 {
			t.Fatalf("parseRetryAfter(%q) = %s, negative", s, d)
		}
	})
}

// FuzzHeadResponse drives the client's HEAD handling with arbitrary
// Upload-Offset and Upload-Length values.
func FuzzHeadResponse(f *testing.F) {
	f.Add("5", "10")
	f.Add("11", "10")
	f.Add("0", "")
	f.Add("", "0")
	f.Fuzz(func(t *testing.T, offset, length string) {
		c := NewClient(&http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			h := http.Header{}
			if offset != "" {
				h["Upload-Offset"] = []string{offset}
			}
			if length != "" {
				h["Upload-Length"] = []string{length}
			}
			return &http.Response{StatusCode: 200, Header: h, Body: http.NoBody, Request: r}, nil
		})}, fakeEndpoint, Options{})
		off, err := c.Offset(t.Context(), fakeUpload)
		if err != nil {
			if !strings.Contains(err.Error(), fakeUpload) {
				t.Fatalf("error %q does not name the URL", err)
			}
			return
		}
		if off < 0 || offset != strconv.FormatInt(off, 10) {
			t.Fatalf("Offset = %d from %q", off, offset)
		}
		if n, err := strconv.ParseInt(length, 10, 64); err == nil && off > n {
			t.Fatalf("Offset %d beyond length %d", off, n)
		}
	})
}
