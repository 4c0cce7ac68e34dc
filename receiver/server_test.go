package receiver_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/receiver/internal/kvtest"
	"github.com/uploadbox/uploadbox/receiver/kv"
	"github.com/uploadbox/uploadbox/receiver/pki"
	"github.com/uploadbox/uploadbox/receiver/receipt"
	"github.com/uploadbox/uploadbox/uploader"
	"github.com/uploadbox/uploadbox/uploader/tus"
	"github.com/uploadbox/uploadbox/wire"
)

type harness struct {
	srv  *receiver.Server
	data string
	// database is the PostgreSQL database holding the state, or "" for
	// the bbolt file in data (kvtest chooses: UPLOADBOX_TEST_DATABASE).
	database string
	addr     string
	box      *uploader.State
	admin    receiver.Admin
	// stop stops the server (once; again at the test's end does nothing).
	stop func() error
}

// auditText is the receiver's audit chain as JSON lines, as its file holds
// them with bbolt, read from wherever it is (the file, or PostgreSQL).
func (h *harness) auditText(t *testing.T) string {
	t.Helper()
	es, err := receiver.AuditEntries(h.data, h.database, audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	return receiver.AuditLines(es)
}

// serve opens and runs a receiver with cfg; stop ends Run, closes the
// server and returns Run's error.
func serve(t *testing.T, cfg receiver.ServerConfig) (srv *receiver.Server, addr string, stop func() error) {
	t.Helper()
	srv, err := receiver.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, func(a string) { ready <- a }) }()
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatal(err)
	}
	return srv, addr, func() error {
		cancel()
		err := <-done
		srv.Close()
		return err
	}
}

// start runs a real receiver on loopback and enrolls one box with it.
func start(t *testing.T) *harness { return startWith(t, receiver.ServerConfig{}) }

// startWith is start with cfg (its Data and Listen are set here).
func startWith(t *testing.T, cfg receiver.ServerConfig) *harness {
	t.Helper()
	dir := t.TempDir()
	h := &harness{data: filepath.Join(dir, "receiver")}
	var stop func() error
	cfg.Data, cfg.Listen = h.data, "127.0.0.1:0"
	if kvtest.Postgres() && cfg.Database == "" {
		cfg.Database = kvtest.URL(t)
	}
	h.database = cfg.Database
	h.srv, h.addr, stop = serve(t, cfg)
	h.stop = sync.OnceValue(stop)
	t.Cleanup(func() {
		if err := h.stop(); err != nil {
			t.Error(err)
		}
	})
	var err error
	if h.admin, err = receiver.OpenAdmin(h.data); err != nil {
		t.Fatal(err)
	}
	nd, err := h.admin.AddDevice("room-9")
	if err != nil {
		t.Fatal(err)
	}
	if h.box, err = uploader.Enroll(t.Context(), "https://"+h.addr, nd.Token, nd.CAFingerprint, filepath.Join(dir, "box")); err != nil {
		t.Fatal(err)
	}
	return h
}

// state opens the stopped receiver's state store directly.
func (h *harness) state(t *testing.T) kv.DB {
	t.Helper()
	var db kv.DB
	var err error
	if h.database != "" {
		db, err = kv.OpenPostgres(t.Context(), h.database)
	} else {
		db, err = kv.OpenBolt(filepath.Join(h.data, receiver.DBFile), time.Second)
	}
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// segment seals a small real segment with the box's keys.
func (h *harness) segment(t *testing.T, seq uint64, prev [32]byte, rec [16]byte) []byte {
	t.Helper()
	return seal(t, h.box, crypto.Params{RecordingID: rec, Sequence: seq, Prev: prev, Codec: "video/mp4"}, 50_000)
}

// seal seals size random bytes with st's keys.
func seal(t *testing.T, st *uploader.State, p crypto.Params, size int) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := crypto.NewWriter(&buf, st.Recipients, st.Device, p)
	if err != nil {
		t.Fatal(err)
	}
	msg := make([]byte, size)
	rand.Read(msg)
	w.Write(msg)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// send uploads and commits seg, which must be accepted, as a box does:
// announcing and committing with the BLAKE3 segment hash.
func (h *harness) send(t *testing.T, seg []byte) { h.sendWith(t, seg, wire.HashBLAKE3) }

// sendWith is send with the hash alg (SHA-256: as a box of an older release).
func (h *harness) sendWith(t *testing.T, seg []byte, alg wire.HashAlg) {
	t.Helper()
	_, req := uploadAs(t, h, h.addr, seg, alg)
	if code, _, body := h.commit(t, h.box.HTTPClient(), req); code != http.StatusOK {
		t.Fatalf("commit: HTTP %d %s", code, body)
	}
}

func (h *harness) upload(t *testing.T, data []byte) string {
	t.Helper()
	return uploadTo(t, h, h.box.Receiver.Host, data)
}

func (h *harness) commit(t *testing.T, client *http.Client, req receiver.CommitRequest) (int, receiver.CommitResponse, string) {
	t.Helper()
	body, _ := json.Marshal(req)
	resp, err := client.Post("https://"+h.addr+"/v1/commit", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var cr receiver.CommitResponse
	json.Unmarshal(data, &cr)
	return resp.StatusCode, cr, string(data)
}

func (h *harness) stored(t *testing.T) []string {
	var files []string
	filepath.Walk(filepath.Join(h.data, receiver.StoreDir), func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			files = append(files, p)
		}
		return nil
	})
	return files
}

