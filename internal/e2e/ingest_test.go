package e2e

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/zeebo/blake3"

	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/receiver/receipt"
	"github.com/uploadbox/uploadbox/uploader"
	"github.com/uploadbox/uploadbox/wire"
)

// ingestBox is an enrolled box driven by hand: its state and an HTTP
// client presenting its device certificate.
type ingestBox struct {
	enrolled
	st     *uploader.State
	client *http.Client
	base   string // https://ADDR
	// alg is the hash its uploads announce and its commits carry: BLAKE3,
	// or, as a box of an older release, SHA-256 ("" too, announcing
	// nothing).
	alg wire.HashAlg
}

// hash is data's hash of the kind b's commits carry.
func (b ingestBox) hash(data []byte) (wire.HashAlg, [32]byte) {
	if b.alg == wire.HashBLAKE3 {
		return b.alg, blake3.Sum256(data)
	}
	return wire.HashSHA256, sha256.Sum256(data)
}

func newIngestBox(t *testing.T, rcv *receiverProc, name string) ingestBox {
	t.Helper()
	b := enrollBox(t, rcv, name, rcv.addr, filepath.Join(t.TempDir(), name))
	st, err := uploader.LoadState(b.state)
	if err != nil {
		t.Fatal(err)
	}
	return ingestBox{enrolled: b, st: st, client: st.HTTPClient(), base: "https://" + rcv.addr}
}

// seal makes a real segment of about size bytes with the box's keys.
func (b ingestBox) seal(t *testing.T, size int) []byte {
	t.Helper()
	var rec [16]byte
	rand.Read(rec[:])
	var buf bytes.Buffer
	w, err := crypto.NewWriter(&buf, b.st.Recipients, b.st.Device, crypto.Params{RecordingID: rec, Codec: "video/mp4", Start: time.Now()})
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

type reply struct {
	code   int
	body   string
	header http.Header
}

// tus sends one tus request (url relative to /v1/uploads/ or absolute).
func (b ingestBox) tus(t *testing.T, method, url string, hdr map[string]string, body io.Reader) reply {
	t.Helper()
	if !strings.HasPrefix(url, "https://") {
		url = b.base + "/v1/uploads/" + url
	}
	req, err := http.NewRequestWithContext(t.Context(), method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Tus-Resumable", "1.0.0")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	if method == http.MethodPatch {
		req.Header.Set("Content-Type", "application/offset+octet-stream")
	}
	resp, err := b.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, string(data), resp.Header}
}

// create opens an upload of length bytes and returns its id.
func (b ingestBox) create(t *testing.T, length int) string {
	t.Helper()
	hdr := map[string]string{"Upload-Length": strconv.Itoa(length)}
	if b.alg == wire.HashBLAKE3 {
		hdr["Upload-Metadata"] = wire.HashMetadata + " " + base64.StdEncoding.EncodeToString([]byte(wire.HashBLAKE3))
	}
	r := b.tus(t, http.MethodPost, "", hdr, nil)
	if r.code != http.StatusCreated {
		t.Fatalf("create %d bytes: HTTP %d %s", length, r.code, r.body)
	}
	return path.Base(r.header.Get("Location"))
}

func (b ingestBox) patch(t *testing.T, id string, offset int, data []byte) reply {
	t.Helper()
	return b.tus(t, http.MethodPatch, id, map[string]string{"Upload-Offset": strconv.Itoa(offset)}, bytes.NewReader(data))
}

// openPatch starts a PATCH of length bytes at offset whose body the test
// writes through the returned pipe; done gets the answer's status and body
// (or the client's error) when it ends.
func (b ingestBox) openPatch(t *testing.T, id string, offset, length int) (body *io.PipeWriter, done <-chan string) {
	t.Helper()
	pr, pw := io.Pipe()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPatch, b.base+"/v1/uploads/"+id, pr)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(length)
	req.Header.Set("Tus-Resumable", "1.0.0")
	req.Header.Set("Upload-Offset", strconv.Itoa(offset))
	req.Header.Set("Content-Type", "application/offset+octet-stream")
	ch := make(chan string, 1)
	go func() {
		resp, err := b.client.Do(req)
		if err != nil {
			ch <- err.Error()
			return
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		ch <- resp.Status + " " + string(data)
	}()
	return pw, ch
}

func (b ingestBox) offset(t *testing.T, id string) int {
	t.Helper()
	r := b.tus(t, http.MethodHead, id, nil, nil)
	if r.code != http.StatusOK {
		t.Fatalf("HEAD: HTTP %d", r.code)
	}
	n, _ := strconv.Atoi(r.header.Get("Upload-Offset"))
	return n
}

