package receiver_test

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/receiver/receipt"
	"github.com/uploadbox/uploadbox/wire"
)

func fileIno(t *testing.T, p string) uint64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// adoptCase is one segment uploaded to h and not yet committed.
type adoptCase struct {
	seg    []byte
	rec    [16]byte
	req    receiver.CommitRequest
	url    string
	staged string // the upload's file
	ino    uint64
	alg    wire.HashAlg // the hash the upload announced and its commit carries
}

func uploadForAdoption(t *testing.T, h *harness, uploads string, rec [16]byte, alg wire.HashAlg) adoptCase {
	t.Helper()
	c := adoptCase{rec: rec, seg: h.segment(t, 0, [32]byte{}, rec), alg: alg}
	c.url, c.req = uploadAs(t, h, h.addr, c.seg, alg)
	c.staged = filepath.Join(uploads, c.req.UploadID)
	c.ino = fileIno(t, c.staged)
	return c
}

// checkCommitted checks that the commit answered with a receipt for c and
// that the store holds c's bytes, once; adopted: as the upload's own file.
func (c adoptCase) checkCommitted(t *testing.T, h *harness, cr receiver.CommitResponse, adopted bool) {
	t.Helper()
	c.checkReceipt(t, h, cr)
	obj := filepath.Join(h.data, receiver.StoreDir, filepath.FromSlash(cr.Key))
	got, err := os.ReadFile(obj)
	if err != nil || !bytes.Equal(got, c.seg) {
		t.Fatalf("stored object %s: %v; not the segment's bytes", cr.Key, err)
	}
	if same := fileIno(t, obj) == c.ino; same != adopted {
		t.Fatalf("stored object is the upload's own file: %v, want %v", same, adopted)
	}
	if n := len(h.stored(t)); n != 1 {
		t.Fatalf("store holds %d objects, want 1", n)
	}
}

// checkReceipt checks that the commit answered with a receipt for c, of
// the version the hash it carried asks for.
func (c adoptCase) checkReceipt(t *testing.T, h *harness, cr receiver.CommitResponse) {
	t.Helper()
	r, err := receipt.Verify(h.box.ReceiptKey, mustB64(t, cr.Receipt), c.alg)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Matches(ed25519.PublicKey(h.box.Device.Public().Bytes()), c.rec, 0, c.alg, hashOf(c.alg, c.seg), int64(len(c.seg))); err != nil {
		t.Fatal(err)
	}
}

// checkGone checks that nothing is left of the upload: not its file, its
// .info, its saved hash state or its note, and tus answers 404.
func (c adoptCase) checkGone(t *testing.T, h *harness) {
	t.Helper()
	for _, suffix := range []string{"", ".info", ".hash", ".adopt"} {
		if _, err := os.Lstat(c.staged + suffix); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("upload%s left behind: %v", suffix, err)
		}
	}
	c.checkUnreachable(t, h)
}

// checkUnreachable: neither HEAD nor PATCH reaches the upload.
func (c adoptCase) checkUnreachable(t *testing.T, h *harness) {
	t.Helper()
	client := h.box.HTTPClient()
	u := "https://" + h.addr + "/v1/uploads/" + c.req.UploadID
	for _, method := range []string{http.MethodHead, http.MethodPatch} {
		req, _ := http.NewRequestWithContext(t.Context(), method, u, bytes.NewReader([]byte{1}))
		req.Header.Set("Tus-Resumable", "1.0.0")
		if method == http.MethodPatch {
			req.Header.Set("Upload-Offset", strconv.Itoa(len(c.seg)-1))
			req.Header.Set("Content-Type", "application/offset+octet-stream")
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("%s of the committed upload: %s, want 404", method, resp.Status)
		}
	}
}

// TestCommitAdoptsUpload: with uploads staged on the store's filesystem,
// the commit renames the upload's file into the store (the stored object
// is that file, not a copy), and nothing of the upload is left.
func TestCommitAdoptsUpload(t *testing.T) {
	forAlgs(t, testCommitAdoptsUpload)
}

