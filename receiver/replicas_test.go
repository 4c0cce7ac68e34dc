package receiver_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uploadbox/uploadbox/receiver"
	"github.com/uploadbox/uploadbox/receiver/internal/kvtest"
	"github.com/uploadbox/uploadbox/receiver/store"
	"github.com/uploadbox/uploadbox/uploader/tus"
)

// TestCommitOnceAcrossReceivers: two receivers on one PostgreSQL database
// (and one store), each given the same segments by the box as separate
// uploads, all committed at once. Each segment is stored once: both
// receivers answer with the same key and the same receipt, exactly one of
// the two commits is the first (the other is a repeat), and the recording
// lists each segment once. No process-local lock is shared: the database's
// unique key and serializable transactions decide.
func TestCommitOnceAcrossReceivers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts PostgreSQL and two receivers; skipped under -short")
	}
	url := kvtest.URL(t)
	objects := t.TempDir()
	stA, err := store.NewFS(objects)
	if err != nil {
		t.Fatal(err)
	}
	h := startWith(t, receiver.ServerConfig{Database: url, Store: stA})
	dataB := replicaData(t, h)
	stB, err := store.NewFS(objects)
	if err != nil {
		t.Fatal(err)
	}
	_, addrB, stopB := serve(t, receiver.ServerConfig{Data: dataB, Listen: "127.0.0.1:0", Database: url, Store: stB})
	defer stopB()

	const n = 6
	type commit struct {
		addr string
		req  receiver.CommitRequest
	}
	var commits []commit
	rec := [16]byte{0xab, 15}
	t0 := time.Date(2026, 3, 2, 9, 0, 0, 0, time.UTC)
	var prev [32]byte
	for seq := range uint64(n) {
		var seg []byte
		seg, prev = h.sealAt(t, rec, seq, prev, t0.Add(time.Duration(seq)*2*time.Second), 20_000, seq == n-1)
		sum := sha256.Sum256(seg)
		for _, addr := range []string{h.addr, addrB} {
			commits = append(commits, commit{addr, receiver.CommitRequest{
				UploadID: path.Base(uploadTo(t, h, addr, seg)), Size: int64(len(seg)), SHA256: hex.EncodeToString(sum[:])}})
		}
	}

	answers := make([]receiver.CommitResponse, len(commits))
	errs := make([]error, len(commits))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, c := range commits {
		wg.Go(func() {
			<-start
			answers[i], errs[i] = commitAt(h.box.HTTPClient(), c.addr, c.req)
		})
	}
	close(start)
	wg.Wait()
	for i := 0; i < len(commits); i += 2 {
		a, b := answers[i], answers[i+1]
		if errs[i] != nil || errs[i+1] != nil {
			t.Fatalf("segment %d: commits: %v; %v", i/2, errs[i], errs[i+1])
		}
		if a.Key != b.Key || a.Receipt != b.Receipt {
			t.Errorf("segment %d: the receivers answered differently:\n%+v\n%+v", i/2, a, b)
		}
		if a.Repeated == b.Repeated {
			t.Errorf("segment %d: repeated %v and %v, want exactly one first commit", i/2, a.Repeated, b.Repeated)
		}
	}
	rs, err := h.admin.ListRecordings()
	if err != nil || len(rs) != 1 || rs[0].Segments != n || !rs[0].Complete {
		t.Fatalf("recordings: %+v %v; want one complete recording of %d segments", rs, err, n)
	}
}

// replicaData is a data directory for a second receiver on h's database:
// a copy of h's CA and keys (not its audit log).
func replicaData(t *testing.T, h *harness) string {
	t.Helper()
	dataB := filepath.Join(t.TempDir(), "receiver-b")
	if err := os.Mkdir(dataB, 0o700); err != nil {
		t.Fatal(err)
	}
	es, err := os.ReadDir(h.data)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		if e.Type().IsRegular() && !strings.HasPrefix(e.Name(), "audit") {
			b, err := os.ReadFile(filepath.Join(h.data, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dataB, e.Name()), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dataB
}

// uploadTo uploads data to the receiver at addr with the box's client.
func uploadTo(t *testing.T, h *harness, addr string, data []byte) string {
	t.Helper()
	u := *h.box.Receiver
	u.Host = addr
	c := tus.NewClient(h.box.HTTPClient(), u.JoinPath("/v1/uploads/"), tus.Options{})
	id, err := c.Create(t.Context(), int64(len(data)), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Upload(t.Context(), id, bytes.NewReader(data), int64(len(data)), nil); err != nil {
		t.Fatal(err)
	}
	return id
}

// commitAt commits req on the receiver at addr; anything but 200 is an error.
func commitAt(client *http.Client, addr string, req receiver.CommitRequest) (receiver.CommitResponse, error) {
	var cr receiver.CommitResponse
	body, _ := json.Marshal(req)
	resp, err := client.Post("https://"+addr+"/v1/commit", "application/json", bytes.NewReader(body))
	if err != nil {
		return cr, err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return cr, fmt.Errorf("HTTP %d %s", resp.StatusCode, data)
	}
	return cr, json.Unmarshal(data, &cr)
}
