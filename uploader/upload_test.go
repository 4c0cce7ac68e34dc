package uploader_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/receiver/pki"
	"github.com/uploadbox/uploadbox/uploader"
	"github.com/uploadbox/uploadbox/uploader/spool"
	"github.com/uploadbox/uploadbox/wire"
)

// rig is the real receiver (in process, on loopback TLS) and, in front of
// it, a TLS proxy with the receiver's own certificate that forwards every
// request with the box's client certificate, except the commit answers a
// test replaces. The proxy stands in for refusals this branch's receiver
// does not send yet (reasons, incomplete, device-inactive); the e2e tests
// produce the ones it does send with the real binaries.
type rig struct {
	st *uploader.State

	mu      sync.Mutex
	commits int
	rewrite func(n int) (status int, body string, ok bool)
	// lose, if it says so for commit n, forwards the commit to the
	// receiver and drops its answer, as if the box had stopped before
	// reading the receipt.
	lose func(n int) bool
	// hold, if set, is called with commit n before it is answered.
	hold func(n int, req *http.Request)
	// tus, if set, sees every other request first and answers it itself
	// when it returns true.
	tus func(w http.ResponseWriter, req *http.Request, forward http.Handler) bool
	// committed lists the hash each commit carried (hex), in arrival
	// order; open and maxOpen count the commits outstanding.
	committed     []string
	open, maxOpen int
}

func newRig(t *testing.T) *rig {
	t.Helper()
	dir := t.TempDir()
	data := filepath.Join(dir, "receiver")
	srv, err := receiver.Open(receiver.ServerConfig{Data: data, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Run(ctx, func(a string) { ready <- a })
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		srv.Close()
	})
	addr := <-ready
	admin, err := receiver.OpenAdmin(data)
	if err != nil {
		t.Fatal(err)
	}
	nd, err := admin.AddDevice("room-1")
	admin.Close()
	if err != nil {
		t.Fatal(err)
	}
	st, err := uploader.Enroll(t.Context(), "https://"+addr, nd.Token, nd.CAFingerprint, filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := wire.LoadKeyPair(filepath.Join(data, pki.ServerCertFile), filepath.Join(data, pki.ServerKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{st: st}
	target, _ := url.Parse("https://" + addr)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = st.HTTPClient().Transport
	rp.ErrorLog = log.New(io.Discard, "", 0)
	proxy := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/v1/commit" {
			body, _ := io.ReadAll(req.Body)
			req.Body = io.NopCloser(bytes.NewReader(body))
			var cr wire.CommitRequest
			json.Unmarshal(body, &cr)
			r.mu.Lock()
			n := r.commits
			r.commits++
			rewrite, lose, hold := r.rewrite, r.lose, r.hold
			_, sum := cr.Hash()
			r.committed = append(r.committed, sum)
			r.open++
			r.maxOpen = max(r.maxOpen, r.open)
			r.mu.Unlock()
			// Outstanding until the box may see the answer.
			w = &answering{ResponseWriter: w, before: func() {
				r.mu.Lock()
				r.open--
				r.mu.Unlock()
			}}
			if hold != nil {
				hold(n, req)
			}
			if lose != nil && lose(n) {
				rp.ServeHTTP(httptest.NewRecorder(), req)
				w.WriteHeader(http.StatusOK) // no body: the box reads no receipt
				return
			}
			if rewrite != nil {
				if status, body, ok := rewrite(n); ok {
					io.Copy(io.Discard, req.Body)
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(status)
					io.WriteString(w, body)
					return
				}
			}
		}
		r.mu.Lock()
		tus := r.tus
		r.mu.Unlock()
		if req.URL.Path != "/v1/commit" && tus != nil && tus(w, req, rp) {
			return
		}
		rp.ServeHTTP(w, req)
	}))
	proxy.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	proxy.Config.ErrorLog = log.New(io.Discard, "", 0)
	proxy.StartTLS()
	t.Cleanup(proxy.Close)
	st.Receiver, _ = url.Parse(proxy.URL)
	return r
}

// answering calls before once, ahead of the first byte of the answer.
type answering struct {
	http.ResponseWriter
	once   sync.Once
	before func()
}

func (w *answering) WriteHeader(code int) {
	w.once.Do(w.before)
	w.ResponseWriter.WriteHeader(code)
}

func (w *answering) Write(b []byte) (int, error) {
	w.once.Do(w.before)
	return w.ResponseWriter.Write(b)
}