func TestCommitVerifiesAndIsIdempotent(t *testing.T) {
	h := start(t)
	client := h.box.HTTPClient()
	rec := [16]byte{7}
	seg := h.segment(t, 0, [32]byte{}, rec)
	u := h.upload(t, seg)
	sum := sha256.Sum256(seg)
	good := receiver.CommitRequest{UploadID: path.Base(u), Size: int64(len(seg)), SHA256: hex.EncodeToString(sum[:])}

	refusals := []struct {
		name   string
		req    receiver.CommitRequest
		code   int
		reason string
	}{
		{"path in upload id", receiver.CommitRequest{UploadID: "../../ca.key", Size: 1, SHA256: good.SHA256}, http.StatusBadRequest, receiver.ReasonBadRequest},
		{"unknown upload", receiver.CommitRequest{UploadID: strings.Repeat("ab", 16), Size: 1, SHA256: good.SHA256}, http.StatusNotFound, receiver.ReasonNotFound},
		{"bad hash text", receiver.CommitRequest{UploadID: good.UploadID, Size: good.Size, SHA256: "xyz"}, http.StatusBadRequest, receiver.ReasonBadRequest},
		// A mismatch removes the upload at once: these come last.
		{"wrong hash", receiver.CommitRequest{UploadID: good.UploadID, Size: good.Size, SHA256: strings.Repeat("00", 32)}, http.StatusConflict, receiver.ReasonMismatch},
		{"wrong size", receiver.CommitRequest{UploadID: path.Base(h.upload(t, seg)), Size: good.Size - 1, SHA256: good.SHA256}, http.StatusConflict, receiver.ReasonMismatch},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			code, _, body := h.commit(t, client, tc.req)
			var ref receiver.Refusal
			if code != tc.code || json.Unmarshal([]byte(body), &ref) != nil || ref.Reason != tc.reason {
				t.Fatalf("HTTP %d (%s), want %d with reason %s", code, body, tc.code, tc.reason)
			}
			if files := h.stored(t); len(files) != 0 {
				t.Fatalf("a refused commit stored %v", files)
			}
		})
	}
	// The refused uploads are gone.
	c := tus.NewClient(client, h.box.Receiver.JoinPath("/v1/uploads/"), tus.Options{})
	if _, err := c.Offset(t.Context(), u); err == nil {
		t.Fatal("an upload refused for a mismatch is still there")
	}
	u = h.upload(t, seg)
	good.UploadID = path.Base(u)

	code, first, body := h.commit(t, client, good)
	if code != http.StatusOK {
		t.Fatalf("commit: HTTP %d %s", code, body)
	}
	rb := mustB64(t, first.Receipt)
	r, err := receipt.Verify(h.box.ReceiptKey, rb, wire.HashSHA256)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Matches(ed25519.PublicKey(h.box.Device.Public().Bytes()), rec, 0, wire.HashSHA256, sum, int64(len(seg))); err != nil {
		t.Fatal(err)
	}
	// Again: the same receipt, nothing stored twice.
	code, again, _ := h.commit(t, client, good)
	if code != http.StatusOK || again.Receipt != first.Receipt || !again.Repeated {
		t.Fatalf("repeated commit: HTTP %d %+v", code, again)
	}
	// The same segment uploaded a second time is recognised too.
	u2 := h.upload(t, seg)
	code, third, _ := h.commit(t, client, receiver.CommitRequest{UploadID: path.Base(u2), Size: good.Size, SHA256: good.SHA256})
	if code != http.StatusOK || third.Receipt != first.Receipt {
		t.Fatalf("second upload of the same segment: HTTP %d %+v", code, third)
	}
	if files := h.stored(t); len(files) != 1 {
		t.Fatalf("stored %v, want exactly one object", files)
	}
	// Other bytes for the same (recording, sequence) are refused.
	other := h.segment(t, 0, [32]byte{}, rec)
	u3 := h.upload(t, other)
	osum := sha256.Sum256(other)
	if code, _, body := h.commit(t, client, receiver.CommitRequest{UploadID: path.Base(u3), Size: int64(len(other)), SHA256: hex.EncodeToString(osum[:])}); code != http.StatusConflict {
		t.Fatalf("conflicting segment: HTTP %d %s", code, body)
	}
	// A segment whose chain link is wrong is refused.
	bad := h.segment(t, 1, [32]byte{9}, rec)
	u4 := h.upload(t, bad)
	bsum := sha256.Sum256(bad)
	if code, _, body := h.commit(t, client, receiver.CommitRequest{UploadID: path.Base(u4), Size: int64(len(bad)), SHA256: hex.EncodeToString(bsum[:])}); code != http.StatusConflict || !strings.Contains(body, "chain") {
		t.Fatalf("broken chain: HTTP %d %s", code, body)
	}
	// Uploads refused for good are removed at once.
	for _, gone := range []string{u3, u4} {
		if _, err := c.Offset(t.Context(), gone); err == nil {
			t.Fatal("an upload refused as existing or off-chain is still there")
		}
	}
	// Garbage is not a segment.
	junk := make([]byte, 5000)
	rand.Read(junk)
	u5 := h.upload(t, junk)
	jsum := sha256.Sum256(junk)
	if code, _, body := h.commit(t, client, receiver.CommitRequest{UploadID: path.Base(u5), Size: int64(len(junk)), SHA256: hex.EncodeToString(jsum[:])}); code != http.StatusUnprocessableEntity {
		t.Fatalf("garbage: HTTP %d %s", code, body)
	}
	if files := h.stored(t); len(files) != 1 {
		t.Fatalf("stored %v after refusals, want the one good segment", files)
	}
}

