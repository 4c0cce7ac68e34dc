package receiver_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"path"
	"strings"
	"testing"

	"github.com/zeebo/blake3"

	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/receiver/kv"
	"github.com/uploadbox/uploadbox/receiver/receipt"
	"github.com/uploadbox/uploadbox/uploader/tus"
	"github.com/uploadbox/uploadbox/wire"
)

// forAlgs runs test once per hash a commit carries: BLAKE3 (an upload
// that announced it) and SHA-256 (a box of an older release).
func forAlgs(t *testing.T, test func(t *testing.T, alg wire.HashAlg)) {
	for _, alg := range []wire.HashAlg{wire.HashBLAKE3, wire.HashSHA256} {
		t.Run(string(alg), func(t *testing.T) { test(t, alg) })
	}
}

// hashOf is data's hash of kind alg, computed here.
func hashOf(alg wire.HashAlg, data []byte) [32]byte {
	if alg == wire.HashBLAKE3 {
		return blake3.Sum256(data)
	}
	return sha256.Sum256(data)
}

// uploadAs uploads data to the receiver at addr with a raw tus client,
// announcing the BLAKE3 segment hash if alg is it (else as a box of an
// older release, announcing nothing), and returns the upload's URL and
// the commit request that goes with it.
func uploadAs(t *testing.T, h *harness, addr string, data []byte, alg wire.HashAlg) (string, receiver.CommitRequest) {
	t.Helper()
	u := *h.box.Receiver
	u.Host = addr
	c := tus.NewClient(h.box.HTTPClient(), u.JoinPath("/v1/uploads/"), tus.Options{})
	meta := map[string]string{"filename": "seg.ubx"}
	if alg == wire.HashBLAKE3 {
		meta[wire.HashMetadata] = string(wire.HashBLAKE3)
	}
	id, err := c.Create(t.Context(), int64(len(data)), meta)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Upload(t.Context(), id, bytes.NewReader(data), int64(len(data)), nil); err != nil {
		t.Fatal(err)
	}
	return id, wire.NewCommitRequest(path.Base(id), int64(len(data)), alg, hashOf(alg, data))
}

// TestCommitHashAnnounced: an upload announced with hash=blake3 commits
// with its BLAKE3 segment hash and gets a v2 receipt; one that announced
// nothing (a box of an older release) commits with SHA-256 and gets v1.
// The receiver keeps the hash of that kind only, answers a repeated
// commit with the same receipt, and refuses, with a 400 naming the field,
// a commit carrying the other kind, or both; a hash that is not the
// upload's is the mismatch refusal (409), and the upload is removed.
func TestCommitHashAnnounced(t *testing.T) {
	forAlgs(t, testCommitHashAnnounced)
}