func (w *answering) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// spoolWith seals n segments of a new recording with the box's key into a
// new spool.
func (r *rig) spoolWith(t *testing.T, n int) (*spool.Spool, []string) {
	t.Helper()
	dir := t.TempDir()
	names := r.sealInto(t, dir, n)
	sp, err := spool.Open(dir, spool.Options{Device: r.st.Device.Public()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	return sp, names
}

// sealInto seals n segments of a new recording with the box's key into
// files in dir, as the recorder leaves them, and returns their names.
func (r *rig) sealInto(t *testing.T, dir string, n int) []string {
	t.Helper()
	rec, _ := crypto.NewRecordingID()
	var prev [crypto.CommitmentSize]byte
	var names []string
	for i := range n {
		name := fmt.Sprintf("%x-%06d.ubx", rec, i)
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		w, err := crypto.NewWriter(f, r.st.Recipients, r.st.Device, crypto.Params{RecordingID: rec, Sequence: uint64(i), Prev: prev, Codec: "video/mp4"})
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(strings.Repeat(name, 500)))
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		prev = w.Commitment()
		names = append(names, name)
	}
	return names
}

// TestDrainActsOnRefusals: how the uploader reacts to each kind of refused
// commit of the first of two segments: the second is always tried unless
// the refusal concerns the box itself or may pass.
func TestDrainActsOnRefusals(t *testing.T) {
	r := newRig(t)
	refuse := func(upTo int, status int, body string) func(int) (int, string, bool) {
		return func(n int) (int, string, bool) { return status, body, n < upTo }
	}
	tests := []struct {
		name    string
		rewrite func(n int) (int, string, bool)
		// want for the first segment
		state       spool.State
		freshStarts int
		reason      string
		// want for the drain
		segments, quarantined int
		errIs                 error // nil: no error
		errAny                bool
	}{
		{name: "incomplete: resumed at the receiver's offset", rewrite: refuse(1, 409, `{"error":"not finished","reason":"incomplete","offset":0}`),
			state: spool.Wiped, segments: 2},
		{name: "mismatch: a fresh upload", rewrite: refuse(1, 409, `{"error":"other bytes","reason":"mismatch"}`),
			state: spool.Wiped, freshStarts: 1, segments: 2},
		{name: "not-found: a fresh upload", rewrite: refuse(2, 404, `{"error":"no upload","reason":"not-found"}`),
			state: spool.Wiped, freshStarts: 2, segments: 2},
		{name: "mismatch every time: 3 fresh uploads, then quarantine", rewrite: refuse(4, 409, `{"error":"other bytes","reason":"mismatch"}`),
			state: spool.Quarantined, freshStarts: 3, reason: "mismatch", segments: 1, quarantined: 1},
		{name: "409 without reason, every time: bounded, then quarantine", rewrite: refuse(4, 409, `{"error":"already stored with other bytes"}`),
			state: spool.Quarantined, freshStarts: 3, segments: 1, quarantined: 1},
		{name: "exists: quarantined at once", rewrite: refuse(1, 409, `{"error":"stored with other bytes","reason":"exists"}`),
			state: spool.Quarantined, reason: "exists", segments: 1, quarantined: 1},
		{name: "chain: quarantined", rewrite: refuse(1, 409, `{"error":"chain broken","reason":"chain"}`),
			state: spool.Quarantined, reason: "chain", segments: 1, quarantined: 1},
		{name: "foreign-key: quarantined", rewrite: refuse(1, 403, `{"error":"signed by another device","reason":"foreign-key"}`),
			state: spool.Quarantined, reason: "foreign-key", segments: 1, quarantined: 1},
		{name: "corrupt: quarantined", rewrite: refuse(1, 422, `{"error":"does not verify","reason":"corrupt"}`),
			state: spool.Quarantined, reason: "corrupt", segments: 1, quarantined: 1},
		{name: "422 without reason: quarantined", rewrite: refuse(1, 422, `{"error":"does not verify"}`),
			state: spool.Quarantined, segments: 1, quarantined: 1},
		{name: "device-inactive: kept queued, the box is refused", rewrite: refuse(1, 403, `{"error":"device is not active","reason":"device-inactive"}`),
			state: spool.Uploading, errIs: uploader.ErrDeviceRefused},
		{name: "quota: kept, retried later", rewrite: refuse(1, 413, `{"error":"quota used up","reason":"quota"}`),
			state: spool.Uploading, errAny: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r.mu.Lock()
			r.commits, r.rewrite = 0, tt.rewrite
			r.mu.Unlock()
			sp, names := r.spoolWith(t, 2)
			var reported []uploader.Result
			sum, err := uploader.New(r.st, sp, nil).Drain(t.Context(), func(res uploader.Result) { reported = append(reported, res) }, nil)
			switch {
			case tt.errIs != nil && !errors.Is(err, tt.errIs):
				t.Fatalf("Drain: %v, want %v", err, tt.errIs)
			case tt.errIs == nil && tt.errAny && err == nil:
				t.Fatal("Drain succeeded, want an error")
			case tt.errIs == nil && !tt.errAny && err != nil:
				t.Fatalf("Drain: %v", err)
			}
			if tt.errIs == nil && errors.Is(err, uploader.ErrDeviceRefused) {
				t.Errorf("%v is reported as the box being refused", err)
			}
			if sum.Segments != tt.segments || sum.Quarantined != tt.quarantined {
				t.Errorf("summary %+v, want %d committed and %d quarantined", sum, tt.segments, tt.quarantined)
			}
			first, _ := sp.Get(names[0])
			if first.State != tt.state || first.FreshStarts != tt.freshStarts {
				t.Errorf("first segment %s with %d fresh starts, want %s with %d", first.State, first.FreshStarts, tt.state, tt.freshStarts)
			}
			if tt.state == spool.Quarantined {
				q := first.Refusal
				if q == nil || q.Reason != tt.reason || q.Message == "" {
					t.Fatalf("refusal %+v, want reason %q", q, tt.reason)
				}
				if _, err := os.Stat(sp.Path(first)); err != nil {
					t.Errorf("the quarantined file is gone: %v", err)
				}
				if len(reported) == 0 || reported[0].Quarantined == nil {
					t.Errorf("reported %+v, want the quarantine first", reported)
				}
			}
			if second, _ := sp.Get(names[1]); (tt.segments > 0) != (second.State == spool.Wiped) {
				t.Errorf("second segment is %s", second.State)
			}
		})
	}
}