func mustB64(t *testing.T, s string) []byte {
	t.Helper()
	var b []byte
	if err := json.Unmarshal([]byte(`"`+s+`"`), &b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBadTusRequests: malformed tus requests get 4xx and change nothing.
func TestBadTusRequests(t *testing.T) {
	h := start(t)
	client := h.box.HTTPClient()
	c := tus.NewClient(client, h.box.Receiver.JoinPath("/v1/uploads/"), tus.Options{})
	u, err := c.Create(t.Context(), 100, nil)
	if err != nil {
		t.Fatal(err)
	}
	do := func(method, url string, hdr map[string]string, body []byte) int {
		req, _ := http.NewRequest(method, url, bytes.NewReader(body))
		req.Header.Set("Tus-Resumable", "1.0.0")
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	base := "https://" + h.addr + "/v1/uploads/"
	patch := map[string]string{"Content-Type": "application/offset+octet-stream"}
	cases := []struct {
		name   string
		method string
		url    string
		hdr    map[string]string
		body   []byte
	}{
		{"create without length", "POST", base, nil, nil},
		{"create with negative length", "POST", base, map[string]string{"Upload-Length": "-5"}, nil},
		{"create oversize", "POST", base, map[string]string{"Upload-Length": "99999999999999"}, nil},
		{"garbage metadata", "POST", base, map[string]string{"Upload-Length": "10", "Upload-Metadata": "name !!!not-base64"}, nil},
		{"patch at wrong offset", "PATCH", u, map[string]string{"Content-Type": patch["Content-Type"], "Upload-Offset": "50"}, []byte("xx")},
		{"patch beyond length", "PATCH", u, map[string]string{"Content-Type": patch["Content-Type"], "Upload-Offset": "0"}, make([]byte, 101)},
		{"patch without offset", "PATCH", u, map[string]string{"Content-Type": patch["Content-Type"]}, []byte("xx")},
		{"patch wrong content type", "PATCH", u, map[string]string{"Content-Type": "text/plain", "Upload-Offset": "0"}, []byte("xx")},
		{"path characters in id", "HEAD", base + "..%2f..%2fca.key", nil, nil},
		{"unknown id", "HEAD", base + strings.Repeat("cd", 16), nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code := do(tc.method, tc.url, tc.hdr, tc.body)
			if code < 400 || code > 499 {
				t.Fatalf("HTTP %d, want 4xx", code)
			}
			if off, err := c.Offset(t.Context(), u); err != nil || off != 0 {
				t.Fatalf("the upload changed: offset %d (%v)", off, err)
			}
		})
	}
}

// TestDeviceAccess: no certificate, a foreign certificate and a revoked
// device are refused; refusals are in the audit log.
func TestDeviceAccess(t *testing.T) {
	h := start(t)
	req := receiver.CommitRequest{UploadID: strings.Repeat("ab", 16), Size: 1, SHA256: strings.Repeat("00", 32)}
	anon := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.ClientTLS(nil, "", nil).RootCAs, MinVersion: tls.VersionTLS12}}}
	anon.Transport.(*http.Transport).TLSClientConfig = h.box.TLSConfig().Clone()
	anon.Transport.(*http.Transport).TLSClientConfig.Certificates = nil
	anon.Transport.(*http.Transport).TLSClientConfig.GetClientCertificate = nil
	if code, _, _ := h.commit(t, anon, req); code != http.StatusUnauthorized {
		t.Fatalf("no certificate: HTTP %d, want 401", code)
	}
	// A certificate from another CA is not even sent: anonymous again.
	other, _ := pki.NewCA("other", time.Now())
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	fc, _ := other.IssueDevice("room-9", pub, time.Now())
	foreignCfg := h.box.TLSConfig().Clone()
	foreignCfg.Certificates = []tls.Certificate{pki.DeviceCertificate(fc, priv)}
	foreignCfg.GetClientCertificate = nil
	foreign := &http.Client{Transport: &http.Transport{TLSClientConfig: foreignCfg}}
	if code, _, _ := h.commit(t, foreign, req); code != http.StatusUnauthorized {
		t.Fatalf("foreign certificate: HTTP %d, want 401", code)
	}
	// The enrolled box gets through (404: no such upload)...
	if code, _, _ := h.commit(t, h.box.HTTPClient(), req); code != http.StatusNotFound {
		t.Fatalf("enrolled box: HTTP %d, want 404", code)
	}
	// ...until it is revoked: a connection the box keeps alive is refused
	// request by request (403), and a new TLS handshake fails.
	if err := h.admin.RevokeDevice("room-9"); err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(req)
	if resp, err := h.box.HTTPClient().Post("https://"+h.addr+"/v1/commit", "application/json", bytes.NewReader(body)); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("revoked device on a kept-alive connection: HTTP %d, want 403", resp.StatusCode)
		}
	}
	fresh := &http.Client{Transport: &http.Transport{TLSClientConfig: h.box.TLSConfig().Clone()}}
	if _, err := fresh.Post("https://"+h.addr+"/v1/commit", "application/json", bytes.NewReader(body)); err == nil {
		t.Fatal("revoked device still connects")
	}
	fresh.CloseIdleConnections()
	log := h.auditText(t)
	if !strings.Contains(log, `"event":"device.connect","identity":"room-9","source":"127.0.0.1","outcome":"denied"`) {
		t.Fatalf("revoked connection not audited:\n%s", log)
	}
	if !strings.Contains(string(log), `"event":"device.revoke","identity":"room-9","source":"local","outcome":"ok"`) {
		t.Fatalf("revocation not audited:\n%s", log)
	}
}

