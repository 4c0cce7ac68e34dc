package tus

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// roundTripFunc is a hand-written fake transport.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func response(r *http.Request, code int, header ...string) *http.Response {
	h := http.Header{}
	for i := 0; i+1 < len(header); i += 2 {
		h.Add(header[i], header[i+1])
	}
	return &http.Response{StatusCode: code, Header: h, Body: io.NopCloser(strings.NewReader("")), Request: r}
}

var fakeEndpoint = &url.URL{Scheme: "https", Host: "receiver.test:8443", Path: "/files/"}

const fakeUpload = "https://receiver.test:8443/files/abc"

// fakeServer is an in-memory tus server; patchFault, if set, may answer a
// PATCH instead (by number, from 0) before it is applied.
type fakeServer struct {
	mu         sync.Mutex
	size       int64
	data       []byte
	patches    int
	heads      []time.Time
	patchFault func(n int, r *http.Request) (*http.Response, error)
}

func (f *fakeServer) client() *http.Client {
	return &http.Client{Transport: roundTripFunc(f.roundTrip)}
}

func (f *fakeServer) roundTrip(r *http.Request) (*http.Response, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch r.Method {
	case http.MethodHead:
		f.heads = append(f.heads, time.Now())
		return response(r, 200, "Upload-Offset", strconv.Itoa(len(f.data)), "Upload-Length", strconv.FormatInt(f.size, 10)), nil
	case http.MethodPatch:
		n := f.patches
		f.patches++
		if f.patchFault != nil {
			if resp, err := f.patchFault(n, r); resp != nil || err != nil {
				if r.Body != nil {
					_, _ = io.Copy(io.Discard, r.Body)
				}
				return resp, err
			}
		}
		if r.Header.Get("Upload-Offset") != strconv.Itoa(len(f.data)) {
			return response(r, 409), nil
		}
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return nil, err
		}
		f.data = append(f.data, b...)
		return response(r, 204, "Upload-Offset", strconv.Itoa(len(f.data))), nil
	}
	return response(r, 405), nil
}

func TestBackoffTiming(t *testing.T) {
	tests := []struct {
		name       string
		failures   int
		opts       Options
		wantGaps   []time.Duration
		wantGaveUp bool
	}{
		{
			name:     "exponential up to the cap",
			failures: 6,
			opts:     Options{BackoffMin: 500 * time.Millisecond, BackoffMax: 4 * time.Second, MaxAttempts: -1},
			wantGaps: []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second, 4 * time.Second},
		},
		{
			name:     "defaults",
			failures: 3,
			wantGaps: []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second},
		},
		{
			name:       "max attempts",
			failures:   100,
			opts:       Options{BackoffMin: time.Second, MaxAttempts: 3},
			wantGaps:   []time.Duration{time.Second, 2 * time.Second},
			wantGaveUp: true,
		},
		{
			name:       "max elapsed",
			failures:   100,
			opts:       Options{BackoffMin: time.Second, MaxAttempts: -1, MaxElapsed: 10 * time.Second},
			wantGaps:   []time.Duration{time.Second, 2 * time.Second, 4 * time.Second}, // the next 8 s would end at 15 s
			wantGaveUp: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := &fakeServer{size: 10, patchFault: func(n int, r *http.Request) (*http.Response, error) {
					if n < tt.failures {
						return response(r, 500), nil
					}
					return nil, nil
				}}
				opts := tt.opts
				opts.ChunkSize = 10
				opts.Jitter = func(d time.Duration) time.Duration { return d } // the top of the range
				c := NewClient(f.client(), fakeEndpoint, opts)
				err := c.Upload(t.Context(), fakeUpload, bytes.NewReader([]byte("0123456789")), 10, nil)
				if tt.wantGaveUp != errors.Is(err, ErrGaveUp) {
					t.Fatalf("err = %v, want gave up: %v", err, tt.wantGaveUp)
				}
				var gaps []time.Duration
				for i := 1; i < len(f.heads); i++ {
					gaps = append(gaps, f.heads[i].Sub(f.heads[i-1]))
				}
				if !equalDurations(gaps, tt.wantGaps) {
					t.Errorf("gaps between attempts %v, want %v", gaps, tt.wantGaps)
				}
			})
		})
	}
}

