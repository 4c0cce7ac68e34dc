package tus

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// cutProxy is a TCP proxy on 127.0.0.1:0 that forwards to target and, for the
// first len(cuts) connections, closes both sides after cuts[i] bytes from the
// client. TLS runs end to end through it, so the cut lands inside a TLS
// record of a PATCH body, as a dropped mobile link would.
type cutProxy struct {
	ln     net.Listener
	target string
	cuts   []int64
	next   atomic.Int64
	done   atomic.Int64 // connections actually cut
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
}

func startCutProxy(t testing.TB, target string, cuts []int64) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, cuts: cuts, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

func (p *cutProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *cutProxy) track(c net.Conn) {
	p.mu.Lock()
	p.conns[c] = struct{}{}
	p.mu.Unlock()
}

func (p *cutProxy) serve() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		server, err := net.Dial("tcp", p.target)
		if err != nil {
			client.Close()
			continue
		}
		if tc, ok := client.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(64 << 10)
		}
		p.track(client)
		p.track(server)
		limit := int64(-1)
		if i := p.next.Add(1) - 1; i < int64(len(p.cuts)) {
			limit = p.cuts[i]
		}
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			_, _ = io.Copy(client, server)
			client.Close()
			server.Close()
		}()
		go func() {
			defer p.wg.Done()
			if limit < 0 {
				_, _ = io.Copy(server, client)
			} else if n, _ := io.CopyN(server, client, limit); n == limit {
				p.done.Add(1)
			}
			client.Close()
			server.Close()
		}()
	}
}

// TestResumeAfterCuts cuts the connection in the middle of PATCH bodies
// several times; the upload must complete, match, and resend less than one
// chunk per cut.
func TestResumeAfterCuts(t *testing.T) {
	for _, tt := range []struct {
		name       string
		fileLocker bool
	}{{"memory locker", false}, {"file locker", true}} {
		t.Run(tt.name, func(t *testing.T) { testResumeAfterCuts(t, tt.fileLocker) })
	}
}

func testResumeAfterCuts(t *testing.T, fileLocker bool) {
	const chunk = 256 << 10
	s := startTusdLocker(t, nil, fileLocker)
	data := randomBytes(4<<20+17, 42)
	// Connection i carries at most cuts[i] bytes from the client (TLS
	// handshake included), then dies.
	cuts := []int64{100_000, 700_000, 1_300_000, 50_000, 900_000}
	p := startCutProxy(t, s.srv.Listener.Addr().String(), cuts)

	tr := s.srv.Client().Transport.(*http.Transport).Clone()
	// Small socket buffers keep the bytes in flight at a cut, and so the
	// re-sent bytes, independent of the kernel's autotuning.
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.SetWriteBuffer(64 << 10)
		}
		return conn, err
	}
	t.Cleanup(tr.CloseIdleConnections)
	ep, _ := url.Parse("https://" + p.ln.Addr().String() + "/files/")
	var locked atomic.Int64
	opts := fastOptions(chunk)
	opts.Logger = slog.New(handlerFunc(func(r slog.Record) {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "error" {
				t.Logf("retry after: %v", a.Value)
				if strings.Contains(a.Value.String(), "status 423") {
					locked.Add(1)
				}
			}
			return true
		})
	}))
	c := NewClient(&http.Client{Transport: tr}, ep, opts)

	u, err := c.Create(t.Context(), int64(len(data)), map[string]string{"filename": "cut.bin"})
	if err != nil {
		// The create request itself may be cut (cuts[0] is past the POST,
		// so this should not happen).
		t.Fatal(err)
	}
	var unaligned int
	progress := func(off int64) {
		if off%chunk != 0 && off != int64(len(data)) {
			unaligned++ // tusd kept part of a cut PATCH body
		}
	}
	if err := c.Upload(t.Context(), u, bytes.NewReader(data), int64(len(data)), progress); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s.stored(t, u), data) {
		t.Fatal("stored bytes differ from the input")
	}
	if unaligned == 0 {
		t.Error("no resume started inside a chunk: the cut PATCH bodies were not kept")
	}
	st := c.Stats()
	cut := p.done.Load()
	resent := st.BytesSent - int64(len(data))
	t.Logf("cuts %d, retries %d (423 Locked: %d), bytes sent %d, re-sent %d (%.2f%%)", cut, st.Retries, locked.Load(), st.BytesSent, resent, 100*float64(resent)/float64(len(data)))
	// A connection holding a cut can die early of another cause (tusd
	// closes a connection whose request it interrupted), so allow one miss.
	if cut < int64(len(cuts))-1 {
		t.Errorf("%d connections cut, want at least %d", cut, len(cuts)-1)
	}
	if st.Retries < cut {
		t.Errorf("%d retries for %d cuts", st.Retries, cut)
	}
	if resent < 0 || resent >= st.Retries*chunk {
		t.Errorf("re-sent %d bytes, want less than %d (one chunk per failed attempt)", resent, st.Retries*chunk)
	}
}

