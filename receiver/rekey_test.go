package receiver_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/uploadbox/uploadbox/crypto"
	"github.com/uploadbox/uploadbox/internal/audit"
	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/receiver/devices"
	"github.com/uploadbox/uploadbox/receiver/receipt"
	"github.com/uploadbox/uploadbox/uploader"
	"github.com/uploadbox/uploadbox/uploader/tus"
	"github.com/uploadbox/uploadbox/wire"
)

// sealBy seals a small real segment with st's device key.
func sealBy(t *testing.T, st *uploader.State, rec [16]byte) []byte {
	t.Helper()
	return seal(t, st, crypto.Params{RecordingID: rec, Codec: "video/mp4"}, 20_000)
}

// sendAs uploads seg with box's certificate and commits it: the status, the
// refusal reason and, on success, the receipt. A refused connection is
// status 0 with the error as reason.
func (h *harness) sendAs(t *testing.T, box *uploader.State, seg []byte) (int, string, *receipt.Receipt) {
	t.Helper()
	c := tus.NewClient(box.HTTPClient(), box.Receiver.JoinPath("/v1/uploads/"), tus.Options{})
	u, err := c.Create(t.Context(), int64(len(seg)), nil)
	if err != nil {
		return 0, err.Error(), nil
	}
	if err := c.Upload(t.Context(), u, bytes.NewReader(seg), int64(len(seg)), nil); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(seg)
	code, cr, body := h.commit(t, box.HTTPClient(), receiver.CommitRequest{UploadID: path.Base(u), Size: int64(len(seg)), SHA256: hex.EncodeToString(sum[:])})
	if code != http.StatusOK {
		var ref receiver.Refusal
		json.Unmarshal([]byte(body), &ref)
		return code, ref.Reason, nil
	}
	r, err := receipt.Verify(box.ReceiptKey, mustB64(t, cr.Receipt), wire.HashSHA256)
	if err != nil {
		t.Fatal(err)
	}
	return code, "", r
}

