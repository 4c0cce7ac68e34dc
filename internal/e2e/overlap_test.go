package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"fmt"
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

	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/internal/faultproxy"
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

// TestUploadCutCost: `uploadbox upload` of two 32 MiB segments through a
// TCP proxy that cuts every connection 4 times sends again, per cut, about
// what the box's kernel held for the connection: at most 1 MiB with the
// send buffer capped (uploader.SendBuffer); uncapped it was megabytes.
func TestUploadCutCost(t *testing.T) {
	if testing.Short() {
		t.Skip("uploads 64 MiB through a cutting proxy; skipped under -short")
	}
	const segSize, segs, cuts = 32 << 20, 2, 4
	dir := t.TempDir()
	b := setupBox(t, dir, nil)
	spool := filepath.Join(dir, "spool")
	os.Mkdir(spool, 0o700)
	st, err := uploader.LoadState(b.state)
	if err != nil {
		t.Fatal(err)
	}
	id, _ := crypto.NewRecordingID()
	var prev [crypto.CommitmentSize]byte
	chunk := make([]byte, 1<<20)
	rand.Read(chunk)
	var sealedBytes int64
	for i := range segs {
		f, err := os.Create(filepath.Join(spool, fmt.Sprintf("%x-%06d.ubx", id, i)))
		if err != nil {
			t.Fatal(err)
		}
		w, err := crypto.NewWriter(f, st.Recipients, st.Device, crypto.Params{RecordingID: id, Sequence: uint64(i), Prev: prev, Codec: "video/mp4"})
		if err != nil {
			t.Fatal(err)
		}
		for range segSize / len(chunk) {
			w.Write(chunk)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		fi, _ := f.Stat()
		sealedBytes += fi.Size()
		f.Close()
		prev = w.Commitment()
	}
	p, err := faultproxy.Start(b.rcv.addr, faultproxy.Options{CutEvery: sealedBytes / (cuts + 1), Cuts: cuts})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := os.WriteFile(filepath.Join(b.state, uploader.ReceiverFile), []byte("https://"+p.Addr()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := run(t, "uploadbox", "upload", "--state", b.state, "--spool", spool)
	var n int
	var total, sent, retries int64
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "uploaded ") {
			fmt.Sscanf(l, "uploaded %d segments, %d bytes (%d sent, %d retries)", &n, &total, &sent, &retries)
		}
	}
	if n != segs || total != sealedBytes || p.Cuts() != cuts {
		t.Fatalf("uploaded %d segments, %d bytes, through %d cuts; want %d, %d, %d:\n%s", n, total, p.Cuts(), segs, sealedBytes, cuts, out)
	}
	per := (sent - total) / cuts
	t.Logf("%d cuts, %d retries: %d bytes sent again, %d per cut", cuts, retries, sent-total, per)
	if per > 1<<20 {
		t.Errorf("each cut sent %d bytes again on average, want at most 1 MiB", per)
	}
}
