package e2e

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/receiver/pki"
	"github.com/uploadbox/uploadbox/uploader"
	"github.com/uploadbox/uploadbox/wire"
)

// TestUploadSendsNextWhileCommitting: `uploadbox upload` sends a segment's
// bytes while the commit of the one before is outstanding. A TLS proxy in
// front of the real receiver (with the receiver's certificate, forwarding
// with the box's) holds each commit until a PATCH of a later upload went
// through; the commits still come one at a time, in the order of the
// segments, and every segment is committed and wiped. The serial uploader
// sent nothing while a commit was outstanding: every hold ran out.
func TestUploadSendsNextWhileCommitting(t *testing.T) {
	if testing.Short() {
		t.Skip("records and uploads; skipped under -short")
	}
	const holdLimit = 20 * time.Second
	dir := t.TempDir()
	b := setupBox(t, dir, nil)
	spool := filepath.Join(dir, "spool")
	os.Mkdir(spool, 0o700)
	sealed := recordInto(t, b, spool, "6s")
	if sealed < 3 {
		t.Fatalf("%d segments sealed, want at least 3", sealed)
	}

	st, err := uploader.LoadState(b.state)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := wire.LoadKeyPair(filepath.Join(b.rcv.data, pki.ServerCertFile), filepath.Join(b.rcv.data, pki.ServerKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	target, _ := url.Parse("https://" + b.rcv.addr)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = st.HTTPClient().Transport
	rp.ErrorLog = log.New(io.Discard, "", 0)
	var (
		mu        sync.Mutex
		changed   = make(chan struct{})
		patched   []string // uploads a PATCH went through for, in order
		committed []string // uploads committed, in order
		open      int
		maxOpen   int
		missed    []int
	)
	update := func(f func()) {
		mu.Lock()
		f()
		close(changed)
		changed = make(chan struct{})
		mu.Unlock()
	}
	// laterPatch waits for a PATCH of an upload not committed yet.
	laterPatch := func() bool {
		deadline := time.After(holdLimit)
		for {
			mu.Lock()
			ok := slices.ContainsFunc(patched, func(id string) bool { return !slices.Contains(committed, id) })
			ch := changed
			mu.Unlock()
			if ok {
				return true
			}
			select {
			case <-ch:
			case <-deadline:
				return false
			}
		}
	}
	proxy := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		switch {
		case req.Method == http.MethodPatch:
			rec := &statusWriter{ResponseWriter: w}
			rp.ServeHTTP(rec, req)
			if rec.status == http.StatusNoContent {
				update(func() { patched = append(patched, path.Base(req.URL.Path)) })
			}
		case req.URL.Path == "/v1/commit":
			body, _ := io.ReadAll(req.Body)
			req.Body = io.NopCloser(bytes.NewReader(body))
			var cr wire.CommitRequest
			json.Unmarshal(body, &cr)
			var n int
			update(func() {
				n = len(committed)
				committed = append(committed, cr.UploadID)
				open++
				maxOpen = max(maxOpen, open)
			})
			if n+1 < sealed && !laterPatch() {
				update(func() { missed = append(missed, n) })
			}
			update(func() { open-- })
			rp.ServeHTTP(w, req)
		default:
			rp.ServeHTTP(w, req)
		}
	}))
	proxy.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	proxy.Config.ErrorLog = log.New(io.Discard, "", 0)
	proxy.StartTLS()
	defer proxy.Close()
	// The box now reaches the receiver through the proxy.
	if err := os.WriteFile(filepath.Join(b.state, uploader.ReceiverFile), []byte(proxy.URL+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	out := run(t, "uploadbox", "upload", "--state", b.state, "--spool", spool)
	var names []string
	for _, l := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(l, "committed "); ok {
			names = append(names, strings.Fields(rest)[0])
		}
	}
	if len(names) != sealed || !slices.IsSorted(names) {
		t.Fatalf("upload committed %v, want the %d sealed segments in order:\n%s", names, sealed, out)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(missed) > 0 {
		t.Errorf("while the commits %v were outstanding no later segment was sent within %s", missed, holdLimit)
	}
	if maxOpen != 1 || len(committed) != sealed {
		t.Errorf("%d commits, at most %d outstanding at once; want %d, one at a time", len(committed), maxOpen, sealed)
	}
	if left := spoolSegments(t, spool); len(left) != 0 {
		t.Errorf("local copies left after upload: %v", left)
	}
	if rs := recordings(t, b.rcv.data); len(rs) != 1 || rs[0].Segments != sealed || !rs[0].Complete {
		t.Errorf("receiver has %+v, want one complete recording of %d segments", rs, sealed)
	}
}

// statusWriter remembers the status a handler answered.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