// faultHandler answers the first PATCH requests itself, in order, and lets
// the rest through to tusd.
func faultHandler(faults []func(w http.ResponseWriter)) (func(http.Handler) http.Handler, *atomic.Int64) {
	var n atomic.Int64
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPatch {
				if i := n.Add(1) - 1; i < int64(len(faults)) {
					_, _ = io.Copy(io.Discard, r.Body)
					faults[i](w)
					return
				}
			}
			next.ServeHTTP(w, r)
		})
	}, &n
}

func status(code int, header ...string) func(w http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		for i := 0; i+1 < len(header); i += 2 {
			w.Header().Set(header[i], header[i+1])
		}
		w.WriteHeader(code)
		_, _ = io.WriteString(w, "injected "+strconv.Itoa(code))
	}
}

func TestRetryRules(t *testing.T) {
	date := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name        string
		faults      []func(w http.ResponseWriter)
		wantErr     int // status of the permanent error, 0 for success
		wantDelays  []time.Duration
		wantRetries int64
	}{
		{"503 then ok", []func(http.ResponseWriter){status(503), status(502)}, 0, []time.Duration{time.Millisecond, 2 * time.Millisecond}, 2},
		{"429 Retry-After seconds", []func(http.ResponseWriter){status(429, "Retry-After", "7")}, 0, []time.Duration{7 * time.Second}, 1},
		{"503 Retry-After date", []func(http.ResponseWriter){status(503, "Retry-After", date.Add(45*time.Second).Format(http.TimeFormat))}, 0, []time.Duration{45 * time.Second}, 1},
		{"Retry-After capped", []func(http.ResponseWriter){status(429, "Retry-After", "86400")}, 0, []time.Duration{time.Minute}, 1},
		{"bad Retry-After falls back to backoff", []func(http.ResponseWriter){status(429, "Retry-After", "soon")}, 0, []time.Duration{time.Millisecond}, 1},
		{"423 locked and 460", []func(http.ResponseWriter){status(423), status(460)}, 0, []time.Duration{time.Millisecond, 2 * time.Millisecond}, 2},
		{"tusd upload interrupted", []func(http.ResponseWriter){func(w http.ResponseWriter) {
			http.Error(w, "ERR_UPLOAD_INTERRUPTED: upload has been interrupted by another request for this upload resource", http.StatusBadRequest)
		}}, 0, []time.Duration{time.Millisecond}, 1},
		{"403 is permanent", []func(http.ResponseWriter){status(403)}, 403, nil, 0},
		{"413 is permanent", []func(http.ResponseWriter){status(413)}, 413, nil, 0},
		{"500 then 400", []func(http.ResponseWriter){status(500), status(400)}, 400, []time.Duration{time.Millisecond}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wrap, _ := faultHandler(tt.faults)
			s := startTusd(t, wrap)
			var delays []time.Duration
			opts := Options{
				ChunkSize:     1000,
				BackoffMin:    time.Millisecond,
				BackoffMax:    time.Second,
				MaxRetryAfter: time.Minute,
				Now:           func() time.Time { return date },
				Jitter:        func(d time.Duration) time.Duration { return d },
				Sleep: func(ctx context.Context, d time.Duration) error {
					delays = append(delays, d)
					return ctx.Err()
				},
			}
			c := NewClient(s.srv.Client(), s.endpoint, opts)
			data := randomBytes(2500, 3)
			u, err := c.Create(t.Context(), int64(len(data)), nil)
			if err != nil {
				t.Fatal(err)
			}
			err = c.Upload(t.Context(), u, bytes.NewReader(data), int64(len(data)), nil)
			if tt.wantErr == 0 {
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(s.stored(t, u), data) {
					t.Fatal("stored bytes differ")
				}
			} else {
				var se *StatusError
				if !errors.As(err, &se) || se.StatusCode != tt.wantErr {
					t.Fatalf("err = %v, want status %d", err, tt.wantErr)
				}
				if se.Body != "injected "+strconv.Itoa(tt.wantErr) || se.Method != http.MethodPatch || se.URL != u {
					t.Errorf("StatusError %+v lacks method, URL or body", se)
				}
			}
			if !equalDurations(delays, tt.wantDelays) {
				t.Errorf("delays %v, want %v", delays, tt.wantDelays)
			}
			if r := c.Stats().Retries; r != tt.wantRetries {
				t.Errorf("retries %d, want %d", r, tt.wantRetries)
			}
		})
	}
}