func TestFullJitter(t *testing.T) {
	c := NewClient(nil, fakeEndpoint, Options{BackoffMin: 100 * time.Millisecond, BackoffMax: time.Second})
	for failures := 1; failures <= 40; failures++ {
		ceiling := min(time.Second, 100*time.Millisecond<<(failures-1))
		if failures > 10 {
			ceiling = time.Second
		}
		seen := map[time.Duration]bool{}
		for range 50 {
			d := c.backoff(failures)
			if d < 0 || d >= ceiling {
				t.Fatalf("backoff(%d) = %s, want in [0, %s)", failures, d, ceiling)
			}
			seen[d] = true
		}
		if len(seen) < 10 {
			t.Errorf("backoff(%d) gave only %d distinct delays in 50 draws", failures, len(seen))
		}
	}
}

func TestFailuresResetOnProgress(t *testing.T) {
	// Every other PATCH fails; with MaxAttempts 2 the upload still finishes
	// because each success resets the count.
	synctest.Test(t, func(t *testing.T) {
		f := &fakeServer{size: 50, patchFault: func(n int, r *http.Request) (*http.Response, error) {
			if n%2 == 0 {
				return nil, errors.New("connection reset by peer")
			}
			return nil, nil
		}}
		c := NewClient(f.client(), fakeEndpoint, Options{ChunkSize: 10, MaxAttempts: 2})
		data := randomBytes(50, 1)
		if err := c.Upload(t.Context(), fakeUpload, bytes.NewReader(data), 50, nil); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(f.data, data) {
			t.Fatal("data differs")
		}
		if st := c.Stats(); st.Retries != 5 || st.BytesSent != 100 {
			t.Errorf("stats %+v, want 5 retries and 100 bytes (each failed PATCH read its chunk)", st)
		}
	})
}

// TestResponseParsing checks that bad or missing headers give errors that
// name the header and the URL, and are not retried.
func TestResponseParsing(t *testing.T) {
	type rt = func(r *http.Request) (*http.Response, error)
	tests := []struct {
		name    string
		op      string // create, offset, upload
		rt      rt
		wantErr []string
		proto   bool
	}{
		{"create without Location", "create", func(r *http.Request) (*http.Response, error) { return response(r, 201), nil }, []string{"Location", fakeEndpoint.String()}, true},
		{"create with foreign Location", "create", func(r *http.Request) (*http.Response, error) {
			return response(r, 201, "Location", "https://evil.test/files/x"), nil
		}, []string{"Location", "evil.test"}, true},
		{"create with http Location", "create", func(r *http.Request) (*http.Response, error) {
			return response(r, 201, "Location", "http://receiver.test:8443/files/x"), nil
		}, []string{"Location", "http://"}, true},
		{"create answered 200", "create", func(r *http.Request) (*http.Response, error) { return response(r, 200), nil }, []string{"status 200"}, false},
		{"head without Upload-Offset", "offset", func(r *http.Request) (*http.Response, error) { return response(r, 200), nil }, []string{"Upload-Offset", fakeUpload}, true},
		{"head with two Upload-Offset", "offset", func(r *http.Request) (*http.Response, error) {
			return response(r, 200, "Upload-Offset", "1", "Upload-Offset", "2"), nil
		}, []string{"Upload-Offset", fakeUpload}, true},
		{"head offset beyond length", "offset", func(r *http.Request) (*http.Response, error) {
			return response(r, 200, "Upload-Offset", "11", "Upload-Length", "10"), nil
		}, []string{"Upload-Offset", "exceeds", fakeUpload}, true},
		{"head offset negative", "offset", func(r *http.Request) (*http.Response, error) {
			return response(r, 200, "Upload-Offset", "-1"), nil
		}, []string{"Upload-Offset", fakeUpload}, true},
		{"head bad Upload-Length", "offset", func(r *http.Request) (*http.Response, error) {
			return response(r, 200, "Upload-Offset", "1", "Upload-Length", "1e3"), nil
		}, []string{"Upload-Length", fakeUpload}, true},
		{"upload length differs", "upload", func(r *http.Request) (*http.Response, error) {
			return response(r, 200, "Upload-Offset", "0", "Upload-Length", "11"), nil
		}, []string{"Upload-Length 11", fakeUpload}, true},
		{"patch without Upload-Offset", "upload", func(r *http.Request) (*http.Response, error) {
			if r.Method == http.MethodHead {
				return response(r, 200, "Upload-Offset", "0", "Upload-Length", "10"), nil
			}
			_, _ = io.Copy(io.Discard, r.Body)
			return response(r, 204), nil
		}, []string{"PATCH", "Upload-Offset", fakeUpload}, true},
		{"patch offset past the chunk", "upload", func(r *http.Request) (*http.Response, error) {
			if r.Method == http.MethodHead {
				return response(r, 200, "Upload-Offset", "0", "Upload-Length", "10"), nil
			}
			_, _ = io.Copy(io.Discard, r.Body)
			return response(r, 204, "Upload-Offset", "6"), nil
		}, []string{"PATCH", "outside the chunk", fakeUpload}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewClient(&http.Client{Transport: roundTripFunc(tt.rt)}, fakeEndpoint, Options{ChunkSize: 5, Sleep: func(context.Context, time.Duration) error {
				t.Error("a protocol error was retried")
				return nil
			}})
			var err error
			switch tt.op {
			case "create":
				_, err = c.Create(t.Context(), 10, nil)
			case "offset":
				_, err = c.Offset(t.Context(), fakeUpload)
			case "upload":
				err = c.Upload(t.Context(), fakeUpload, bytes.NewReader(make([]byte, 10)), 10, nil)
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			if errors.Is(err, ErrProtocol) != tt.proto {
				t.Errorf("errors.Is(%v, ErrProtocol) = %v, want %v", err, !tt.proto, tt.proto)
			}
		})
	}
}