func (h *harness) enroll(t *testing.T, nd *receiver.NewDevice) *uploader.State {
	t.Helper()
	st, err := uploader.Enroll(t.Context(), "https://"+h.addr, nd.Token, nd.CAFingerprint, filepath.Join(t.TempDir(), "box"))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestRekeyKeepsEarlierSegments is observation 2 of issue 14: a box that
// gets a new device key under its name still has segments signed by the
// old one queued; they must be accepted (they were refused as "signed by
// another device" and blocked the queue), unless that key was revoked as
// compromised before they arrived; and a revoked name can be reused after
// devices remove.
func TestRekeyKeepsEarlierSegments(t *testing.T) {
	h := start(t)
	key1 := h.box
	queued1 := sealBy(t, key1, [16]byte{1}) // sealed before the re-key, uploaded after

	nd, err := h.admin.RekeyDevice("room-9")
	if err != nil {
		t.Fatal(err)
	}
	// The old key's certificate stops working at once.
	if code, _, _ := h.sendAs(t, key1, sealBy(t, key1, [16]byte{9})); code == http.StatusOK {
		t.Fatal("the certificate of the replaced key still commits")
	}
	key2 := h.enroll(t, nd)
	code, reason, r := h.sendAs(t, key2, queued1)
	if code != http.StatusOK {
		t.Fatalf("segment signed by the earlier key: HTTP %d %s, want it accepted", code, reason)
	}
	if !r.Device.Equal(ed25519.PublicKey(key1.Device.Public().Bytes())) {
		t.Fatal("the receipt does not name the key that signed the segment")
	}
	if code, reason, _ := h.sendAs(t, key2, sealBy(t, key2, [16]byte{2})); code != http.StatusOK {
		t.Fatalf("segment signed by the new key: HTTP %d %s", code, reason)
	}

	// key2 is compromised: revoked at once; after the next re-key a
	// segment it signed that arrives now is refused for good, key1's are not.
	late2 := sealBy(t, key2, [16]byte{3})
	if err := h.admin.RevokeCompromised("room-9"); err != nil {
		t.Fatal(err)
	}
	if nd, err = h.admin.RekeyDevice("room-9"); err != nil {
		t.Fatal(err)
	}
	key3 := h.enroll(t, nd)
	if code, reason, _ := h.sendAs(t, key3, late2); code != http.StatusForbidden || reason != receiver.ReasonKeyCompromised {
		t.Fatalf("segment of the compromised key arriving after the revocation: HTTP %d %q, want 403 %s", code, reason, receiver.ReasonKeyCompromised)
	}
	if code, reason, _ := h.sendAs(t, key3, sealBy(t, key1, [16]byte{4})); code != http.StatusOK {
		t.Fatalf("segment of the earlier, uncompromised key: HTTP %d %s", code, reason)
	}
	// A key the device held before cannot be enrolled again.
	if nd, err = h.admin.RekeyDevice("room-9"); err != nil {
		t.Fatal(err)
	}
	if _, err := uploader.Enroll(t.Context(), "https://"+h.addr, nd.Token, nd.CAFingerprint, t.TempDir()); err != nil {
		t.Fatal(err) // a fresh key is fine
	}

	// remove frees the name; the removed device's keys are not the new
	// device's.
	if err := h.admin.RemoveDevice("room-9"); !errors.Is(err, devices.ErrActive) && (err == nil || !strings.Contains(err.Error(), "revoke it first")) {
		t.Fatalf("remove of an active device: %v, want it refused", err)
	}
	if err := h.admin.RevokeDevice("room-9"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.admin.AddDevice("room-9"); !errors.Is(err, devices.ErrExists) {
		t.Fatalf("add of a revoked name before remove: %v, want ErrExists", err)
	}
	if err := h.admin.RemoveDevice("room-9"); err != nil {
		t.Fatal(err)
	}
	if nd, err = h.admin.AddDevice("room-9"); err != nil {
		t.Fatalf("the name of a removed device: %v", err)
	}
	fresh := h.enroll(t, nd)
	if code, reason, _ := h.sendAs(t, fresh, sealBy(t, key1, [16]byte{5})); code != http.StatusForbidden || reason != receiver.ReasonForeignKey {
		t.Fatalf("segment of the removed device's key: HTTP %d %q, want 403 %s", code, reason, receiver.ReasonForeignKey)
	}
}

// TestAuditCheckAcrossRekey: the checkpoint a box sent before it was
// re-keyed (signed by its earlier key) still checks its audit log; one
// signed by a key revoked as compromised does not.
func TestAuditCheckAcrossRekey(t *testing.T) {
	h := start(t)
	log, err := audit.Open(filepath.Join(t.TempDir(), "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	checkpoint := func(box *uploader.State) {
		t.Helper()
		if _, err := log.Append(audit.Entry{Event: "daemon.start", Outcome: "ok"}); err != nil {
			t.Fatal(err)
		}
		c, _, err := log.Checkpoint(box.Device.Signer())
		if err != nil {
			t.Fatal(err)
		}
		if err := uploader.New(box, nil, nil).SendCheckpoint(t.Context(), c); err != nil {
			t.Fatal(err)
		}
	}
	checkpoint(h.box)
	nd, err := h.admin.RekeyDevice("room-9")
	if err != nil {
		t.Fatal(err)
	}
	key2 := h.enroll(t, nd)
	if res, err := receiver.CheckDeviceAudit(h.data, h.database, "room-9", log.Path()); err != nil || !res.OK {
		t.Fatalf("audit-check after the re-key: %+v %v, want OK", res, err)
	}
	checkpoint(key2)
	if err := h.admin.RevokeCompromised("room-9"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.admin.RekeyDevice("room-9"); err != nil {
		t.Fatal(err)
	}
	if res, err := receiver.CheckDeviceAudit(h.data, h.database, "room-9", log.Path()); err == nil {
		t.Fatalf("a checkpoint signed by the compromised key checks the log: %+v", res)
	}
}