// TestTusJSClient: an independent tus client (tus-js-client on Node, over
// mutual TLS) uploads a segment that the receiver then commits.
func TestTusJSClient(t *testing.T) {
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node is required (scripts/setup.sh): %v", err)
	}
	modules, _ := filepath.Abs("../.cache/npm/node_modules")
	if _, err := os.Stat(filepath.Join(modules, "tus-js-client")); err != nil {
		t.Fatalf("tus-js-client is required in .cache/npm (run scripts/setup.sh): %v", err)
	}
	h := start(t)
	dir := t.TempDir()
	seg := h.segment(t, 0, [32]byte{}, [16]byte{3})
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(h.box.Device.Signer())
	if err != nil {
		t.Fatal(err)
	}
	segPath := write("seg.ubx", seg)
	caPath := write("ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: h.box.CA.Raw}))
	certPath := write("cert.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: h.box.DeviceCert.Certificate[0]}))
	keyPath := write("key.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	cmd := exec.CommandContext(t.Context(), node, "testdata/tus-upload.cjs", "https://"+h.addr+"/v1/uploads/", segPath, caPath, certPath, keyPath)
	cmd.Env = append(os.Environ(), "NODE_PATH="+modules)
	out, err := cmd.Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("tus-js-client: %v\n%s", err, msg)
	}
	u := strings.TrimSpace(string(out))
	sum := sha256.Sum256(seg)
	code, cr, body := h.commit(t, h.box.HTTPClient(), receiver.CommitRequest{UploadID: path.Base(u), Size: int64(len(seg)), SHA256: hex.EncodeToString(sum[:])})
	if code != http.StatusOK || cr.Outcome != "OK" {
		t.Fatalf("commit of the tus-js-client upload: HTTP %d %s", code, body)
	}
}
