package e2e

import (
	"errors"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/wire"
)

// TestCommitUsesStreamedHashes: the receiver hashes an upload while its
// bytes arrive, across resumed PATCHes, and its commit then reads nothing:
// the upload's file is renamed into the fs store. A byte changed in the
// middle of a resumed upload is still refused; bytes changed on disk behind
// the hashes' back are seen (the file is no longer as the receiver wrote
// it) and the whole read refuses them; after a receiver restart mid-upload
// the commit reads the upload once, checking its hash and the signature,
// and renames it. The same for a box that announces the BLAKE3 segment
// hash and for one of an older release, which commits with SHA-256.
func TestCommitUsesStreamedHashes(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the receiver binary; skipped under -short")
	}
	for _, alg := range []wire.HashAlg{wire.HashBLAKE3, wire.HashSHA256} {
		t.Run(string(alg), func(t *testing.T) { testCommitUsesStreamedHashes(t, alg) })
	}
}

func testCommitUsesStreamedHashes(t *testing.T, alg wire.HashAlg) {
	data := filepath.Join(t.TempDir(), "receiver")
	rcv := startReceiver(t, data, "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0")
	b := newIngestBox(t, rcv, "room-1")
	b.alg = alg
	counts := func() (streamed, reread, read float64) {
		return metricValue(t, rcv.metricsAddr, "uploadbox_receiver_commits_streamed_total"),
			metricValue(t, rcv.metricsAddr, "uploadbox_receiver_commits_reread_total"),
			metricValue(t, rcv.metricsAddr, "uploadbox_receiver_upload_read_bytes_total")
	}
	// upload sends seg in three PATCHes (resumed at the server's offset)
	// and returns the upload id; between runs between the first two.
	upload := func(seg []byte, between func(id string)) string {
		id := b.create(t, len(seg))
		cuts := []int{0, len(seg) / 3, len(seg) - 30, len(seg)}
		for i := 1; i < len(cuts); i++ {
			if r := b.patch(t, id, cuts[i-1], seg[cuts[i-1]:cuts[i]]); r.code != http.StatusNoContent {
				t.Fatalf("PATCH at %d: HTTP %d %s", cuts[i-1], r.code, r.body)
			}
			if i == 1 && between != nil {
				between(id)
			}
		}
		return id
	}

	// Where commits adopt uploads, no hash state is saved after a PATCH.
	noState := func(id string) {
		if _, err := os.Stat(filepath.Join(data, "uploads", id+".hash")); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("a hash state was saved: %v", err)
		}
	}
	seg := b.seal(t, 1<<20)
	id := upload(seg, noState)
	// A commit with the other kind of hash than the upload announced is
	// refused, naming the field to send, and the upload is kept.
	other := b
	other.alg = wire.HashBLAKE3
	if alg == wire.HashBLAKE3 {
		other.alg = wire.HashSHA256
	}
	if r, ref := other.commit(t, id, seg); r.code != http.StatusBadRequest || ref.Reason != receiver.ReasonBadRequest || !strings.Contains(ref.Error, "send "+string(alg)) {
		t.Fatalf("commit with %s for an upload that announced %s: HTTP %d %+v, want 400 naming %s", other.alg, alg, r.code, ref, alg)
	}
	r, ref := b.commit(t, id, seg)
	if r.code != http.StatusOK {
		t.Fatalf("commit: HTTP %d %+v", r.code, ref)
	}
	b.checkStored(t, rcv, r, seg)
	if s, rr, n := counts(); s != 1 || rr != 0 || n != 0 {
		t.Fatalf("streamed %v, reread %v commits, %v bytes read back; want 1, 0 and 0 (renamed into the store unread)", s, rr, n)
	}

	// A byte changed in the middle, as sent: the box's own hash matches,
	// the signature does not.
	tampered := b.seal(t, 1<<20)
	tampered[len(tampered)/2] ^= 1
	if r, ref := b.commit(t, upload(tampered, nil), tampered); r.code != http.StatusUnprocessableEntity || ref.Reason != receiver.ReasonCorrupt {
		t.Fatalf("tampered segment: HTTP %d %+v, want 422 corrupt", r.code, ref)
	}

	// A byte changed on disk after it was hashed: the file is not as the
	// receiver wrote it, and the whole read refuses its bytes.
	behind := b.seal(t, 1<<20)
	id = upload(behind, func(id string) {
		f, err := os.OpenFile(filepath.Join(data, "uploads", id), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt([]byte{behind[100] ^ 1}, 100)
		f.Close()
	})
	if r, ref := b.commit(t, id, behind); r.code != http.StatusConflict || ref.Reason != receiver.ReasonMismatch {
		t.Fatalf("upload changed on disk: HTTP %d %+v, want 409 mismatch", r.code, ref)
	}
	if s, rr, _ := counts(); s != 1 || rr != 2 {
		t.Fatalf("streamed %v, reread %v commits; want 1 and 2 (refusals read the upload whole)", s, rr)
	}

	// A restart mid-upload: the hashes of the first bytes are gone with
	// the process (none was saved: a commit without them reads the upload
	// anyway); the commit checks its SHA-256 and the signature in one
	// read, then renames the upload into the store.
	restart := func(string) {
		rcv.kill()
		rcv = startReceiver(t, data, rcv.addr, "--metrics-listen", rcv.metricsAddr)
	}
	again := b.seal(t, 1<<20)
	r, ref = b.commit(t, upload(again, restart), again)
	if r.code != http.StatusOK {
		t.Fatalf("commit after a restart: HTTP %d %+v", r.code, ref)
	}
	b.checkStored(t, rcv, r, again)
	if s, rr, n := counts(); s != 0 || rr != 1 || n != float64(len(again)) {
		t.Fatalf("after the restart: streamed %v, reread %v commits, %v bytes read back; want 0, 1 and %d (one read)", s, rr, n, len(again))
	}
	// The same with a byte changed after the restart: the read finds the
	// segment corrupt (nothing stored), and the whole read refuses it.
	tampered = b.seal(t, 1<<20)
	tampered[len(tampered)-1000] ^= 1
	if r, ref := b.commit(t, upload(tampered, restart), tampered); r.code != http.StatusUnprocessableEntity || ref.Reason != receiver.ReasonCorrupt {
		t.Fatalf("tampered segment after a restart: HTTP %d %+v, want 422 corrupt", r.code, ref)
	}
	if s, rr, _ := counts(); s != 0 || rr != 1 {
		t.Fatalf("streamed %v, reread %v commits; want 0 and 1", s, rr)
	}
	var objects []string
	filepath.WalkDir(filepath.Join(data, receiver.StoreDir), func(p string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			objects = append(objects, p)
		}
		return nil
	})
	if len(objects) != 2 {
		t.Fatalf("store holds %v, want the two good segments only", objects)
	}
}