func testCommitHashAnnounced(t *testing.T, alg wire.HashAlg) {
	h := start(t)
	client := h.box.HTTPClient()
	other := wire.HashSHA256
	if alg == wire.HashSHA256 {
		other = wire.HashBLAKE3
	}
	rec := [16]byte{0xb3, 1}
	seg := h.segment(t, 0, [32]byte{}, rec)
	_, good := uploadAs(t, h, h.addr, seg, alg)
	_, otherReq := uploadAs(t, h, h.addr, seg, other)
	wrongKind := otherReq
	wrongKind.UploadID = good.UploadID
	both := good
	both.SHA256, both.BLAKE3 = strings.Repeat("ab", 32), strings.Repeat("ab", 32)

	refusals := []struct {
		name, field string
		req         receiver.CommitRequest
		code        int
		reason      string
	}{
		{"the other hash", string(alg), wrongKind, http.StatusBadRequest, receiver.ReasonBadRequest},
		{"both hashes", "both", both, http.StatusBadRequest, receiver.ReasonBadRequest},
		{"short blake3", "blake3", receiver.CommitRequest{UploadID: good.UploadID, Size: good.Size, BLAKE3: "abcd"}, http.StatusBadRequest, receiver.ReasonBadRequest},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			code, _, body := h.commit(t, client, tc.req)
			var ref receiver.Refusal
			if code != tc.code || json.Unmarshal([]byte(body), &ref) != nil || ref.Reason != tc.reason || !strings.Contains(ref.Error, tc.field) {
				t.Fatalf("HTTP %d (%s), want %d with reason %s naming %s", code, body, tc.code, tc.reason, tc.field)
			}
			if files := h.stored(t); len(files) != 0 {
				t.Fatalf("a refused commit stored %v", files)
			}
		})
	}

	code, first, body := h.commit(t, client, good)
	if code != http.StatusOK {
		t.Fatalf("commit: HTTP %d %s", code, body)
	}
	rb := mustB64(t, first.Receipt)
	if _, err := receipt.Verify(h.box.ReceiptKey, rb, other); err == nil {
		t.Fatalf("a receipt for a %s commit verifies as %s", alg, other)
	}
	r, err := receipt.Verify(h.box.ReceiptKey, rb, alg)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Matches(ed25519.PublicKey(h.box.Device.Public().Bytes()), rec, 0, alg, hashOf(alg, seg), int64(len(seg))); err != nil {
		t.Fatal(err)
	}
	code, again, _ := h.commit(t, client, good)
	if code != http.StatusOK || again.Receipt != first.Receipt || !again.Repeated {
		t.Fatalf("repeated commit: HTTP %d %+v", code, again)
	}
	// The repeated commit, once the upload is gone, still wants its kind.
	if code, _, body := h.commit(t, client, wrongKind); code != http.StatusBadRequest || !strings.Contains(body, string(alg)) {
		t.Fatalf("repeated commit with the other hash: HTTP %d %s, want 400 naming %s", code, body, alg)
	}

	// The other kind's upload of the same segment: the same bytes, but no
	// hash to compare with the stored one's; refused as other bytes.
	if code, _, body := h.commit(t, client, otherReq); code != http.StatusConflict {
		t.Fatalf("the same segment committed with %s after %s: HTTP %d %s, want 409", other, alg, code, body)
	}

	// A hash that is not the upload's: the mismatch refusal, the upload removed.
	seg1 := h.segment(t, 0, [32]byte{}, [16]byte{0xb3, 2})
	_, bad := uploadAs(t, h, h.addr, seg1, alg)
	bad.SHA256, bad.BLAKE3 = strings.Repeat("0", len(bad.SHA256)), strings.Repeat("0", len(bad.BLAKE3))
	if code, _, body := h.commit(t, client, bad); code != http.StatusConflict || !strings.Contains(body, receiver.ReasonMismatch) {
		t.Fatalf("wrong %s: HTTP %d %s, want 409 %s", alg, code, body, receiver.ReasonMismatch)
	}
	if files := h.stored(t); len(files) != 1 {
		t.Fatalf("store holds %v after a mismatch", files)
	}

	// The record keeps the hash of the commit's kind only.
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	db := h.state(t)
	defer db.Close()
	var sr receiver.SegmentRecord
	err = db.View(func(tx kv.Tx) error {
		return json.Unmarshal(tx.Bucket([]byte("segments")).Get([]byte(first.Key)), &sr)
	})
	if err != nil {
		t.Fatal(err)
	}
	sum := hashOf(alg, seg)
	want := receiver.SegmentRecord{SHA256: hex.EncodeToString(sum[:])}
	if alg == wire.HashBLAKE3 {
		want = receiver.SegmentRecord{BLAKE3: want.SHA256}
	}
	if sr.BLAKE3 != want.BLAKE3 || sr.SHA256 != want.SHA256 {
		t.Fatalf("record of a %s commit: blake3 %q, sha256 %q; want %q, %q", alg, sr.BLAKE3, sr.SHA256, want.BLAKE3, want.SHA256)
	}
}