func (b ingestBox) commit(t *testing.T, id string, data []byte) (reply, receiver.Refusal) {
	t.Helper()
	alg, sum := b.hash(data)
	body, _ := json.Marshal(wire.NewCommitRequest(id, int64(len(data)), alg, sum))
	resp, err := b.client.Post(b.base+"/v1/commit", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("commit: %v", err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	var ref receiver.Refusal
	if resp.StatusCode != http.StatusOK {
		if err := json.Unmarshal(out, &ref); err != nil || ref.Reason == "" {
			t.Fatalf("commit refused with HTTP %d and a body that is not a Refusal: %s", resp.StatusCode, out)
		}
	}
	return reply{resp.StatusCode, string(out), resp.Header}, ref
}

// checkStored: the commit's receipt is for exactly data, the stored object
// holds exactly data in a file of its own, and `verify` says OK.
func (b ingestBox) checkStored(t *testing.T, rcv *receiverProc, r reply, data []byte) {
	t.Helper()
	var cr receiver.CommitResponse
	if err := json.Unmarshal([]byte(r.body), &cr); err != nil {
		t.Fatal(err)
	}
	rb, err := base64.StdEncoding.DecodeString(cr.Receipt)
	if err != nil {
		t.Fatal(err)
	}
	alg, sum := b.hash(data)
	rc, err := receipt.Verify(b.st.ReceiptKey, rb, alg)
	if err != nil {
		t.Fatal(err)
	}
	if rc.Size != int64(len(data)) || rc.Hash != sum {
		t.Fatalf("receipt for %d bytes %x, uploaded %d bytes %x", rc.Size, rc.Hash[:8], len(data), sum[:8])
	}
	obj := filepath.Join(rcv.data, receiver.StoreDir, filepath.FromSlash(cr.Key))
	stored, err := os.ReadFile(obj)
	if err != nil {
		t.Fatal(err)
	}
	if _, ss := b.hash(stored); len(stored) != len(data) || ss != sum {
		t.Fatalf("stored %d bytes %x, receipted %d bytes %x", len(stored), ss[:8], rc.Size, sum[:8])
	}
	var st syscall.Stat_t
	if err := syscall.Stat(obj, &st); err != nil || st.Nlink != 1 {
		t.Fatalf("the stored object has %d links (%v): it shares its file", st.Nlink, err)
	}
	out := run(t, "uploadbox-receiver", "verify", "--device-pub", b.st.Device.Public().String(), obj)
	if !strings.HasPrefix(out, "OK ") {
		t.Fatalf("verify: %s", out)
	}
	if !ed25519.PublicKey(rc.Device).Equal(ed25519.PublicKey(b.st.Device.Public().Bytes())) {
		t.Fatal("the receipt names another device")
	}
}

func auditLog(t *testing.T, rcv *receiverProc) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(rcv.data, receiver.AuditFile))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// TestUploadsBelongToTheirDevice (issue 10, item 1): one enrolled device
// cannot read, change, delete or commit another device's upload. Every
// such request is answered exactly as for an upload that does not exist,
// is audited as upload.denied, and the upload goes on untouched.
func TestUploadsBelongToTheirDevice(t *testing.T) {
	rcv := startReceiver(t, filepath.Join(t.TempDir(), "receiver"), "127.0.0.1:0")
	a := newIngestBox(t, rcv, "room-a")
	b := newIngestBox(t, rcv, "room-b")
	seg := a.seal(t, 60_000)
	id := a.create(t, len(seg))
	half := len(seg) / 2
	if r := a.patch(t, id, 0, seg[:half]); r.code != http.StatusNoContent {
		t.Fatalf("PATCH: HTTP %d %s", r.code, r.body)
	}
	var none [16]byte
	rand.Read(none[:])
	missing := hex.EncodeToString(none[:])
	zeros := make([]byte, len(seg)-half)
	steps := []struct {
		name string
		do   func(id string) reply
	}{
		{"HEAD", func(id string) reply { return b.tus(t, http.MethodHead, id, nil, nil) }},
		{"PATCH", func(id string) reply { return b.patch(t, id, half, zeros) }},
		{"GET", func(id string) reply { return b.tus(t, http.MethodGet, id, nil, nil) }},
		{"DELETE", func(id string) reply { return b.tus(t, http.MethodDelete, id, nil, nil) }},
		{"commit", func(id string) reply { r, _ := b.commit(t, id, seg); return r }},
	}
	for _, s := range steps {
		got, want := s.do(id), s.do(missing)
		got.body = strings.ReplaceAll(got.body, id, "ID")
		want.body = strings.ReplaceAll(want.body, missing, "ID")
		for _, h := range []http.Header{got.header, want.header} {
			h.Del("Date")
		}
		if got.code != want.code || got.body != want.body || !equalHeaders(got.header, want.header) {
			t.Errorf("%s of another device's upload: HTTP %d %q %v; of a missing upload: HTTP %d %q %v", s.name, got.code, got.body, got.header, want.code, want.body, want.header)
		}
		if got.code < 400 {
			t.Errorf("%s of another device's upload succeeded: HTTP %d", s.name, got.code)
		}
	}
	// The owner's upload is as it was: same offset, and it completes.
	if off := a.offset(t, id); off != half {
		t.Fatalf("the owner's upload is at offset %d, want %d", off, half)
	}
	if r := a.patch(t, id, half, seg[half:]); r.code != http.StatusNoContent {
		t.Fatalf("owner's PATCH: HTTP %d %s", r.code, r.body)
	}
	r, ref := a.commit(t, id, seg)
	if r.code != http.StatusOK {
		t.Fatalf("owner's commit: HTTP %d %+v", r.code, ref)
	}
	a.checkStored(t, rcv, r, seg)
	// Committed: another device's repeat of the commit is still "no such upload".
	if r, ref := b.commit(t, id, seg); r.code != http.StatusNotFound || ref.Reason != receiver.ReasonNotFound {
		t.Fatalf("another device's commit of a committed upload: HTTP %d %+v", r.code, ref)
	}
	log := auditLog(t, rcv)
	if !strings.Contains(log, `"event":"upload.denied","identity":"room-b"`) {
		t.Fatalf("no upload.denied entry for room-b:\n%s", log)
	}
	if strings.Contains(log, id) {
		t.Fatal("the audit log names the upload id")
	}
	if out := rcv.stderr.String(); strings.Contains(out, id) || !strings.Contains(out, "commit refused") {
		t.Fatalf("the receiver's log names the upload id, or has no refused commit:\n%s", out)
	}
}

func equalHeaders(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if a.Get(k) != b.Get(k) {
			return false
		}
	}
	return true
}

