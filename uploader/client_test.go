package uploader_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/uploader"
)

// TestHTTPClientSpeaksHTTP1 checks that the upload client stays on
// HTTP/1.1 with the real receiver, which offers HTTP/2 too: HTTP/2 buffers
// request bodies in frames of up to 512 KiB, a cost the box does not need.
func TestHTTPClientSpeaksHTTP1(t *testing.T) {
	data := filepath.Join(t.TempDir(), "receiver")
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
	t.Cleanup(func() { cancel(); <-done; srv.Close() })
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
	st, err := uploader.Enroll(t.Context(), "https://"+addr, nd.Token, nd.CAFingerprint, filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "https://"+addr+"/v1/files/", nil)
	resp, err := st.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 1 {
		t.Errorf("upload client spoke %s to the receiver, want HTTP/1.1", resp.Proto)
	}
}

// TestDrainsShareOneConnection: each sealed segment starts a new
// Uploader (the daemon's upload loop), and every one of them must reuse the
// kept-alive connection of the last instead of opening a TLS connection of
// its own and leaving it idle.
func TestDrainsShareOneConnection(t *testing.T) {
	r := newRig(t)
	accepted := countConnections(t, r)
	for i := range 3 {
		sp, _ := r.spoolWith(t, 1)
		sum, err := uploader.New(r.st, sp, nil).Drain(t.Context(), nil, nil)
		if err != nil {
			t.Fatalf("drain %d: %v (%+v)", i, err, sum)
		}
	}
	if n := accepted.Load(); n != 1 {
		t.Errorf("3 drains opened %d connections to the receiver, want 1", n)
	}
}

// TestHTTPClientKeepsThreeConnections: a drain sends a segment, commits
// the one before and creates the upload of the one after at once; the
// client keeps all three connections for the next segment, instead of
// closing one and opening a new one (a handshake, and at the receiver an
// audited, fsynced device.connect). Three requests held at the receiver
// until all three arrived open three connections; the next three open
// none.
func TestHTTPClientKeepsThreeConnections(t *testing.T) {
	r := newRig(t)
	accepted := countConnections(t, r)
	var mu sync.Mutex
	arrived := 0
	all := make(chan struct{})
	r.mu.Lock()
	r.tus = func(w http.ResponseWriter, req *http.Request, _ http.Handler) bool {
		if req.URL.Path != "/held" {
			return false
		}
		mu.Lock()
		if arrived++; arrived%3 == 0 {
			close(all)
		}
		wait := all
		mu.Unlock()
		select {
		case <-wait:
		case <-time.After(holdLimit):
			t.Errorf("3 requests at once did not all arrive within %s", holdLimit)
		}
		w.WriteHeader(http.StatusNoContent)
		return true
	}
	r.mu.Unlock()
	for round := range 2 {
		var wg sync.WaitGroup
		for range 3 {
			wg.Go(func() {
				req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, r.st.Receiver.JoinPath("/held").String(), nil)
				resp, err := r.st.HTTPClient().Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			})
		}
		wg.Wait()
		mu.Lock()
		all = make(chan struct{})
		mu.Unlock()
		if n := accepted.Load(); n != 3 {
			t.Errorf("after round %d of 3 requests at once: %d connections opened, want 3", round+1, n)
		}
	}
}

// countConnections puts a TCP relay between the box and r's receiver
// and counts the connections the box opens through it.
func countConnections(t *testing.T, r *rig) *atomic.Int64 {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted := new(atomic.Int64)
	target := r.st.Receiver.Host
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() {
				defer c.Close()
				up, err := net.Dial("tcp", target)
				if err != nil {
					return
				}
				defer up.Close()
				go io.Copy(up, c)
				io.Copy(c, up)
			}()
		}
	}()
	r.st.Receiver = &url.URL{Scheme: "https", Host: ln.Addr().String()}
	return accepted
}