// TestRetryAfterOnHead: a 503 with Retry-After on the resuming HEAD is
// honoured too.
func TestRetryAfterOnHead(t *testing.T) {
	var heads atomic.Int64
	wrap := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodHead && heads.Add(1) == 1 {
				w.Header().Set("Retry-After", "3")
				http.Error(w, "maintenance", http.StatusServiceUnavailable)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	s := startTusd(t, wrap)
	var delays []time.Duration
	opts := fastOptions(100)
	opts.Sleep = func(ctx context.Context, d time.Duration) error { delays = append(delays, d); return nil }
	c := NewClient(s.srv.Client(), s.endpoint, opts)
	u, err := c.Create(t.Context(), 250, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Upload(t.Context(), u, bytes.NewReader(make([]byte, 250)), 250, nil); err != nil {
		t.Fatal(err)
	}
	if !equalDurations(delays, []time.Duration{3 * time.Second}) {
		t.Errorf("delays %v, want [3s]", delays)
	}
}

// TestOffsetMismatchRecovers makes the client's PATCH carry a wrong offset,
// so that the real tusd answers 409; the client must ask HEAD and go on.
func TestOffsetMismatchRecovers(t *testing.T) {
	var rewritten atomic.Bool
	wrap := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPatch && r.Header.Get("Upload-Offset") == "1000" && rewritten.CompareAndSwap(false, true) {
				r.Header.Set("Upload-Offset", "1500")
			}
			next.ServeHTTP(w, r)
		})
	}
	s := startTusd(t, wrap)
	c := NewClient(s.srv.Client(), s.endpoint, fastOptions(1000))
	data := randomBytes(3000, 9)
	u, err := c.Create(t.Context(), int64(len(data)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Upload(t.Context(), u, bytes.NewReader(data), int64(len(data)), nil); err != nil {
		t.Fatal(err)
	}
	if !rewritten.Load() || c.Stats().Retries != 1 {
		t.Errorf("rewritten %v, retries %d; want one 409 and one retry", rewritten.Load(), c.Stats().Retries)
	}
	if !bytes.Equal(s.stored(t, u), data) {
		t.Fatal("stored bytes differ")
	}
}

func TestHeaderHook(t *testing.T) {
	var missing atomic.Int64
	wrap := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") != "Bearer t0k" {
				missing.Add(1)
				http.Error(w, "no token", http.StatusUnauthorized)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	s := startTusd(t, wrap)
	opts := fastOptions(100)
	opts.Header = func() http.Header { return http.Header{"Authorization": {"Bearer t0k"}} }
	c := NewClient(s.srv.Client(), s.endpoint, opts)
	u, err := c.Create(t.Context(), 250, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Upload(t.Context(), u, bytes.NewReader(make([]byte, 250)), 250, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Terminate(t.Context(), u); err != nil {
		t.Fatal(err)
	}
	if missing.Load() != 0 {
		t.Errorf("%d requests without the auth header", missing.Load())
	}
	// Without the hook: a permanent 401.
	c2 := NewClient(s.srv.Client(), s.endpoint, fastOptions(100))
	_, err = c2.Create(t.Context(), 1, nil)
	var se *StatusError
	if !errors.As(err, &se) || se.StatusCode != http.StatusUnauthorized {
		t.Fatalf("Create without token: %v, want 401", err)
	}
}

func TestContextCancel(t *testing.T) {
	t.Run("during a stalled PATCH", func(t *testing.T) {
		entered := make(chan struct{}, 1)
		stop := make(chan struct{})
		wrap := func(next http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodPatch {
					// Read the body so that net/http watches the
					// connection and cancels r.Context when it closes.
					_, _ = io.Copy(io.Discard, r.Body)
					select {
					case entered <- struct{}{}:
					default:
					}
					select { // a server that stopped answering
					case <-r.Context().Done():
					case <-stop:
					}
					return
				}
				next.ServeHTTP(w, r)
			})
		}
		s := startTusd(t, wrap)
		t.Cleanup(func() { close(stop) }) // runs before the server's Close
		c := NewClient(s.srv.Client(), s.endpoint, fastOptions(1000))
		u, err := c.Create(t.Context(), 5000, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		go func() {
			<-entered
			cancel()
		}()
		start := time.Now()
		err = c.Upload(ctx, u, bytes.NewReader(make([]byte, 5000)), 5000, nil)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err = %v, want context.Canceled", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("Upload took %s to notice the cancel", d)
		}
	})
	t.Run("during backoff", func(t *testing.T) {
		wrap, _ := faultHandler([]func(http.ResponseWriter){status(503)})
		s := startTusd(t, wrap)
		opts := fastOptions(1000)
		opts.BackoffMin, opts.BackoffMax = time.Hour, time.Hour
		opts.Jitter = func(d time.Duration) time.Duration { return d }
		c := NewClient(s.srv.Client(), s.endpoint, opts)
		u, err := c.Create(t.Context(), 5000, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		err = c.Upload(ctx, u, bytes.NewReader(make([]byte, 5000)), 5000, nil)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want context.DeadlineExceeded", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("Upload took %s to notice the deadline", d)
		}
	})
}

// handlerFunc is a slog.Handler that hands each record to a function.
type handlerFunc func(slog.Record)

func (h handlerFunc) Enabled(context.Context, slog.Level) bool      { return true }
func (h handlerFunc) Handle(_ context.Context, r slog.Record) error { h(r); return nil }
func (h handlerFunc) WithAttrs([]slog.Attr) slog.Handler            { return h }
func (h handlerFunc) WithGroup(string) slog.Handler                 { return h }

func equalDurations(a, b []time.Duration) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestStalledRequestsRetried: a receiver that stops answering (frozen, its
// connection kept open) holds neither a HEAD nor a PATCH for longer than
// StallTimeout: each is given up with ErrStalled and retried, and the
// upload completes.
func TestStalledRequestsRetried(t *testing.T) {
	stop := make(chan struct{})
	var stalledHead, stalledPatch atomic.Bool
	wrap := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			first := (r.Method == http.MethodHead && stalledHead.CompareAndSwap(false, true)) ||
				(r.Method == http.MethodPatch && stalledPatch.CompareAndSwap(false, true))
			if !first {
				next.ServeHTTP(w, r)
				return
			}
			// Read the body so that net/http watches the connection and
			// ends r.Context when the client gives up on it.
			_, _ = io.Copy(io.Discard, r.Body)
			select { // a server that stopped answering
			case <-r.Context().Done():
			case <-stop:
			}
		})
	}
	s := startTusd(t, wrap)
	t.Cleanup(func() { close(stop) }) // runs before the server's Close
	opts := fastOptions(1000)
	opts.StallTimeout = 500 * time.Millisecond
	var stalls atomic.Int64
	opts.Logger = slog.New(handlerFunc(func(r slog.Record) {
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "err" && strings.Contains(a.Value.String(), ErrStalled.Error()) {
				stalls.Add(1)
			}
			return true
		})
	}))
	c := NewClient(s.srv.Client(), s.endpoint, opts)
	data := randomBytes(3000, 7)
	u, err := c.Create(t.Context(), int64(len(data)), nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Upload(t.Context(), u, bytes.NewReader(data), int64(len(data)), nil) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the upload waited 30 s on a receiver that stopped answering")
	}
	if !bytes.Equal(s.stored(t, u), data) {
		t.Fatal("stored bytes differ from the input")
	}
	// The HEAD and the PATCH that were never answered, and any a loaded
	// machine was slow to answer.
	if n := stalls.Load(); n < 2 {
		t.Fatalf("%d attempts given up as stalled, want at least 2 (a HEAD and a PATCH)", n)
	}
}
