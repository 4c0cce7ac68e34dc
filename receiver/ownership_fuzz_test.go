package receiver

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// twoDevices is a receiver with two enrolled devices, driven through its
// real HTTP handler (the TLS layer's result is set on each request).
type twoDevices struct {
	s     *Server
	h     http.Handler
	certs [2]*x509.Certificate
}

func newTwoDevices(t testing.TB) *twoDevices {
	t.Helper()
	s, err := Open(ServerConfig{Data: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	td := &twoDevices{s: s, h: s.Handler()}
	for i, name := range []string{"room-a", "room-b"} {
		token, _, err := s.devices.Add(name)
		if err != nil {
			t.Fatal(err)
		}
		pub, _, _ := ed25519.GenerateKey(rand.Reader)
		cert, err := s.ca.IssueDevice(name, pub, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if err := s.devices.Enroll(token, pub, cert.SerialNumber.String(), "test"); err != nil {
			t.Fatal(err)
		}
		td.certs[i] = cert
	}
	return td
}

type answer struct {
	code   int
	body   string
	header http.Header
}

// do sends one request as device dev.
func (td *twoDevices) do(dev int, method, target string, hdr map[string]string, body []byte) answer {
	r := httptest.NewRequest(method, target, bytes.NewReader(body))
	r.RemoteAddr = fmt.Sprintf("192.0.2.%d:4000", dev+1)
	r.TLS = &tls.ConnectionState{PeerCertificates: []*x509.Certificate{td.certs[dev]}}
	r.Header.Set("Tus-Resumable", "1.0.0")
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	// As net/http does, end the request's context when the handler returns.
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	w := httptest.NewRecorder()
	td.h.ServeHTTP(w, r.WithContext(ctx))
	return answer{code: w.Code, body: w.Body.String(), header: w.Header()}
}

func (td *twoDevices) create(dev int, size int64) (string, answer) {
	a := td.do(dev, "POST", "/v1/uploads/", map[string]string{"Upload-Length": strconv.FormatInt(size, 10)}, nil)
	loc := a.header.Get("Location")
	return loc[strings.LastIndexByte(loc, '/')+1:], a
}

// request builds a tus request or a commit for upload id.
func (td *twoDevices) request(dev, action int, id string, arg byte) answer {
	switch action {
	case 1:
		return td.do(dev, "HEAD", "/v1/uploads/"+id, nil, nil)
	case 2:
		off := strconv.Itoa(int(arg) % 7 * 16)
		return td.do(dev, "PATCH", "/v1/uploads/"+id, map[string]string{"Content-Type": "application/offset+octet-stream", "Upload-Offset": off}, bytes.Repeat([]byte{arg}, int(arg)%40+1))
	case 3:
		return td.do(dev, "DELETE", "/v1/uploads/"+id, nil, nil)
	case 4:
		body, _ := json.Marshal(CommitRequest{UploadID: id, Size: int64(arg)%100 + 1, SHA256: strings.Repeat("ab", 32)})
		return td.do(dev, "POST", "/v1/commit", nil, body)
	default:
		return td.do(dev, "GET", "/v1/uploads/"+id, nil, nil)
	}
}

// snapshot is everything of an upload on disk.
func (td *twoDevices) snapshot(id string) string {
	data, _ := os.ReadFile(filepath.Join(td.s.uploads, id))
	info, err := os.ReadFile(filepath.Join(td.s.uploads, id+".info"))
	o, open := td.s.owner(id)
	return fmt.Sprintf("%x|%s|%v|%v|%+v", data, info, err == nil, open, o)
}

// FuzzUploadOwnership: two devices interleave tus requests and commits in
// any order; device B can never change or read the state of device A's
// upload: every request B sends for it is answered exactly as for an
// upload that does not exist, and the upload on disk is unchanged.
func FuzzUploadOwnership(f *testing.F) {
	// Pairs of (op, arg): op bit 0 is the device, op>>1 % 6 the action
	// (0 create, 1 HEAD, 2 PATCH, 3 DELETE, 4 commit, 5 GET); arg picks the
	// upload and the request's details.
	f.Add([]byte{0, 3, 3, 0, 5, 0, 7, 0, 9, 0, 11, 0, 2, 0})
	f.Add([]byte{0, 40, 4, 0, 5, 16, 2, 0, 5, 16, 9, 0, 7, 1, 3, 0})
	f.Add([]byte{1, 9, 0, 2, 4, 0, 5, 1, 2, 1, 6, 0, 7, 0, 8, 1, 9, 1})
	f.Add([]byte{0, 200, 4, 17, 5, 0, 3, 0, 8, 0, 6, 0, 9, 0, 0, 1, 2, 1})
	td := newTwoDevices(f)
	f.Fuzz(func(t *testing.T, ops []byte) {
		type upload struct {
			id    string
			owner int
		}
		var ups []upload
		for i := 0; i+1 < len(ops) && i < 80; i += 2 {
			dev, action, arg := int(ops[i]&1), int(ops[i]>>1)%6, ops[i+1]
			if action == 0 {
				id, a := td.create(dev, int64(arg)+1)
				if a.code != http.StatusCreated {
					t.Fatalf("create: HTTP %d %s", a.code, a.body)
				}
				ups = append(ups, upload{id, dev})
				continue
			}
			if len(ups) == 0 {
				continue
			}
			u := ups[int(arg)%len(ups)]
			if dev == u.owner {
				td.request(dev, action, u.id, arg)
				continue
			}
			before := td.snapshot(u.id)
			got := td.request(dev, action, u.id, arg)
			var missing [16]byte
			rand.Read(missing[:])
			want := td.request(dev, action, hex.EncodeToString(missing[:]), arg)
			got.body = strings.ReplaceAll(got.body, u.id, "ID")
			want.body = strings.ReplaceAll(want.body, hex.EncodeToString(missing[:]), "ID")
			if got.code != want.code || got.body != want.body || fmt.Sprint(got.header) != fmt.Sprint(want.header) {
				t.Fatalf("action %d on the other device's upload: HTTP %d %q %v; on a missing upload: HTTP %d %q %v", action, got.code, got.body, got.header, want.code, want.body, want.header)
			}
			if after := td.snapshot(u.id); after != before {
				t.Fatalf("action %d of device %d changed the other device's upload:\n%s\n%s", action, dev, before, after)
			}
		}
		// Each device deletes what it still has, so that later inputs start
		// under the quota.
		for _, u := range ups {
			td.request(u.owner, 3, u.id, 0)
		}
	})
}

// TestExpireUploads: the janitor removes uploads opened before the cutoff
// with their owner rows, and ownerless upload files (from an older
// receiver) last written before it; younger ones stay.
func TestExpireUploads(t *testing.T) {
	td := newTwoDevices(t)
	old, _ := td.create(0, 10)
	legacy := filepath.Join(td.s.uploads, "0123456789abcdef0123456789abcdef")
	for _, p := range []string{legacy, legacy + ".info"} {
		if err := os.WriteFile(p, []byte("{}"), 0o600); err != nil {
			t.Fatal(err)
		}
		past := time.Now().Add(-48 * time.Hour)
		os.Chtimes(p, past, past)
	}
	n, err := td.s.expireUploads(t.Context(), time.Now().Add(-time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("expired %d (%v), want the legacy upload only", n, err)
	}
	if _, open := td.s.owner(old); !open {
		t.Fatal("a young upload was expired")
	}
	n, err = td.s.expireUploads(t.Context(), time.Now().Add(time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("expired %d (%v), want 1", n, err)
	}
	if _, open := td.s.owner(old); open {
		t.Fatal("the expired upload still has its owner row")
	}
	left, _ := filepath.Glob(filepath.Join(td.s.uploads, "*"))
	if len(left) != 0 {
		t.Fatalf("files left: %v", left)
	}
}