// TestCommitWindow: the receiver committed a segment but the box never
// read the receipt (it stopped in the commit window). The next drain asks
// for the receipt again instead of sending the segment again, checks it,
// and says that the receiver already had the segment.
func TestCommitWindow(t *testing.T) {
	r := newRig(t)
	r.lose = func(n int) bool { return n == 0 }
	sp, names := r.spoolWith(t, 1)
	if _, err := uploader.New(r.st, sp, nil).Drain(t.Context(), nil, nil); err == nil {
		t.Fatal("a drain whose receipt was lost succeeded")
	}
	if rec, _ := sp.Get(names[0]); rec.State != spool.Uploading || rec.Offset != rec.Size {
		t.Fatalf("after the lost receipt: %+v", rec)
	}
	var logs strings.Builder
	up := uploader.New(r.st, sp, slog.New(slog.NewTextHandler(&logs, nil)))
	var results []uploader.Result
	sum, err := up.Drain(t.Context(), func(res uploader.Result) { results = append(results, res) }, nil)
	if err != nil || sum.Segments != 1 || len(results) != 1 || !results[0].Repeated {
		t.Fatalf("second drain: %+v, %+v, %v", sum, results, err)
	}
	if sent := up.Stats().BytesSent; sent != 0 {
		t.Errorf("the segment was sent again (%d bytes) although the receiver had it", sent)
	}
	if !strings.Contains(logs.String(), "the receiver already had it (receipt checked)") {
		t.Errorf("no log line says the receiver already had it:\n%s", logs.String())
	}
	if rec, _ := sp.Get(names[0]); rec.State != spool.Wiped || len(rec.Receipt) == 0 {
		t.Errorf("segment %+v, want wiped with its receipt", rec)
	}
}

// TestDrainFinishesAWipe: a segment whose receipt is stored but whose wipe
// failed (a full disk could not record it) is wiped by the next drain of
// the same running box, not only at its next start; its file goes and
// nothing is sent again.
func TestDrainFinishesAWipe(t *testing.T) {
	r := newRig(t)
	sp, names := r.spoolWith(t, 1)
	if err := sp.StartUpload(names[0], "https://receiver.test/v1/uploads/x"); err != nil {
		t.Fatal(err)
	}
	if err := sp.Commit(names[0], []byte("a stored receipt")); err != nil {
		t.Fatal(err)
	}
	rec, _ := sp.Get(names[0])
	path := sp.Path(rec)
	up := uploader.New(r.st, sp, nil)
	sum, err := up.Drain(t.Context(), nil, nil)
	if err != nil || sum.Segments != 0 {
		t.Fatalf("drain: %+v, %v", sum, err)
	}
	if rec, _ := sp.Get(names[0]); rec.State != spool.Wiped {
		t.Errorf("segment is %s, want wiped", rec.State)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the committed file is still there: %v", err)
	}
	if sent := up.Stats().BytesSent; sent != 0 {
		t.Errorf("%d bytes sent for a committed segment", sent)
	}
}

// TestCommitToAFrozenReceiverRetried: a commit the receiver never answers
// (frozen, its connection kept open) is given up after the commit timeout
// and sent again; the drain ends with the segment committed and wiped.
func TestCommitToAFrozenReceiverRetried(t *testing.T) {
	r := newRig(t)
	r.hold = func(n int, req *http.Request) {
		if n == 0 {
			<-req.Context().Done() // until the box gives up on it
		}
	}
	sp, names := r.spoolWith(t, 1)
	done := make(chan error, 1)
	go func() {
		_, err := uploader.New(r.st, sp, nil, uploader.WithCommitTimeout(300*time.Millisecond)).Drain(t.Context(), nil, nil)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the drain waited 30 s on a commit nobody answers")
	}
	if rec, _ := sp.Get(names[0]); rec.State != spool.Wiped {
		t.Fatalf("segment %+v, want wiped", rec)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.commits != 2 {
		t.Fatalf("%d commits, want the unanswered one and its retry", r.commits)
	}
}