// TestCommitTakesTheWholeUploadLocked (issue 10, item 2): create with
// Upload-Length n+4096, PATCH n bytes, open a second PATCH at offset n and
// keep it open, commit n bytes. That commit must not get a receipt while
// the PATCH can still change the upload; in the end the stored bytes are
// the receipted bytes in a file of their own and `verify` says OK.
func TestCommitTakesTheWholeUploadLocked(t *testing.T) {
	rcv := startReceiver(t, filepath.Join(t.TempDir(), "receiver"), "127.0.0.1:0")
	box := newIngestBox(t, rcv, "room-1")
	// A real recording of one segment, so that its export can be played.
	spool := filepath.Join(t.TempDir(), "spool")
	os.Mkdir(spool, 0o700)
	if sealed := recordInto(t, box.enrolled, spool, "1s"); sealed != 1 { // 1 s in 2 s segments: always one
		t.Fatalf("recorded %d segments, want 1", sealed)
	}
	files := spoolSegments(t, spool)
	if len(files) != 1 {
		t.Fatalf("spool holds %v", files)
	}
	seg, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	n := len(seg) - 4096
	id := box.create(t, len(seg))
	if r := box.patch(t, id, 0, seg[:n]); r.code != http.StatusNoContent {
		t.Fatalf("first PATCH: HTTP %d %s", r.code, r.body)
	}
	pw, second := box.openPatch(t, id, n, 4096)
	// The second PATCH is open once the receiver holds its lock: a HEAD
	// then waits for it (or, newer tusd, stops it), so wait for the lock
	// file instead.
	lockFile := filepath.Join(rcv.data, receiver.UploadsDir, id+".lock")
	for deadline := time.Now().Add(30 * time.Second); ; {
		if _, err := os.Stat(lockFile); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the second PATCH did not reach the receiver within 30 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	r, ref := box.commit(t, id, seg[:n])
	if r.code == http.StatusOK {
		t.Fatalf("a commit of %d bytes of an upload of %d with a PATCH open got a receipt: %s", n, len(seg), r.body)
	}
	if r.code != http.StatusConflict || ref.Reason != receiver.ReasonIncomplete || ref.Offset == nil || *ref.Offset != int64(n) {
		t.Fatalf("commit of an unfinished upload: HTTP %d %+v, want 409 incomplete at offset %d", r.code, ref, n)
	}
	// Finish the second PATCH; if the commit stopped it, resume from HEAD.
	go func() {
		pw.Write(seg[n:])
		pw.Close()
	}()
	select {
	case <-second:
	case <-time.After(60 * time.Second):
		t.Fatal("the second PATCH got no answer within 60 s")
	}
	pw.CloseWithError(io.ErrClosedPipe)
	if off := box.offset(t, id); off < len(seg) {
		if r := box.patch(t, id, off, seg[off:]); r.code != http.StatusNoContent {
			t.Fatalf("resumed PATCH: HTTP %d %s", r.code, r.body)
		}
	}
	r, ref = box.commit(t, id, seg)
	if r.code != http.StatusOK {
		t.Fatalf("commit of the finished upload: HTTP %d %+v", r.code, ref)
	}
	box.checkStored(t, rcv, r, seg)
	// The upload is gone; a PATCH cannot reach the stored object.
	if r := box.patch(t, id, len(seg), []byte("more")); r.code != http.StatusNotFound {
		t.Fatalf("PATCH after commit: HTTP %d", r.code)
	}
	// A repeated commit gets the same receipt.
	again, ref := box.commit(t, id, seg)
	if again.code != http.StatusOK || !strings.Contains(again.body, `"repeated":true`) {
		t.Fatalf("repeated commit: HTTP %d %s %+v", again.code, again.body, ref)
	}
	box.checkStored(t, rcv, again, seg)
	rs := recordings(t, rcv.data)
	if len(rs) != 1 || rs[0].Segments != 1 {
		t.Fatalf("receiver has %+v, want one recording of one segment", rs)
	}
	mp4 := filepath.Join(t.TempDir(), "rec.mp4")
	run(t, "uploadbox-receiver", "recordings", "export", rs[0].ID, "-o", mp4, "--identity", filepath.Join(rcv.data, "org.key"), "--data", rcv.data)
	if d := checkRecording(t, mp4, true); d < 0.75 {
		t.Fatalf("exported %.2fs of a 1 s recording", d)
	}
}

// refused checks that r is a refusal with status code and reason.
func refused(t *testing.T, what string, r reply, code int, reason string) {
	t.Helper()
	var ref receiver.Refusal
	if r.code != code || json.Unmarshal([]byte(r.body), &ref) != nil || ref.Reason != reason || ref.Error == "" {
		t.Fatalf("%s: HTTP %d %s, want %d with reason %q", what, r.code, r.body, code, reason)
	}
}

// uploadFiles lists the files of upload id in the receiver's uploads dir.
func uploadFiles(rcv *receiverProc, id string) []string {
	files, _ := filepath.Glob(filepath.Join(rcv.data, receiver.UploadsDir, id+"*"))
	return files
}

// TestUploadQuota (issue 10, item 10): a device's unfinished uploads are
// bounded in bytes (--upload-quota) and in number (64); a creation over
// either is refused 413 "quota" and audited. Uploads refused at commit are
// removed at once and free their quota.
func TestUploadQuota(t *testing.T) {
	rcv := startReceiver(t, filepath.Join(t.TempDir(), "receiver"), "127.0.0.1:0", "--upload-quota", "100000")
	a := newIngestBox(t, rcv, "room-a")
	b := newIngestBox(t, rcv, "room-b")
	create := func(box ingestBox, n int) reply {
		return box.tus(t, http.MethodPost, "", map[string]string{"Upload-Length": strconv.Itoa(n)}, nil)
	}
	big := a.create(t, 60_000)
	refused(t, "a creation over the byte quota", create(a, 50_000), http.StatusRequestEntityTooLarge, receiver.ReasonQuota)
	a.create(t, 40_000) // exactly the quota
	// The quota is per device: b has its own, bounded in number too.
	for i := range 64 {
		if r := create(b, 1); r.code != http.StatusCreated {
			t.Fatalf("creation %d of 64: HTTP %d %s", i+1, r.code, r.body)
		}
	}
	refused(t, "the 65th unfinished upload", create(b, 1), http.StatusRequestEntityTooLarge, receiver.ReasonQuota)
	// A deleted upload no longer counts.
	if r := a.tus(t, http.MethodDelete, big, nil, nil); r.code != http.StatusNoContent {
		t.Fatalf("DELETE: HTTP %d %s", r.code, r.body)
	}
	// Refused at commit (corrupt, then mismatch): removed at once.
	junk := make([]byte, 30_000)
	rand.Read(junk)
	id := a.create(t, len(junk))
	a.patch(t, id, 0, junk)
	r, ref := a.commit(t, id, junk)
	if r.code != http.StatusUnprocessableEntity || ref.Reason != receiver.ReasonCorrupt {
		t.Fatalf("commit of garbage: HTTP %d %+v", r.code, ref)
	}
	if files := uploadFiles(rcv, id); len(files) != 0 || a.tus(t, http.MethodHead, id, nil, nil).code != http.StatusNotFound {
		t.Fatalf("the upload refused as corrupt is still there: %v", files)
	}
	seg := a.seal(t, 20_000)
	id = a.create(t, len(seg))
	a.patch(t, id, 0, seg)
	other := bytes.Clone(seg)
	other[len(other)-1] ^= 1
	r, ref = a.commit(t, id, other)
	if r.code != http.StatusConflict || ref.Reason != receiver.ReasonMismatch {
		t.Fatalf("commit with another SHA-256: HTTP %d %+v", r.code, ref)
	}
	if files := uploadFiles(rcv, id); len(files) != 0 || a.tus(t, http.MethodHead, id, nil, nil).code != http.StatusNotFound {
		t.Fatalf("the upload refused for a mismatch is still there: %v", files)
	}
	// Neither the deleted nor the refused uploads count any more.
	a.create(t, 60_000)
	// Both devices connect from 127.0.0.1: room-b's refusal is counted in
	// the coalesced summary that closes the minute.
	if log := auditLog(t, rcv); !strings.Contains(log, `"event":"upload.quota","identity":"room-a","source":"127.0.0.1","outcome":"denied"`) {
		t.Fatalf("no upload.quota entry:\n%s", log)
	}
}

// TestUploadExpiry (issue 10, item 10): an unfinished upload older than
// --upload-expiry is removed with its files and no longer counts against
// the device's quota.
func TestUploadExpiry(t *testing.T) {
	rcv := startReceiver(t, filepath.Join(t.TempDir(), "receiver"), "127.0.0.1:0", "--upload-quota", "1000", "--upload-expiry", "5s")
	a := newIngestBox(t, rcv, "room-a")
	id := a.create(t, 1000)
	if r := a.patch(t, id, 0, make([]byte, 100)); r.code != http.StatusNoContent {
		t.Fatalf("PATCH: HTTP %d %s", r.code, r.body)
	}
	refused(t, "a creation over the quota", a.tus(t, http.MethodPost, "", map[string]string{"Upload-Length": "1"}, nil), http.StatusRequestEntityTooLarge, receiver.ReasonQuota)
	for deadline := time.Now().Add(60 * time.Second); a.tus(t, http.MethodHead, id, nil, nil).code != http.StatusNotFound; {
		if time.Now().After(deadline) {
			t.Fatal("an upload with --upload-expiry 5s is still there after 60 s")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if files := uploadFiles(rcv, id); len(files) != 0 {
		t.Fatalf("the expired upload left files: %v", files)
	}
	a.create(t, 1000) // the expired upload no longer counts
}

// TestStalledPatchIsCut (issue 10, item 5): a PATCH that sends some bytes
// and then stalls is cut after --patch-timeout; the bytes it sent are
// kept, the upload resumes from there and commits.
func TestStalledPatchIsCut(t *testing.T) {
	rcv := startReceiver(t, filepath.Join(t.TempDir(), "receiver"), "127.0.0.1:0", "--patch-timeout", "2s")
	box := newIngestBox(t, rcv, "room-1")
	seg := box.seal(t, 50_000)
	id := box.create(t, len(seg))
	const sent = 20_000
	pw, done := box.openPatch(t, id, 0, len(seg))
	defer pw.Close()
	if _, err := pw.Write(seg[:sent]); err != nil {
		t.Fatal(err)
	}
	// Now the PATCH stalls. The default (30 s) would keep it longer than
	// this wait; --patch-timeout 2s cuts it.
	select {
	case got := <-done:
		t.Logf("the stalled PATCH ended: %s", got)
	case <-time.After(20 * time.Second):
		t.Fatal("a PATCH stalled for 20 s with --patch-timeout 2s is still open")
	}
	if off := box.offset(t, id); off != sent {
		t.Fatalf("after the cut the upload is at offset %d, want the %d bytes sent", off, sent)
	}
	if r := box.patch(t, id, sent, seg[sent:]); r.code != http.StatusNoContent {
		t.Fatalf("resumed PATCH: HTTP %d %s", r.code, r.body)
	}
	r, ref := box.commit(t, id, seg)
	if r.code != http.StatusOK {
		t.Fatalf("commit: HTTP %d %+v", r.code, ref)
	}
	box.checkStored(t, rcv, r, seg)
}