func testCommitAdoptsUpload(t *testing.T, alg wire.HashAlg) {
	h := start(t)
	c := uploadForAdoption(t, h, filepath.Join(h.data, receiver.UploadsDir), [16]byte{0xad, 1}, alg)
	if _, err := os.Stat(c.staged + ".hash"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a hash state was saved though the commit adopts: %v", err)
	}
	// As a receiver that saved hash states left one (an upgrade mid-upload).
	if err := os.WriteFile(c.staged+".hash", []byte("state"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, cr, body := h.commit(t, h.box.HTTPClient(), c.req)
	if code != http.StatusOK {
		t.Fatalf("commit: HTTP %d %s", code, body)
	}
	c.checkCommitted(t, h, cr, true)
	c.checkGone(t, h)
	code, again, _ := h.commit(t, h.box.HTTPClient(), c.req)
	if code != http.StatusOK || again.Receipt != cr.Receipt || !again.Repeated {
		t.Fatalf("repeated commit: HTTP %d %+v", code, again)
	}
}

// TestCommitAdoptCrash: a receiver that dies at each point of an adopting
// commit (simulated: the commit stops there, the receiver is stopped and
// started again on the same data) answers the box's retried commit with a
// receipt, stores the segment once, as the upload's own file, and leaves
// nothing of the upload. Once the file is renamed into the store, no tus
// request reaches it under the upload's id.
func TestCommitAdoptCrash(t *testing.T) {
	forAlgs(t, testCommitAdoptCrash)
}

func testCommitAdoptCrash(t *testing.T, alg wire.HashAlg) {
	for _, point := range []string{receiver.CrashNoted, receiver.CrashAdopted, receiver.CrashRecorded} {
		t.Run(point, func(t *testing.T) {
			h := start(t)
			receiver.SetCommitCrash(h.srv, func(p string) error {
				if p == point {
					return errors.New("simulated crash at " + p)
				}
				return nil
			})
			c := uploadForAdoption(t, h, filepath.Join(h.data, receiver.UploadsDir), [16]byte{0xad, 2}, alg)
			if code, _, body := h.commit(t, h.box.HTTPClient(), c.req); code != http.StatusInternalServerError {
				t.Fatalf("commit that crashed: HTTP %d %s, want 500", code, body)
			}
			if point != receiver.CrashNoted {
				c.checkUnreachable(t, h)
			}
			if err := h.stop(); err != nil {
				t.Fatal(err)
			}
			_, addr, stop := serve(t, receiver.ServerConfig{Data: h.data, Listen: "127.0.0.1:0", Database: h.database})
			defer stop()
			h.addr = addr
			code, cr, body := h.commit(t, h.box.HTTPClient(), c.req)
			if code != http.StatusOK {
				t.Fatalf("retried commit after the restart: HTTP %d %s", code, body)
			}
			if cr.Repeated != (point == receiver.CrashRecorded) {
				t.Fatalf("retried commit: repeated %v", cr.Repeated)
			}
			c.checkCommitted(t, h, cr, true)
			if point != receiver.CrashRecorded { // else the janitor removes the rest
				c.checkGone(t, h)
			}
			code, again, _ := h.commit(t, h.box.HTTPClient(), c.req)
			if code != http.StatusOK || again.Receipt != cr.Receipt {
				t.Fatalf("commit again: HTTP %d %+v", code, again)
			}
		})
	}
}

// TestJanitorSettlesAdoptedCommit: a receiver dies after an adopting
// commit renamed the upload into the store and before it recorded the
// segment; the box's retry comes only after the janitor expired the
// upload. A stored object that verifies as the box's segment is recorded
// by the janitor, so the retried commit gets the receipt; one that does not
// (here tampered with) is removed, and the retry is told the upload is
// gone (the box still has its copy and uploads it again). Either way
// nothing is left of the upload, no object is left without a record, and
// the janitor audits what it did.
func TestJanitorSettlesAdoptedCommit(t *testing.T) {
	forAlgs(t, testJanitorSettlesAdoptedCommit)
}

func testJanitorSettlesAdoptedCommit(t *testing.T, alg wire.HashAlg) {
	for _, tc := range []struct {
		name     string
		tamper   bool
		outcome  string
		wantCode int
	}{
		{name: "verifies", outcome: `"outcome":"recorded"`, wantCode: http.StatusOK},
		{name: "tampered", tamper: true, outcome: `"outcome":"removed"`, wantCode: http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := start(t)
			receiver.SetCommitCrash(h.srv, func(p string) error {
				if p == receiver.CrashAdopted {
					return errors.New("simulated crash at " + p)
				}
				return nil
			})
			c := uploadForAdoption(t, h, filepath.Join(h.data, receiver.UploadsDir), [16]byte{0xad, 5}, alg)
			if code, _, body := h.commit(t, h.box.HTTPClient(), c.req); code != http.StatusInternalServerError {
				t.Fatalf("commit that crashed: HTTP %d %s, want 500", code, body)
			}
			if err := h.stop(); err != nil {
				t.Fatal(err)
			}
			objs := h.stored(t)
			if len(objs) != 1 {
				t.Fatalf("store holds %d objects after the crash, want the adopted one", len(objs))
			}
			if tc.tamper {
				b, _ := os.ReadFile(objs[0])
				b[len(b)/2] ^= 1
				if err := os.WriteFile(objs[0], b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			srv, addr, stop := serve(t, receiver.ServerConfig{Data: h.data, Listen: "127.0.0.1:0", Database: h.database})
			defer stop()
			h.addr = addr
			n, err := receiver.ExpireUploads(t.Context(), srv, time.Now().Add(time.Hour))
			if err != nil || n != 1 {
				t.Fatalf("janitor expired %d uploads (%v), want 1", n, err)
			}
			c.checkGone(t, h)
			code, cr, body := h.commit(t, h.box.HTTPClient(), c.req)
			if code != tc.wantCode {
				t.Fatalf("commit retried after the janitor: HTTP %d %s, want %d", code, body, tc.wantCode)
			}
			if tc.tamper {
				if left := h.stored(t); len(left) != 0 {
					t.Fatalf("objects left without a record: %v", left)
				}
			} else {
				if !cr.Repeated {
					t.Fatal("retried commit: not answered as repeated")
				}
				c.checkCommitted(t, h, cr, true)
			}
			log := h.auditText(t)
			if !strings.Contains(log, `"upload.adopted"`) || !strings.Contains(log, tc.outcome) {
				t.Fatalf("audit log has no upload.adopted entry with %s", tc.outcome)
			}
		})
	}
}

// TestCommitCopiesAcrossFilesystems: uploads staged on another filesystem
// than the store (here tmpfs) are copied into it, also when the rename is
// tried and refused by the kernel (EXDEV).
func TestCommitCopiesAcrossFilesystems(t *testing.T) {
	forAlgs(t, testCommitCopiesAcrossFilesystems)
}

func testCommitCopiesAcrossFilesystems(t *testing.T, alg wire.HashAlg) {
	uploads, err := os.MkdirTemp("/dev/shm", "uploadbox-test-uploads-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(uploads)
	h := startWith(t, receiver.ServerConfig{UploadsDir: uploads})
	if a, b := fileDev(t, uploads), fileDev(t, h.data); a == b {
		t.Fatalf("/dev/shm and %s are one filesystem here: this test needs /dev/shm to be its own tmpfs", h.data)
	}
	c := uploadForAdoption(t, h, uploads, [16]byte{0xad, 3}, alg)
	code, cr, body := h.commit(t, h.box.HTTPClient(), c.req)
	if code != http.StatusOK {
		t.Fatalf("commit: HTTP %d %s", code, body)
	}
	c.checkCommitted(t, h, cr, false)
	c.checkGone(t, h)

	// Told to adopt anyway, the rename meets EXDEV and the commit copies
	// (an announced upload: without the SHA-256 its Put needs, which the
	// receiver did not compute as it meant to adopt).
	receiver.ForceAdoption(h.srv)
	rec := [16]byte{0xad, 4}
	c = uploadForAdoption(t, h, uploads, rec, alg)
	code, cr, body = h.commit(t, h.box.HTTPClient(), c.req)
	if code != http.StatusOK {
		t.Fatalf("commit: HTTP %d %s", code, body)
	}
	c.checkReceipt(t, h, cr)
	obj := filepath.Join(h.data, receiver.StoreDir, filepath.FromSlash(cr.Key))
	if got, err := os.ReadFile(obj); err != nil || !bytes.Equal(got, c.seg) {
		t.Fatalf("stored object: %v", err)
	}
	c.checkGone(t, h)
}

func fileDev(t *testing.T, p string) uint64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return uint64(fi.Sys().(*syscall.Stat_t).Dev)
}
