package uploader_test

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zeebo/blake3"
	"go.etcd.io/bbolt"

	"github.com/uploadbox/uploadbox/uploader"
	"github.com/uploadbox/uploadbox/uploader/spool"
	"github.com/uploadbox/uploadbox/wire"
)

// TestOlderRecordDrains: a box upgraded with a queue has a spool record
// an older release wrote, with the segment's SHA-256 and no segment hash.
// Against the real receiver, that segment is uploaded without announcing
// the segment hash, committed with sha256 and wiped on a v1 receipt; the
// segment sealed by this release is announced, committed with blake3 and
// wiped on a v2 receipt.
func TestOlderRecordDrains(t *testing.T) {
	r := newRig(t)
	dir := t.TempDir()
	names := r.sealInto(t, dir, 2)
	sp, err := spool.Open(dir, spool.Options{Device: r.st.Device.Public()})
	if err != nil {
		t.Fatal(err)
	}
	sp.Close()
	old, err := os.ReadFile(filepath.Join(dir, names[0]))
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := os.ReadFile(filepath.Join(dir, names[1]))
	if err != nil {
		t.Fatal(err)
	}
	// The record as an older release wrote it: SHA256, no BLAKE3.
	db, err := bbolt.Open(filepath.Join(dir, spool.IndexFile), 0o600, &bbolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bbolt.Tx) error {
		b := tx.Bucket([]byte("segments"))
		var rec map[string]any
		if err := json.Unmarshal(b.Get([]byte(names[0])), &rec); err != nil {
			return err
		}
		if rec["BLAKE3"] == nil {
			t.Errorf("the record this release wrote has no BLAKE3: %v", rec)
		}
		sum := sha256.Sum256(old)
		delete(rec, "BLAKE3")
		rec["SHA256"] = hex.EncodeToString(sum[:])
		v, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		return b.Put([]byte(names[0]), v)
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	sp, err = spool.Open(dir, spool.Options{Device: r.st.Device.Public()})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()

	var mu sync.Mutex
	// Per upload created, by its segment's name: the next segment's upload
	// may be created while the first is sent, so the order is not fixed.
	announced := map[string][]bool{}
	r.tus = func(w http.ResponseWriter, req *http.Request, forward http.Handler) bool {
		if req.Method == http.MethodPost {
			meta := req.Header.Get("Upload-Metadata")
			mu.Lock()
			for _, n := range names {
				if strings.Contains(meta, "filename "+base64.StdEncoding.EncodeToString([]byte(n))) {
					announced[n] = append(announced[n], strings.Contains(meta, wire.HashMetadata+" "+base64.StdEncoding.EncodeToString([]byte(wire.HashBLAKE3))))
				}
			}
			mu.Unlock()
		}
		return false
	}
	sum, err := uploader.New(r.st, sp, nil).Drain(t.Context(), nil, nil)
	if err != nil || sum.Segments != 2 {
		t.Fatalf("drain: %+v, %v", sum, err)
	}
	oldSum, freshSum := sha256.Sum256(old), blake3.Sum256(fresh)
	if want := []string{hex.EncodeToString(oldSum[:]), hex.EncodeToString(freshSum[:])}; strings.Join(r.committed, " ") != strings.Join(want, " ") {
		t.Fatalf("commits carried %v, want the older record's SHA-256 then the segment hash %v", r.committed, want)
	}
	mu.Lock()
	defer mu.Unlock()
	if a, b := announced[names[0]], announced[names[1]]; len(a) != 1 || a[0] || len(b) != 1 || !b[0] {
		t.Fatalf("uploads announced the segment hash: %v, want one upload each, the second segment's only", announced)
	}
	for i, alg := range []wire.HashAlg{wire.HashSHA256, wire.HashBLAKE3} {
		rec, err := sp.Get(names[i])
		if err != nil {
			t.Fatal(err)
		}
		if rec.State != spool.Wiped {
			t.Fatalf("%s: %s, want wiped", names[i], rec.State)
		}
		if _, err := wire.VerifyReceipt(r.st.ReceiptKey, rec.Receipt, alg); err != nil {
			t.Fatalf("%s: the stored receipt is not a %s receipt: %v", names[i], alg, err)
		}
	}
}
