package tus

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tus/tusd/v2/pkg/filelocker"
	"github.com/tus/tusd/v2/pkg/filestore"
	"github.com/tus/tusd/v2/pkg/handler"
	"github.com/tus/tusd/v2/pkg/memorylocker"
	xslog "golang.org/x/exp/slog"
)

// tusServer is the real tusd v2 handler with a file store, served over TLS on
// loopback.
type tusServer struct {
	srv      *httptest.Server
	dir      string
	endpoint *url.URL
}

// startTusd starts tusd; wrap, if not nil, sits in front of it (fault
// injection). The server is closed when the test ends.
func startTusd(t testing.TB, wrap func(http.Handler) http.Handler) *tusServer {
	return startTusdLocker(t, wrap, false)
}

// startTusdLocker picks the locker: the in-memory one, which asks the holder
// of a lock to release it, or the file locker (the receiver's default), which
// answers 423 while a cut request still holds the upload.
func startTusdLocker(t testing.TB, wrap func(http.Handler) http.Handler, fileLocker bool) *tusServer {
	t.Helper()
	dir := t.TempDir()
	composer := handler.NewStoreComposer()
	filestore.New(dir).UseIn(composer)
	if fileLocker {
		filelocker.New(dir).UseIn(composer)
	} else {
		memorylocker.New().UseIn(composer)
	}
	h, err := handler.NewHandler(handler.Config{
		BasePath:      "/files/",
		StoreComposer: composer,
		// tusd v2.9.1 logs through golang.org/x/exp/slog.
		Logger: xslog.New(xslog.NewTextHandler(io.Discard, nil)),
		// A cut connection must release the upload's lock quickly.
		AcquireLockTimeout: 5 * time.Second,
		// tusd keeps a goroutine per request alive this long after the
		// request ends; keep it short so goleak sees them gone.
		GracefulRequestCompletionTimeout: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	var next http.Handler = http.StripPrefix("/files/", h)
	if wrap != nil {
		next = wrap(next)
	}
	mux := http.NewServeMux()
	mux.Handle("/files/", next)
	srv := httptest.NewUnstartedServer(mux)
	srv.Config.ReadHeaderTimeout = 5 * time.Second
	srv.Config.ErrorLog = nil
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ep, err := url.Parse(srv.URL + "/files/")
	if err != nil {
		t.Fatal(err)
	}
	return &tusServer{srv: srv, dir: dir, endpoint: ep}
}

// stored returns the bytes tusd holds for the upload at uploadURL.
func (s *tusServer) stored(t testing.TB, uploadURL string) []byte {
	t.Helper()
	u, err := url.Parse(uploadURL)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(s.dir, path.Base(u.Path)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fastOptions keeps real-network tests quick: tiny backoff.
func fastOptions(chunk int64) Options {
	return Options{ChunkSize: chunk, BackoffMin: time.Millisecond, BackoffMax: 5 * time.Millisecond}
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestUploadSizes(t *testing.T) {
	const chunk = 64 << 10
	s := startTusd(t, nil)
	tests := []struct {
		name string
		size int
	}{
		{"empty", 0},
		{"one byte", 1},
		{"chunk minus one", chunk - 1},
		{"exactly a chunk", chunk},
		{"chunk plus one", chunk + 1},
		{"many chunks", 10*chunk + 123},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := randomBytes(tt.size, uint64(i))
			c := NewClient(s.srv.Client(), s.endpoint, fastOptions(chunk))
			u, err := c.Create(t.Context(), int64(len(data)), map[string]string{"filename": "seg-0001.ubx", "sequence": "1"})
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(u, s.endpoint.String()) {
				t.Fatalf("upload URL %s not under endpoint %s", u, s.endpoint)
			}
			var last int64 = -1
			err = c.Upload(t.Context(), u, bytes.NewReader(data), int64(len(data)), func(off int64) {
				if off <= last {
					t.Errorf("progress went from %d to %d", last, off)
				}
				last = off
			})
			if err != nil {
				t.Fatal(err)
			}
			if last != int64(len(data)) {
				t.Errorf("last progress %d, want %d", last, len(data))
			}
			if got := s.stored(t, u); !bytes.Equal(got, data) {
				t.Fatalf("stored %d bytes differ from the %d sent", len(got), len(data))
			}
			off, err := c.Offset(t.Context(), u)
			if err != nil || off != int64(len(data)) {
				t.Fatalf("Offset = %d, %v; want %d", off, err, len(data))
			}
			st := c.Stats()
			if st.BytesSent != int64(len(data)) || st.Retries != 0 {
				t.Errorf("stats %+v, want %d bytes and no retries", st, len(data))
			}
			// Uploading a finished upload again sends nothing.
			if err := c.Upload(t.Context(), u, bytes.NewReader(data), int64(len(data)), nil); err != nil {
				t.Fatal(err)
			}
			if st2 := c.Stats(); st2.BytesSent != st.BytesSent {
				t.Errorf("second Upload sent %d more bytes", st2.BytesSent-st.BytesSent)
			}
		})
	}
}

func TestResumePartialUpload(t *testing.T) {
	// The server already holds a prefix (an earlier run of the box): Upload
	// must start at the server's offset and not resend the prefix.
	s := startTusd(t, nil)
	data := randomBytes(300_000, 7)
	c := NewClient(s.srv.Client(), s.endpoint, fastOptions(64<<10))
	u, err := c.Create(t.Context(), int64(len(data)), nil)
	if err != nil {
		t.Fatal(err)
	}
	const prefix = 100_000
	if err := c.Upload(t.Context(), u, bytes.NewReader(data[:prefix]), prefix, nil); err == nil {
		t.Fatal("uploading with the wrong size succeeded; want a length mismatch error")
	}
	// Send the prefix with a raw PATCH instead.
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPatch, u, bytes.NewReader(data[:prefix]))
	req.Header.Set("Tus-Resumable", Version)
	req.Header.Set("Content-Type", offsetContentType)
	req.Header.Set("Upload-Offset", "0")
	resp, err := s.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("raw PATCH: %s", resp.Status)
	}
	before := c.Stats().BytesSent
	if err := c.Upload(t.Context(), u, bytes.NewReader(data), int64(len(data)), nil); err != nil {
		t.Fatal(err)
	}
	if sent := c.Stats().BytesSent - before; sent != int64(len(data)-prefix) {
		t.Errorf("sent %d bytes, want %d", sent, len(data)-prefix)
	}
	if !bytes.Equal(s.stored(t, u), data) {
		t.Fatal("stored bytes differ")
	}
}

func TestTerminate(t *testing.T) {
	s := startTusd(t, nil)
	c := NewClient(s.srv.Client(), s.endpoint, fastOptions(1024))
	u, err := c.Create(t.Context(), 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Terminate(t.Context(), u); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Offset(t.Context(), u); err == nil {
		t.Fatal("Offset after Terminate succeeded")
	} else if se := (*StatusError)(nil); !errors.As(err, &se) || se.StatusCode != http.StatusNotFound {
		t.Fatalf("Offset after Terminate: %v, want 404", err)
	}
	// Terminating twice is fine: the upload is gone either way.
	if err := c.Terminate(t.Context(), u); err != nil {
		t.Fatal(err)
	}
	err = c.Upload(t.Context(), u, bytes.NewReader(make([]byte, 10)), 10, nil)
	if se := (*StatusError)(nil); !errors.As(err, &se) || se.StatusCode != http.StatusNotFound {
		t.Fatalf("Upload after Terminate: %v, want a permanent 404", err)
	}
	if r := c.Stats().Retries; r != 0 {
		t.Errorf("%d retries on a 404", r)
	}
}

// TestTusdBehaviour records what the real tusd answers to bad requests; the
// client's retry rules rely on these codes.
func TestTusdBehaviour(t *testing.T) {
	s := startTusd(t, nil)
	c := NewClient(s.srv.Client(), s.endpoint, fastOptions(1024))
	u, err := c.Create(t.Context(), 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		method   string
		target   string
		header   map[string]string
		body     string
		wantCode int
		wantBody string
	}{
		{"offset ahead", http.MethodPatch, u, map[string]string{"Upload-Offset": "5"}, "abcde", http.StatusConflict, "ERR_MISMATCHED_OFFSET"},
		{"offset not a number", http.MethodPatch, u, map[string]string{"Upload-Offset": "x"}, "a", http.StatusBadRequest, "ERR_INVALID_OFFSET"},
		{"negative offset", http.MethodPatch, u, map[string]string{"Upload-Offset": "-1"}, "a", http.StatusBadRequest, "ERR_INVALID_OFFSET"},
		{"no offset", http.MethodPatch, u, map[string]string{"Upload-Offset": ""}, "a", http.StatusBadRequest, "ERR_INVALID_OFFSET"},
		{"too many bytes", http.MethodPatch, u, map[string]string{"Upload-Offset": "0"}, "0123456789abc", http.StatusRequestEntityTooLarge, "ERR_UPLOAD_SIZE_EXCEEDED"},
		{"wrong content type", http.MethodPatch, u, map[string]string{"Upload-Offset": "0", "Content-Type": "text/plain"}, "a", http.StatusBadRequest, "ERR_INVALID_CONTENT_TYPE"},
		{"no Tus-Resumable", http.MethodPatch, u, map[string]string{"Upload-Offset": "0", "Tus-Resumable": ""}, "a", http.StatusPreconditionFailed, "ERR_UNSUPPORTED_VERSION"},
		{"unknown upload", http.MethodHead, s.endpoint.String() + "0123456789abcdef", nil, "", http.StatusNotFound, ""},
		{"bad length", http.MethodPost, s.endpoint.String(), map[string]string{"Upload-Length": "-3"}, "", http.StatusBadRequest, "ERR_INVALID_UPLOAD_LENGTH"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(t.Context(), tt.method, tt.target, strings.NewReader(tt.body))
			req.Header.Set("Tus-Resumable", Version)
			req.Header.Set("Content-Type", offsetContentType)
			for k, v := range tt.header {
				if v == "" {
					req.Header.Del(k)
				} else {
					req.Header.Set(k, v)
				}
			}
			resp, err := s.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.wantCode || !strings.Contains(string(body), tt.wantBody) {
				t.Errorf("got %d %q, want %d %q", resp.StatusCode, body, tt.wantCode, tt.wantBody)
			}
			t.Logf("%s → %d %q", tt.name, resp.StatusCode, strings.TrimSpace(string(body)))
		})
	}
	// None of it changed the upload.
	off, err := c.Offset(t.Context(), u)
	if err != nil || off != 0 {
		t.Fatalf("offset after bad requests = %d, %v; want 0", off, err)
	}
}