func TestCreateRequest(t *testing.T) {
	var got http.Header
	c := NewClient(&http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		got = r.Header.Clone()
		return response(r, 201, "Location", "/files/xyz"), nil
	})}, fakeEndpoint, Options{})
	u, err := c.Create(t.Context(), 1234, map[string]string{"filename": "a b,c.ubx", "empty": "", "seq": "7"})
	if err != nil {
		t.Fatal(err)
	}
	if u != "https://receiver.test:8443/files/xyz" {
		t.Errorf("upload URL %q", u)
	}
	want := map[string]string{
		"Tus-Resumable":   "1.0.0",
		"Upload-Length":   "1234",
		"Upload-Metadata": "empty,filename YSBiLGMudWJ4,seq Nw==",
	}
	for k, v := range want {
		if got.Get(k) != v {
			t.Errorf("%s: %q, want %q", k, got.Get(k), v)
		}
	}
	for _, bad := range []string{"", "a b", "a,b", "ü", "tab\t"} {
		if _, err := c.Create(t.Context(), 1, map[string]string{bad: "x"}); !errors.Is(err, ErrMetadata) {
			t.Errorf("key %q: err = %v, want ErrMetadata", bad, err)
		}
	}
	if _, err := c.Offset(t.Context(), "https://elsewhere.test/files/xyz"); err == nil {
		t.Error("Offset accepted an upload URL on another host")
	}
}

// TestServerLostBytes: tusd never fsyncs, so after a receiver crash its
// offset can fall behind what it confirmed. The client must send the lost
// bytes again rather than stall.
func TestServerLostBytes(t *testing.T) {
	f := &fakeServer{size: 40}
	f.patchFault = func(n int, r *http.Request) (*http.Response, error) {
		if n == 2 {
			f.data = f.data[:5] // crash: 20 confirmed bytes shrink to 5
			return nil, errors.New("connection refused")
		}
		return nil, nil
	}
	c := NewClient(f.client(), fakeEndpoint, Options{ChunkSize: 10, Sleep: func(context.Context, time.Duration) error { return nil }})
	data := randomBytes(40, 5)
	var offs []int64
	if err := c.Upload(t.Context(), fakeUpload, bytes.NewReader(data), 40, func(off int64) { offs = append(offs, off) }); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(f.data, data) {
		t.Fatal("data differs")
	}
	if st := c.Stats(); st.BytesSent != 20+10+35 {
		t.Errorf("sent %d bytes, want 65 (20, a failed 10, then 35 from offset 5)", st.BytesSent)
	}
	if want := []int64{0, 10, 20, 25, 35, 40}; len(offs) != len(want) {
		t.Errorf("progress %v, want %v", offs, want)
	}
}

// TestDefaultChunkSize: without ChunkSize, PATCH bodies are up to 16 MiB
// (docs/daemon.md "Upload").
func TestDefaultChunkSize(t *testing.T) {
	const size = 16<<20 + 5
	f := &fakeServer{size: size}
	var bodies []int64
	f.patchFault = func(_ int, r *http.Request) (*http.Response, error) {
		bodies = append(bodies, r.ContentLength)
		return nil, nil
	}
	c := NewClient(f.client(), fakeEndpoint, Options{})
	if err := c.Upload(t.Context(), fakeUpload, bytes.NewReader(make([]byte, size)), size, nil); err != nil {
		t.Fatal(err)
	}
	if want := []int64{16 << 20, 5}; !slices.Equal(bodies, want) {
		t.Errorf("PATCH bodies of %v bytes, want %v", bodies, want)
	}
}
